"""The shape of the code: dependencies point one way (cache <- vlmclient <- distill),
vlmclient never pays for torch, error classes are cheap to import, no import cycles, no
private reaching across modules, and each package's ``__all__`` is what others use.

The rules these tests hold the code to (read from the source with ``ast``; imports inside
functions count, imports under ``if TYPE_CHECKING:`` do not):

- **No import cycle** between modules of cache, vlmclient and distill. A module imports
  another when it names it (``import a.b``, ``from a.b import x``, ``from a import b``);
  the parent packages Python runs on the way do not count.
- **Private means private.** A ``_name`` a module binds is that module's alone: no other
  module (nor a benchmark or example) imports it or reads it as ``module._name``. A
  ``_module`` belongs to its package: only modules of that package import from it
  (``distill.cli._common`` is for ``distill.cli.*``). What two modules share gets a
  public name. (A private method called on an object of another module's class cannot be
  seen without types; review catches those.)
- **``__all__`` says what others use.** Every package declares ``__all__``. A name
  imported from a module of another package (``distill.harvest`` taking ``view_bytes``
  from ``distill.data.views``; a benchmark or example taking anything) is in that module's
  ``__all__``. cache and vlmclient are libraries: a name anything outside them imports
  (``from cache.store import EmbeddingStore`` in distill) is also in the package's own
  ``__all__``, which lists exactly the names the package gives (loaded on first use), as
  httpx's tests/test_exported_members.py holds httpx to. distill is the application: its
  package ``__all__`` is empty and its modules are imported by name.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests import import_graph as graph

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("httpx", "tenacity", "pydantic", "diskcache", "torch")
LIBRARIES = ("cache", "vlmclient")  # curated package __all__; distill is the application


def fresh_modules(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_vlmclient_does_not_import_torch() -> None:
    mods = fresh_modules("import vlmclient, vlmclient.client")
    assert "torch" not in mods and "timm" not in mods
    assert not any(m == "distill" or m.startswith("distill.") for m in mods)


def test_cache_imports_nothing_of_ours() -> None:
    mods = fresh_modules("import cache, cache.layout, cache.store, cache.response_cache")
    assert not any(m.split(".")[0] in {"vlmclient", "distill"} for m in mods)
    assert "torch" not in mods


def test_cli_help_does_not_import_torch() -> None:
    mods = fresh_modules("import distill.cli; distill.cli.build_parser()")
    assert "torch" not in mods


@pytest.mark.parametrize(
    "code",
    [
        "import vlmclient.errors",
        "from vlmclient import ConfigurationError, VLMError",
        "import distill.data",
        "from cache import CacheDir, CacheLayoutError",
    ],
)
def test_error_classes_and_data_scanning_are_cheap_to_import(code: str) -> None:
    """Getting an error class (or scanning a folder) must not load the HTTP client stack,
    pydantic or diskcache: the packages' __init__ load their names on first use."""
    mods = fresh_modules(code)
    assert not [m for m in HEAVY if m in mods], code


def test_the_client_still_loads_on_first_use() -> None:
    mods = fresh_modules("import vlmclient; vlmclient.TeacherClient")
    assert {"httpx", "vlmclient.client"} <= mods


# ---------------------------------------------------------------------------- import rules


def test_no_import_cycle() -> None:
    loops = [" -> ".join(graph.cycle_path(c)) for c in graph.cycles()]
    assert not loops, "import cycles:\n" + "\n".join(loops)


def test_no_private_name_is_imported_from_another_module() -> None:
    found = [
        f"{imp.where()} imports {imp.name} from {imp.source}"
        for imp in graph.imports() + graph.script_imports()
        if imp.name is not None and graph.is_private(imp.name) and imp.source != imp.importer
    ]
    found += [
        f"{importer}:{line} reads {module}.{attr}"
        for importer, line, module, attr in graph.private_attribute_uses()
        if module != importer
    ]
    assert not found, "\n".join(found)


def test_private_modules_are_imported_only_inside_their_package() -> None:
    found = []
    for imp in graph.imports() + graph.script_imports():
        home = graph.private_module(imp.source)
        if home is not None and not (imp.importer == home or imp.importer.startswith(home + ".")):
            found.append(f"{imp.where()} imports {imp.source} (private to {home})")
    assert not found, "\n".join(found)


def test_every_imported_name_exists() -> None:
    """A name imported from one of our modules is bound there (or by its lazy table): a
    module moved without its importers fails here, not when that code path first runs."""
    missing = []
    for imp in graph.imports() + graph.script_imports():
        if imp.source not in graph.modules():
            missing.append(f"{imp.where()} imports missing module {imp.source}")
        elif imp.name is not None and imp.name not in graph.defined_names(imp.source):
            missing.append(f"{imp.where()} imports {imp.name} from {imp.source}: not there")
    assert not missing, "\n".join(missing)


# ---------------------------------------------------------------------------- exports


def test_every_package_declares_all() -> None:
    lacking = [m for m in graph.modules() if graph.is_package(m) and graph.declared_all(m) is None]
    assert not lacking


def test_what_other_packages_import_is_in_all() -> None:
    """``__all__`` of each module covers what other packages (benchmarks and examples
    included) take from it, and the libraries' package ``__all__`` covers what anything
    outside them takes."""
    unlisted = set()
    for imp in graph.imports() + graph.script_imports():
        if imp.name is None or graph.parent(imp.source) == _package_of(imp.importer):
            continue
        if imp.name not in (graph.declared_all(imp.source) or ()):
            unlisted.add(f"{imp.source}.__all__ lacks {imp.name} (imported by {imp.importer})")
        top = graph.top(imp.source)
        outside = graph.top(imp.importer) != top
        if top in LIBRARIES and outside and imp.name not in (graph.declared_all(top) or ()):
            unlisted.add(f"{top}.__all__ lacks {imp.name} (imported by {imp.importer})")
    assert not unlisted, "\n".join(sorted(unlisted))


def _package_of(importer: str) -> str | None:
    return graph.parent(importer) if importer in graph.modules() else None  # a script: none


@pytest.mark.parametrize("package", ["cache", "vlmclient"])
def test_lazy_package_exports_exactly_its_all(package: str) -> None:
    """httpx's test_exported_members, for a package whose names load on first use: the lazy
    table, the typed imports and ``__all__`` name the same things, and each one loads."""
    module = importlib.import_module(package)
    sources = vars(module)["_SOURCES"]
    assert list(module.__all__) == sorted(module.__all__, key=_ruff_order)
    assert set(module.__all__) == set(sources)
    typed = _type_checking_imports(graph.modules()[package])
    assert typed == {name: f"{package}.{where}" for name, where in sources.items()}
    for name in module.__all__:
        value = getattr(module, name)
        origin = importlib.import_module(f"{package}.{sources[name]}")
        assert value is getattr(origin, name)
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        module.nothing_here  # noqa: B018


def _ruff_order(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: SCREAMING_CASE, then CamelCase, then the rest."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def _type_checking_imports(path: Path) -> dict[str, str]:
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.level == 1
                package = graph.module_name(path)
                for alias in stmt.names:
                    found[alias.asname or alias.name] = f"{package}.{stmt.module}"
    return found
