"""Config files for every command: TOML or YAML whose keys are the flag names.

Flags given on the command line override the file. Values are data, never code
(``yaml.safe_load``, ``tomllib``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vlmclient import ConfigurationError

__all__ = ["apply_config_file", "load_config_file", "resolved_config"]


def load_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc}") from exc
    try:
        if path.suffix.lower() == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover
                import tomli as tomllib
            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.load(text, Loader=_unique_key_loader()) or {}
        else:
            raise ConfigurationError(f"config file {path} must end in .toml, .yaml or .yml")
    except ConfigurationError:
        raise
    except Exception as exc:  # tomllib.TOMLDecodeError, yaml.YAMLError
        raise ConfigurationError(f"config file {path} does not parse: {_one_line(exc)}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"config file {path} must hold a table/mapping of flag names")
    return data


def _takes_many(action: argparse.Action) -> bool:
    """True for flags that take several values (nargs "+", "*" or a count, or append)."""
    return action.nargs in ("+", "*") or (
        isinstance(action.nargs, int) and action.nargs > 1
    ) or isinstance(action, argparse._AppendAction)


def _one_line(exc: Exception) -> str:
    """A parser's error on one line (YAML's spans several, with a caret under the spot)."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def _unique_key_loader() -> type:
    """``yaml.SafeLoader`` that refuses a key given twice (PyYAML keeps the last one
    silently; TOML refuses): ``budget: 1`` then ``budget: 100`` must not pass unseen."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
            seen: set[object] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice", key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def apply_config_file(parser: argparse.ArgumentParser, data: dict[str, Any], origin: str) -> None:
    """Turn ``{"budget": 5, "teacher": "cohere:embed-v4.0"}`` into parser defaults."""
    options = {}
    for action in parser._actions:
        for flag in action.option_strings:
            if flag.startswith("--"):
                options[flag[2:]] = action
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("_", "-")
        action = options.get(name)
        if action is None or name in ("config", "help"):
            known = ", ".join(sorted(k for k in options if k not in ("config", "help")))
            raise ConfigurationError(
                f"{origin}: unknown key {key!r}; keys are the flag names: {known}"
            )
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if not isinstance(value, bool):
                raise ConfigurationError(f"{origin}: {key} must be true or false")
            defaults[action.dest] = value
        elif isinstance(value, dict):
            raise ConfigurationError(f"{origin}: {key} takes a value, not a table")
        elif isinstance(value, list):
            if not _takes_many(action):
                raise ConfigurationError(
                    f"{origin}: {key} takes one value, not a list (e.g. {key} = ...)"
                )
            convert = action.type or str
            try:
                defaults[action.dest] = [convert(str(v)) for v in value]  # type: ignore[operator]
            except (ValueError, argparse.ArgumentTypeError) as exc:
                raise ConfigurationError(f"{origin}: bad value for {key}: {exc}") from exc
        else:
            # a string default is parsed by argparse like a command-line value; checked
            # here too, so a bad value in the file is refused even when a flag overrides it
            converted: Any = str(value)
            if action.type is not None and callable(action.type):
                try:
                    converted = action.type(str(value))
                except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
                    raise ConfigurationError(f"{origin}: bad value for {key}: {exc}") from exc
            if action.choices is not None and converted not in action.choices:
                choices = ", ".join(map(str, action.choices))
                raise ConfigurationError(f"{origin}: {key} must be one of {choices}")
            defaults[action.dest] = str(value)
    parser.set_defaults(**defaults)


def resolved_config(args: argparse.Namespace) -> dict[str, Any]:
    """The namespace as JSON-able data (for writing beside outputs)."""
    out: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key in ("func",):
            continue
        out[key] = (
            value if isinstance(value, (bool, int, float, str, list, type(None))) else str(value)
        )
    return out
