"""Command-line flags generated from a pydantic model: one declaration of every option.

Each field of the model becomes ``--field-name``: help from the field's description, type
from its annotation, choices from a ``Literal``, ``--x/--no-x`` for a bool, one or more
values for a ``tuple[str, ...]``. The argparse default of every generated flag is ``None``,
meaning "not given" (as in timm's ``train.py``), so the model's own default applies, a
``--config`` file can set the flag, and ``--help`` shows the model's default. Range checks
stay in the model; the command turns its ``ValidationError`` into one line (exit 2).

>>> from pydantic import BaseModel, Field
>>> class Demo(BaseModel):
...     steps: int = Field(10, ge=0, description="training steps")
...     swad: bool = False
>>> flags = ModelFlags(Demo)
>>> parser = argparse.ArgumentParser()
>>> flags.add_to(parser)
>>> flags.values(parser.parse_args(["--steps", "3"]))
{'steps': 3}
>>> Demo(**flags.values(parser.parse_args(["--swad"])))
Demo(steps=10, swad=True)
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Callable, Collection, Mapping
from types import UnionType
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

__all__ = ["ModelFlags", "validation_message"]


class _Container(Protocol):
    """An ``ArgumentParser`` or one of its argument groups."""

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action: ...


class ModelFlags:
    """The flags of one pydantic model's fields.

    ``flags`` renames a field's flag (``{"lam": "--lambda"}``); ``types`` replaces the
    converter argparse uses for a field (for a check argparse should make, with its own
    message); ``positional`` fields are positional arguments (``data`` -> ``DATA``);
    ``flagless`` maps each field that has no flag to the reason why.
    """

    def __init__(
        self,
        model: type[BaseModel],
        *,
        flags: Mapping[str, str] | None = None,
        types: Mapping[str, Callable[[str], Any]] | None = None,
        positional: Collection[str] = (),
        flagless: Mapping[str, str] | None = None,
    ) -> None:
        self.model = model
        self.renamed = dict(flags or {})
        self.types = dict(types or {})
        self.positional = tuple(positional)
        self.flagless = dict(flagless or {})
        unknown = (set(self.renamed) | set(self.types) | set(self.positional)
                   | set(self.flagless)) - set(model.model_fields)  # fmt: skip
        if unknown:
            raise TypeError(f"{model.__name__} has no fields {sorted(unknown)}")
        if not all(isinstance(why, str) and why.strip() for why in self.flagless.values()):
            raise TypeError("every flagless field needs its reason written down")

    def fields(self) -> dict[str, FieldInfo]:
        """The fields that get a flag (or a positional argument), in the model's order."""
        return {n: f for n, f in self.model.model_fields.items() if n not in self.flagless}

    def flag(self, name: str) -> str:
        """The flag of field ``name`` (``--steps-align``), or its metavar when positional."""
        if name in self.positional:
            return name.upper()
        return self.renamed.get(name, "--" + name.replace("_", "-"))

    def add_to(self, parser: _Container) -> None:
        """Add one flag per field (not ``flagless``) to ``parser`` or an argument group."""
        for name, info in self.fields().items():
            kwargs = self._kwargs(name, info)
            if name in self.positional:
                parser.add_argument(name, metavar=name.upper(), **kwargs)
            else:
                parser.add_argument(self.flag(name), dest=name, default=None, **kwargs)

    def values(self, args: argparse.Namespace) -> dict[str, Any]:
        """The fields given (on the command line or in a config file): ``None`` is "unset"."""
        out: dict[str, Any] = {}
        for name in self.fields():
            value = getattr(args, name, None)
            if value is None:
                continue
            if isinstance(value, list):  # tuple[str, ...]: "a,b c" means ("a", "b", "c")
                value = tuple(part for v in value for part in str(v).split(",") if part)
            out[name] = value
        return out

    def missing(self, args: argparse.Namespace) -> list[str]:
        """Flags of required fields (no default) that were not given."""
        given = self.values(args)
        return [self.flag(n) for n, f in self.fields().items()
                if f.is_required() and n not in given]  # fmt: skip

    def _kwargs(self, name: str, info: FieldInfo) -> dict[str, Any]:
        annotation = _without_none(info.annotation)
        kwargs: dict[str, Any] = {}
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(annotation) is Literal:
            choices = typing.get_args(annotation)
            kwargs.update(choices=choices, type=type(choices[0]))
        elif typing.get_origin(annotation) is tuple:
            item, *rest = typing.get_args(annotation)
            if rest != [Ellipsis] or item is not str:
                raise TypeError(f"{name}: only tuple[str, ...] becomes a flag, not {annotation}")
            kwargs.update(nargs="+", type=str)
        elif annotation in (int, float, str) or name in self.types:
            kwargs["type"] = annotation
        else:
            raise TypeError(
                f"{self.model.__name__}.{name}: no flag for {annotation!r}; give a converter "
                "in types= or list the field in flagless= with the reason"
            )
        if name in self.types:
            kwargs["type"] = self.types[name]
        kwargs["help"] = _help(info, self.flag(name), annotation is bool)
        return kwargs


def _without_none(annotation: Any) -> Any:
    """``X | None`` -> ``X`` (``None`` is what "not given" means already)."""
    if typing.get_origin(annotation) in (typing.Union, UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _help(info: FieldInfo, flag: str, is_bool: bool) -> str:
    text = (info.description or "").replace("%", "%%")  # argparse %-formats help strings
    if info.is_required():
        note = "" if flag.isupper() else "required"  # a positional argument says it itself
    elif info.default is None:
        note = ""
    elif is_bool:
        note = f"default: {flag if info.default else '--no-' + flag[2:]}"
    elif isinstance(info.default, tuple):
        note = "default: " + " ".join(map(str, info.default))
    else:
        note = f"default: {info.default}"
    if note:
        text = f"{text} ({note})" if text else note
    return text


def validation_message(exc: ValidationError) -> str:
    """A pydantic error on one line: ``lr: Input should be greater than 0; seed: ...``."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors()
    )
