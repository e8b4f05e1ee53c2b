"""Config files for every command: TOML or YAML whose keys are the flag names.

Flags given on the command line override the file. Values are data, never code
(``yaml.safe_load``, ``tomllib``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vlmclient.errors import ConfigurationError

__all__ = ["CommandParser", "apply_config_file", "load_config_file"]


def load_config_file(path: Path) -> dict[str, Any]:
    """The mapping in a ``.toml``, ``.yaml`` or ``.yml`` file; ConfigurationError if none."""
    try:
        # "utf-8-sig": a file saved "UTF-8 with BOM" (Windows Notepad) is read too; TOML
        # refused the BOM as "Invalid statement (at line 1, column 1)"
        text = path.read_text(encoding="utf-8-sig")
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
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
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


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that keeps a list of its ``--options``.

    argparse keeps its own list private (``parser._actions``); a config file needs it to
    refuse unknown keys and to convert values, so every ``add_argument`` (on the parser or
    on one of its argument groups) is recorded here, through public API only.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # before super().__init__, which adds --help through add_argument
        self.options: dict[str, _Option] = {}
        self.subcommands: dict[str, CommandParser] = {}
        """The parsers of this command's own actions (``cache stats``), by name."""
        super().__init__(*args, **kwargs)

    def add_subparsers(self, **kwargs: Any) -> Any:
        action = super().add_subparsers(**kwargs)
        self.subcommands = action.choices  # filled as each action's parser is added
        return action

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self._remember(action, kwargs)
        return action

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        return self._recording(super().add_argument_group(*args, **kwargs))

    def add_mutually_exclusive_group(self, *args: Any, **kwargs: Any) -> Any:
        return self._recording(super().add_mutually_exclusive_group(*args, **kwargs))

    def _recording(self, group: Any) -> Any:
        """``group`` with an ``add_argument`` that is recorded here too (a group adds its
        actions to the parser without calling the parser's ``add_argument``)."""
        add = group.add_argument

        def add_argument(*a: Any, **kw: Any) -> argparse.Action:
            action: argparse.Action = add(*a, **kw)
            self._remember(action, kw)
            return action

        group.add_argument = add_argument
        return group

    def _remember(self, action: argparse.Action, kwargs: dict[str, Any]) -> None:
        many = kwargs.get("action") in ("append", "extend") or action.nargs in ("+", "*") or (
            isinstance(action.nargs, int) and action.nargs > 1
        )
        for flag in action.option_strings:
            if flag.startswith("--"):
                self.options[flag[2:]] = _Option(action, many)


class _Option:
    """One ``--flag``: its action and whether it takes several values."""

    def __init__(self, action: argparse.Action, many: bool) -> None:
        self.action = action
        self.many = many


def apply_config_file(parser: CommandParser, data: dict[str, Any], origin: str) -> None:
    """Turn ``{"budget": 5, "teacher": "cohere:embed-v4.0"}`` into parser defaults.

    A value is checked as its flag would check it, so a bad value in the file is refused
    even when the command line overrides it.
    """
    options = {k: v for k, v in parser.options.items() if k not in ("config", "help")}
    defaults: dict[str, Any] = {}
    given: dict[str, object] = {}  # dest -> the key that set it
    for key, value in data.items():
        name = str(key).replace("_", "-")
        option = options.get(name)
        if option is None:
            known = ", ".join(sorted(options))
            raise ConfigurationError(
                f"{origin}: unknown key {key!r}; keys are the flag names: {known}"
            )
        action = option.action
        if action.dest in given:
            # two keys TOML (or YAML) sees as different: the last one would win unseen
            raise ConfigurationError(
                f"{origin}: {given[action.dest]!r} and {key!r} set the same flag "
                f"({action.option_strings[0]}); give it once"
            )
        given[action.dest] = key
        if isinstance(action, argparse.BooleanOptionalAction) or action.nargs == 0:
            if not isinstance(value, bool):
                raise ConfigurationError(f"{origin}: {key} must be true or false")
            defaults[action.dest] = _flag_value(action, name, value)
        elif isinstance(value, dict):
            raise ConfigurationError(f"{origin}: {key} takes a value, not a table")
        elif option.many:
            values = value if isinstance(value, list) else [value]
            if not values and action.nargs == "+":  # as argparse refuses the bare flag
                raise ConfigurationError(f"{origin}: {key} takes at least one value, not []")
            if any(isinstance(v, (list, dict)) for v in values):
                # checked before str(): YAML aliases nest a few bytes into millions
                raise ConfigurationError(
                    f"{origin}: {key} takes a list of plain values, not a list of lists "
                    "or tables"
                )
            defaults[action.dest] = [_converted(action, key, v, origin) for v in values]
        elif isinstance(value, list):
            raise ConfigurationError(
                f"{origin}: {key} takes one value, not a list (e.g. {key} = ...)"
            )
        else:
            # checked here, so a bad value in the file is refused even when a flag
            # overrides it; the string default is then parsed by argparse like a
            # command-line value
            _converted(action, key, value, origin)
            defaults[action.dest] = str(value)
        action.required = False  # a required flag (``cache stats --cache``): given here
    parser.set_defaults(**defaults)


def _flag_value(action: argparse.Action, name: str, value: bool) -> Any:
    """What ``key = true/false`` means for a flag that takes no value."""
    if isinstance(action, argparse.BooleanOptionalAction):
        return value if "--" + name == action.option_strings[0] else not value
    if isinstance(action.const, bool):  # store_true / store_false
        return action.const if value else not action.const
    raise ConfigurationError(f"--{name} cannot be set in a config file")


def _converted(action: argparse.Action, key: object, value: object, origin: str) -> Any:
    """``value`` converted and checked as argparse would convert the flag's argument."""
    converted: Any = str(value)
    if action.type is not None and callable(action.type):
        try:
            converted = action.type(str(value))
        except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
            raise ConfigurationError(f"{origin}: bad value for {key}: {exc}") from exc
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigurationError(f"{origin}: {key} must be one of {choices}")
    return converted
