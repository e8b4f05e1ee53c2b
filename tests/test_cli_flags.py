"""One declaration of every option: the flags of `train` and `serve-teacher` are generated
from their pydantic models, so every field has a flag (or a written reason not to), a
flag's default is the model's, and a flag or a config key reaches the field it names."""

from __future__ import annotations

import argparse
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from distill.cli import SUBPARSERS, build_parser, main
from distill.cli.config_file import CommandParser, apply_config_file, load_config_file
from distill.cli.model_flags import ModelFlags
from distill.cli.serve_teacher import server_config
from distill.cli.train import build_config
from distill.server.config import Faults, Pricing, ServerConfig
from distill.train.config import TrainConfig
from vlmclient.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[1]

# Fields whose flag is not --field-name (the names these flags had before generation).
TRAIN_RENAMED = {"lam": "--lambda", "student_weights": "--weights"}
TRAIN_POSITIONAL = {"data"}
# Fields deliberately without a flag, with the reason. Empty: every field has one.
TRAIN_FLAGLESS: dict[str, str] = {}

SERVER_RENAMED = {
    "drop": "--drop-fraction",
    "timeout": "--timeout-fraction",
    "malformed": "--malformed-fraction",
    "wrong_dim": "--wrong-dim-fraction",
}
SERVER_FLAGLESS = {
    "token": "a secret: --token-file, $VLM_DISTILL_TEACHER_TOKEN or --token",
    "pricing": "nested model: its fields have flags",
    "faults": "nested model: its fields have flags",
}

REQUIRED = ["--cache", "c", "--teacher", "local:hash", "--out", "run"]


def _flag(name: str, renamed: dict[str, str]) -> str:
    return renamed.get(name, "--" + name.replace("_", "-"))


def _options(command: str) -> dict[str, argparse.Action]:
    build_parser()
    return {k: o.action for k, o in SUBPARSERS[command].options.items()}


def _parse(argv: list[str], config: dict[str, Any] | None = None) -> argparse.Namespace:
    parser = build_parser()
    if config is not None:
        apply_config_file(SUBPARSERS[argv[0]], config, "test.toml")
    return parser.parse_args(argv)


def _default_note(info: Any, flag: str) -> str:
    if isinstance(info.default, bool):
        return f"(default: {flag if info.default else '--no-' + flag[2:]})"
    return f"(default: {info.default})"


# ------------------------------------------------------------------------------ train


def test_every_train_config_field_has_a_flag_or_a_reason() -> None:
    options = _options("train")
    for name in TrainConfig.model_fields:
        if name in TRAIN_FLAGLESS:
            assert TRAIN_FLAGLESS[name].strip()
            continue
        if name in TRAIN_POSITIONAL:
            continue
        flag = _flag(name, TRAIN_RENAMED)
        assert flag[2:] in options, f"TrainConfig.{name} has no {flag}"
        assert options[flag[2:]].dest == name
    # and nothing else: every train flag but --json and -v is a TrainConfig field
    # -v is every command's (it may follow the command name)
    dests = {
        a.dest for k, a in options.items() if k not in ("help", "config", "json", "verbose")
    }
    assert dests == set(TrainConfig.model_fields) - TRAIN_POSITIONAL - set(TRAIN_FLAGLESS)


def test_train_flag_defaults_are_the_models() -> None:
    options = _options("train")
    for name, info in TrainConfig.model_fields.items():
        if name in TRAIN_POSITIONAL or name in TRAIN_FLAGLESS:
            continue
        flag = _flag(name, TRAIN_RENAMED)
        action = options[flag[2:]]
        # argparse's default is "unset", so the model's default applies (and a config file
        # can set the flag); --help shows the model's default
        assert action.default is None, flag
        if info.default is not None and not info.is_required():
            assert _default_note(info, flag) in (action.help or ""), (flag, action.help)
        assert info.description, f"TrainConfig.{name} has no description (its --help)"
    config = build_config(_parse(["train", "DATA", *REQUIRED]))
    assert config == TrainConfig(data="DATA", cache="c", teacher="local:hash", out="run")


def _other_value(name: str, info: Any) -> tuple[list[str], Any]:
    """A value other than the default, as command-line words and as the field's value."""
    ann = info.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    base = args[0] if args and typing.get_origin(ann) is not typing.Literal else ann
    default = info.default
    if base is bool:
        value = not default if default is not None else True
        flag_words: list[str] = [] if value else ["no"]
        return flag_words, value
    if typing.get_origin(base) is typing.Literal:  # also Optional[Literal[...]]
        value = next(c for c in typing.get_args(base) if c != default)
        return [str(value)], value
    if typing.get_origin(base) is tuple:
        return [f"{name}-a,{name}-b", f"{name}-c"], (f"{name}-a", f"{name}-b", f"{name}-c")
    if base is int:
        value = 2 if default is None else default + 1
        return [str(value)], value
    if base is float:
        value = default / 2 if default else 0.5
        return [repr(value)], value
    assert base is str, (name, ann)
    return [f"x-{name}"], f"x-{name}"


def test_every_train_flag_reaches_its_field() -> None:
    argv = ["train", "D"]
    expected: dict[str, Any] = {"data": "D"}
    for name, info in TrainConfig.model_fields.items():
        if name in TRAIN_POSITIONAL:
            continue
        if name == "bn_train_stage":  # refused with a method other than adip: below
            continue
        words, value = _other_value(name, info)
        flag = _flag(name, TRAIN_RENAMED)
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, *words]
        expected[name] = value
    config = build_config(_parse(argv))
    for name, value in expected.items():
        assert getattr(config, name) == value, name
    # --bn-train-stage is ADiP's alone (the method above is another): its flag on its own
    config = build_config(_parse(["train", "D", *REQUIRED, "--bn-train-stage", "distill"]))
    assert config.bn_train_stage == "distill"


def test_train_config_file_sets_every_kind_and_flags_win(tmp_path: Path) -> None:
    cfg = tmp_path / "train.toml"
    cfg.write_text(
        'teacher = "local:hash"\nout = "run"\ncache = "c"\nsteps_align = 7\n'
        "freeze_bn = false\nno_pretrained = true\nswad = true\nlambda = 0.25\n"
        'train_domains = ["a", "b,c"]\ntest_domains = "d"\nweight_decay = 0.01\n'
    )
    args = _parse(["train", "D", "--steps-align", "9", "--no-swad"], load_config_file(cfg))
    config = build_config(args)
    assert config.steps_align == 9 and config.swad is False  # the command line wins
    assert (config.teacher, config.out, config.cache) == ("local:hash", "run", "c")
    assert config.freeze_bn is False and config.pretrained is False and config.lam == 0.25
    assert config.train_domains == ("a", "b", "c") and config.test_domains == ("d",)
    assert config.weight_decay == 0.01  # a field that had no flag before


def test_bad_train_values_exit_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "D", *REQUIRED, "--lr", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: invalid training options: lr: Input should be greater than 0"
    assert main(["train", "D", *REQUIRED, "--holdout-fraction", "1"]) == 2
    assert "holdout_fraction: Input should be less than 1" in capsys.readouterr().err
    # required values may come from the config file; a bad one there is still refused
    cfg = tmp_path / "t.toml"
    cfg.write_text('teacher = "local:hash"\nout = "run"\ncache = "c"\nlambda = 2\n')
    assert main(["train", "D", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: invalid training options: lam: Input should be less than or equal to 1"
    assert main(["train", "D", "--cache", "c"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "required: --teacher, --out" in err


# ------------------------------------------------------------------------ serve-teacher


@pytest.mark.parametrize("model", [ServerConfig, Pricing, Faults])
def test_every_server_field_has_a_flag_or_a_reason(model: type[BaseModel]) -> None:
    options = _options("serve-teacher")
    for name in model.model_fields:
        if model is ServerConfig and name in SERVER_FLAGLESS:
            continue
        flag = _flag(name, SERVER_RENAMED)
        assert flag[2:] in options, f"{model.__name__}.{name} has no {flag}"
        assert options[flag[2:]].dest == name and options[flag[2:]].default is None


def test_server_flag_defaults_are_the_models() -> None:
    config = server_config(_parse(["serve-teacher"]), "tok")
    assert config == ServerConfig(token=SecretStr("tok"))


def test_server_flags_reach_their_fields() -> None:
    args = _parse([
        "serve-teacher", "--drop-fraction", "0.1", "--timeout-fraction", "0.2",
        "--malformed-fraction", "0.05", "--wrong-dim-fraction", "0.05", "--fail-529", "0.1",
        "--seed", "7", "--usd-per-image", "0.002", "--rpm", "60", "--max-items", "8",
        "--image-tokens", "100", "--max-body-bytes", "4096", "--model-name", "m",
    ])  # fmt: skip
    config = server_config(args, "tok")
    f = config.faults
    assert (f.drop, f.timeout, f.malformed, f.wrong_dim, f.fail_529, f.seed) == (
        0.1, 0.2, 0.05, 0.05, 0.1, 7,
    )  # fmt: skip
    assert str(config.pricing.usd_per_image) == "0.002"
    assert (config.rpm, config.max_items, config.image_tokens) == (60, 8, 100)
    assert (config.max_body_bytes, config.model_name) == (4096, "m")


def test_bad_server_values_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a flag inside an argument group, from a config file: checked as the flag checks it
    cfg = tmp_path / "s.toml"
    cfg.write_text("fail_500 = 2\n")
    assert main(["serve-teacher", "--config", str(cfg)]) == 2
    assert "bad value for fail_500: fraction must be in [0, 1]" in capsys.readouterr().err
    # fractions that pass one by one but add up to more than 1: the model says so, one line
    argv = ["serve-teacher", "--port", "0", "--fail-500", "0.6", "--fail-503", "0.6"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "fault fractions add up to 1.200 > 1" in err


# ------------------------------------------------------------------- the generator


def test_a_field_without_a_flag_needs_a_reason() -> None:
    class M(BaseModel):
        n: int = 1
        table: dict[str, int] = {}

    with pytest.raises(TypeError, match="no flag for"):
        ModelFlags(M).add_to(argparse.ArgumentParser())
    with pytest.raises(TypeError, match="reason"):
        ModelFlags(M, flagless={"table": ""})
    ModelFlags(M, flagless={"table": "a mapping"}).add_to(argparse.ArgumentParser())


def test_building_the_parser_does_not_load_the_server() -> None:
    code = (
        "import sys, distill.cli; distill.cli.build_parser(); "
        "print(' '.join(m for m in ('starlette', 'uvicorn', 'torch') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def test_config_file_knows_flags_added_in_groups() -> None:
    """CommandParser records flags added through groups too (argparse's list is private)."""
    parser = CommandParser(prog="x")
    parser.add_argument_group("g").add_argument("--in-group", type=int)
    parser.add_mutually_exclusive_group().add_argument("--exclusive", action="store_true")
    parser.add_argument("--plain", action=argparse.BooleanOptionalAction, default=True)
    apply_config_file(
        parser, {"in_group": 3, "exclusive": True, "no-plain": True}, "test.toml"
    )
    args = parser.parse_args([])
    assert (args.in_group, args.exclusive, args.plain) == (3, True, False)
    with pytest.raises(ConfigurationError, match=r"unknown key 'nope'; .*exclusive, in-group"):
        apply_config_file(parser, {"nope": 1}, "test.toml")


@pytest.mark.parametrize("flags", [["-v", "CMD", "-v"], ["CMD", "-vv"], ["-vv", "CMD"]])
def test_v_before_and_after_the_command_add_up(tmp_path: Path, flags: list[str]) -> None:
    """Before: ``vlm-distill -v harvest ... -v`` logged at INFO, not DEBUG: the command's
    own ``-v`` counted from zero and replaced the one given before it."""
    from distill.data.digits import make_digits

    data = make_digits(tmp_path / "d", size=8, per_class=1, domains=("upright",))
    harvest = ["harvest", str(data), "--teacher", "local:hash", "--dry-run",
               "--cache", str(tmp_path / "c")]  # fmt: skip
    at = flags.index("CMD")
    argv = [*flags[:at], *harvest, *flags[at + 1 :]]
    code = f"import sys; from distill.cli import main; sys.exit(main({argv!r}))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "DEBUG" in done.stderr


@pytest.mark.parametrize(
    "argv",
    [["cache", "stats", "--cache", "C", "-vv"], ["cache", "-v", "stats", "--cache", "C", "-v"]],
)
def test_v_after_an_action_is_taken_and_adds_up(tmp_path: Path, argv: list[str]) -> None:
    """Before: ``vlm-distill cache stats --cache C -v`` was refused ("unrecognized
    arguments: -v", exit 2) while ``harvest ... -v`` worked."""
    from distill.cli import build_parser

    args = build_parser().parse_args([str(tmp_path / a) if a == "C" else a for a in argv])
    total = args.verbose + getattr(args, "verbose_after", 0) + getattr(args, "verbose_action", 0)
    assert total == 2


def test_every_command_says_what_its_v_flag_does() -> None:
    """A command's help read "-v, --verbose  as above", where nothing was above: the
    top-level help, which says "-v INFO, -vv DEBUG", is another page."""
    build_parser()
    for name, parser in SUBPARSERS.items():
        helps = [parser.format_help()]
        helps += [action.format_help() for action in parser.subcommands.values()]
        for text in helps:
            line = next(x for x in text.splitlines() if "-v, --verbose" in x)
            assert "as above" not in line and "-vv DEBUG" in " ".join(text.split()), (name, line)
