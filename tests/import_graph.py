"""Every import in vlmclient, cache and distill, read from the source with ``ast``.

Imports inside functions count (a lazy import still ties two modules together); imports
under ``if TYPE_CHECKING:`` do not (they never run). Used by tests/test_layout.py.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cache", "vlmclient", "distill")
SCRIPTS = ("benchmarks", "examples")  # import our packages, are imported by nothing


@dataclass(frozen=True)
class Import:
    """``importer`` imports ``name`` (None: the module itself) from module ``source``."""

    importer: str
    source: str
    name: str | None
    line: int

    def where(self) -> str:
        return f"{self.importer}:{self.line}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    """Module name -> source file, for every module of the three packages."""
    return {
        module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))
    }


def is_package(module: str) -> bool:
    return modules()[module].name == "__init__.py"


def top(module: str) -> str:
    return module.split(".")[0]


def parent(module: str) -> str:
    """The package a module belongs to (a package's own ``__init__`` belongs to itself)."""
    return module if is_package(module) else module.rpartition(".")[0]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node that can run, skipping ``if TYPE_CHECKING:`` bodies (not their else)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = parent(importer).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@cache
def imports() -> tuple[Import, ...]:
    """Every runtime import of our modules by our modules, in file order."""
    mods = modules()
    found: list[Import] = []
    for importer, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in _runtime_nodes(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if top(alias.name) in PACKAGES:
                        found.append(Import(importer, alias.name, None, node.lineno))
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(importer, node)
                if top(source) not in PACKAGES:
                    continue
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    if sub in mods:  # `from pkg import module`
                        found.append(Import(importer, sub, None, node.lineno))
                    else:
                        found.append(Import(importer, source, alias.name, node.lineno))
    return tuple(sorted(found, key=lambda i: (i.importer, i.line)))


@cache
def script_imports() -> tuple[Import, ...]:
    """What the scripts of benchmarks/ and examples/ import from our packages; the
    importer is the script's path."""
    mods = modules()
    found = []
    for folder in SCRIPTS:
        for path in sorted((ROOT / folder).glob("*.py")):
            where = path.relative_to(ROOT).as_posix()
            for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    if top(node.module) not in PACKAGES:
                        continue
                    for alias in node.names:
                        sub = f"{node.module}.{alias.name}"
                        name = None if sub in mods else alias.name
                        found.append(Import(where, sub if name is None else node.module, name,
                                            node.lineno))
    return tuple(found)


@cache
def module_aliases() -> dict[str, dict[str, str]]:
    """importer -> {local name: our module it names} (``import a.b as m``, ``from a import b``)."""
    out: dict[str, dict[str, str]] = {}
    mods = modules()
    for importer, path in mods.items():
        names = out.setdefault(importer, {})
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if top(alias.name) in PACKAGES:
                        names[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(importer, node)
                for alias in node.names:
                    if f"{source}.{alias.name}" in mods:
                        names[alias.asname or alias.name] = f"{source}.{alias.name}"
    return out


def private_attribute_uses() -> list[tuple[str, int, str, str]]:
    """(importer, line, module, attribute): ``module._name`` read through a module alias."""
    out = []
    aliases = module_aliases()
    for importer, path in modules().items():
        names = aliases[importer]
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            dotted = _dotted(node.value)
            if dotted is None:
                continue
            head, _, rest = dotted.partition(".")
            if head not in names:
                continue
            target = names[head] + (f".{rest}" if rest else "")
            if target in modules() and is_private(node.attr):
                out.append((importer, node.lineno, target, node.attr))
    return out


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_module(module: str) -> str | None:
    """The outermost ``_private`` part of a dotted module name, as the package it hides in:
    ``distill.cli._common`` -> ``distill.cli``; None when the module is public."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if is_private(part):
            return ".".join(parts[:i])
    return None


def graph() -> dict[str, set[str]]:
    """Module -> the modules it imports (the module a name is taken from, not its parents)."""
    edges: dict[str, set[str]] = {m: set() for m in modules()}
    for imp in imports():
        if imp.source in edges and imp.source != imp.importer:
            edges[imp.importer].add(imp.source)
    return edges


def cycles() -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def cycle_path(component: list[str]) -> list[str]:
    """One concrete loop inside a strongly connected component, for the failure message."""
    edges = graph()
    members = set(component)
    start = component[0]
    # breadth-first back to start
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [*reversed(path), start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return component


def _top_level_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    for node in body:
        yield node
        if isinstance(node, ast.If):
            yield from _top_level_statements(node.body)
            yield from _top_level_statements(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _top_level_statements(block)
            for handler in node.handlers:
                yield from _top_level_statements(handler.body)


@cache
def defined_names(module: str) -> frozenset[str]:
    """Names a module binds at its top level (``if``/``try`` blocks included)."""
    names: set[str] = set()
    tree = ast.parse(modules()[module].read_text())
    for node in _top_level_statements(tree.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name):
                        names.add(sub.id)
    return frozenset(names)


@cache
def declared_all(module: str) -> tuple[str, ...] | None:
    """The literal ``__all__`` of a module, or None when it has none."""
    tree = ast.parse(modules()[module].read_text())
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == "__all__":
            value = node.value
            assert isinstance(value, (ast.List, ast.Tuple)), f"{module}: __all__ is not literal"
            return tuple(ast.literal_eval(value))
    return None
