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

            data = yaml.safe_load(text) or {}
        else:
            raise ConfigurationError(f"config file {path} must end in .toml, .yaml or .yml")
    except ConfigurationError:
        raise
    except Exception as exc:  # tomllib.TOMLDecodeError, yaml.YAMLError
        # One line: YAML's message goes on with a copy of the line and a caret; keep the
        # problem and where it is.
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigurationError(f"config file {path} does not parse: {first}{where}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"config file {path} must hold a table/mapping of flag names")
    return data


def _takes_many(action: argparse.Action) -> bool:
    """True for flags that take several values (nargs "+", "*" or a count, or append)."""
    return action.nargs in ("+", "*") or (
        isinstance(action.nargs, int) and action.nargs > 1
    ) or isinstance(action, argparse._AppendAction)


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
            # a string default is parsed by argparse like a command-line value
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
