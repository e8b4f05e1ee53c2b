"""Every command takes a TOML/YAML config whose keys are flag names; flags win."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.cli import main


def test_toml_config_sets_flags_and_flags_override(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from distill.data.digits import make_digits

    monkeypatch.delenv("VLM_DISTILL_TEACHER_TOKEN", raising=False)
    data = make_digits(tmp_path / "d", size=16, per_class=1)
    cfg = tmp_path / "h.toml"
    cfg.write_text('teacher = "local:hash"\nbudget = 0.5\ndry_run = true\nviews = 2\n')
    # no server is running and no token is set: a dry run needs neither
    assert main(["harvest", str(data), "--config", str(cfg), "--cache", str(tmp_path / "c")]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at the tmp path's length
    assert "of 80 image views" in out and "Nothing was sent" in out


def test_yaml_config_with_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from distill.data.digits import make_digits

    monkeypatch.setenv("VLM_DISTILL_TEACHER_TOKEN", "t")
    data = make_digits(tmp_path / "d", size=16, per_class=1)
    cfg = tmp_path / "h.yaml"
    cfg.write_text("teacher: local:hash\nbudget: 0.5\ndry-run: true\nviews: 2\n")
    assert (
        main(
            [
                "harvest",
                str(data),
                "--config",
                str(cfg),
                "--cache",
                str(tmp_path / "c"),
                "--budget",
                "0.25",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "of 80 image views" in out and "budget $0.25" in out
    )  # views from the file, budget from the flag


def test_unknown_key_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("budgett = 3\n")
    assert main(["harvest", str(tmp_path), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'budgett'" in err and "budget" in err


def test_unparseable_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("budget = = 3\n")
    assert main(["report", str(tmp_path), "--config", str(cfg)]) == 2
    assert "does not parse" in capsys.readouterr().err


def test_an_action_of_a_command_takes_its_own_flags_from_a_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: ``cache stats --config F`` refused every key but ``verbose`` (the actions'
    flags were not looked up), although every command's --config takes its flag names;
    a required flag (``--cache``) given in the file was still asked for."""
    from cache import ResponseCache

    ResponseCache(tmp_path / "c" / "responses").close()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'cache = "{tmp_path / "c"}"\n')
    assert main(["cache", "stats", "--config", str(cfg)]) == 0
    assert "entries" in capsys.readouterr().out.lower()
    dcfg = tmp_path / "d.toml"
    dcfg.write_text('size = 16\nper-class = 1\ndomains = ["upright"]\n')
    assert main(["data", "make-digits", str(tmp_path / "d"), "--config", str(dcfg)]) == 0
    assert len(list((tmp_path / "d").rglob("*.png"))) == 10


def test_config_given_twice_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: with ``--config a.toml --config b.toml`` only a.toml was read (its budget
    $0.5 was used) while b.toml (budget $7) was ignored without a word."""
    from distill.data.digits import make_digits

    data = make_digits(tmp_path / "d", size=16, per_class=1)
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text('teacher = "local:hash"\nbudget = 0.5\ndry_run = true\n')
    b.write_text('teacher = "local:hash"\nbudget = 7\ndry_run = true\n')
    cache = str(tmp_path / "c")
    for flags in (["--config", str(a), "--config", str(b)], [f"--config={a}", f"--config={b}"]):
        assert main(["harvest", str(data), *flags, "--cache", cache]) == 2
        err = capsys.readouterr().err
        assert "--config is given twice" in err and err.count("\n") == 1
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("run_budget = 0.5\nrun-budget = 0.001\n", "'run_budget' and 'run-budget'"),
        ("swad = true\nno_swad = true\n", "'swad' and 'no_swad'"),
    ],
)
def test_one_flag_set_twice_in_a_config_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, keys: str
) -> None:
    """Before: TOML refuses a key given twice, but ``run_budget`` and ``run-budget`` (or
    ``swad`` and ``no_swad``) are two TOML keys naming one flag: the last one won without
    a word (a $0.5 run budget became $0.001)."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    command = "harvest" if "budget" in text else "train"
    assert main([command, str(tmp_path), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert keys in err and "set the same flag" in err


def test_config_before_the_action_of_a_command_sets_the_actions_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: ``cache --config F stats`` (the place ``cache --help`` shows --config)
    took the file's name for the action: "unknown key 'cache'; keys are the flag names:
    verbose", exit 2."""
    from cache import ResponseCache

    ResponseCache(tmp_path / "c" / "responses").close()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'cache = "{tmp_path / "c"}"\n')
    assert main(["cache", "--config", str(cfg), "stats"]) == 0
    assert "entries" in capsys.readouterr().out.lower()


def test_a_list_inside_a_list_value_is_refused_unexpanded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: each value of a list key went through ``str()``, nested lists included:
    ``[["upright"]]`` named a domain "['upright']", and a 400-byte YAML file of nested
    aliases (a "billion laughs") was expanded by ``str()`` into tens of millions of
    words: the command hung for minutes eating memory before it said anything."""
    toml = tmp_path / "n.toml"
    toml.write_text('train_domains = [["upright"]]\n')
    levels = ", ".join(f"&a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9))
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("train-domains: [&a0 [" + ",".join(["lol"] * 9) + "], " + levels + "]\n")
    for cfg in (toml, bomb):
        assert main(["train", str(tmp_path), "--config", str(cfg)]) == 2
        err = capsys.readouterr().err
        assert "train" in err and "not a list" in err and len(err) < 300


@pytest.mark.parametrize("spelling", [["--conf", "CFG"], ["--confi=CFG"]])
def test_an_abbreviated_config_flag_reads_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spelling: list[str]
) -> None:
    """Before: argparse takes ``--conf F`` for ``--config F`` (an unambiguous prefix), but
    the file was looked for under ``--config`` only: it was never read, and the run went
    on with the defaults (budget $1.00 instead of the file's $0.25) without a word."""
    from distill.data.digits import make_digits

    data = make_digits(tmp_path / "d", size=16, per_class=1)
    cfg = tmp_path / "h.toml"
    cfg.write_text('teacher = "local:hash"\nbudget = 0.25\ndry_run = true\n')
    flags = [s.replace("CFG", str(cfg)) for s in spelling]
    assert main(["harvest", str(data), *flags, "--cache", str(tmp_path / "c")]) == 0
    assert "budget $0.25" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("key", ["class_file", "price_file", "cache"])
def test_a_path_with_a_nul_character_in_a_config_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    """Before: a command line cannot hold a NUL, but a TOML or YAML string can
    (``"a\\u0000b"``): the path reached ``open()`` and the run ended in a "ValueError:
    embedded null byte" traceback."""
    from distill.data.digits import make_digits

    data = make_digits(tmp_path / "d", size=16, per_class=1, domains=("upright",))
    cfg = tmp_path / "nul.toml"
    cfg.write_text(f'{key} = "a\\u0000b"\nteacher = "local:hash"\n')
    argv = ["harvest", str(data), "--config", str(cfg), "--budget", "0.01"]
    if key != "cache":
        argv += ["--cache", str(tmp_path / "c")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "NUL" in err


def test_an_empty_list_for_a_flag_that_takes_one_or_more_values_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: ``--domains`` with no value is refused by argparse, but ``domains = []`` in
    a config file passed: ``data make-digits`` wrote every domain, as if it were unset."""
    cfg = tmp_path / "d.toml"
    cfg.write_text("domains = []\nper-class = 1\n")
    assert main(["data", "make-digits", str(tmp_path / "d"), "--config", str(cfg)]) == 2
    assert "domains takes at least one value" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_a_config_file_saved_with_a_byte_order_mark_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    """Before: a TOML file saved with a UTF-8 BOM (Windows Notepad's "UTF-8 with BOM")
    was refused with "does not parse: Invalid statement (at line 1, column 1)"."""
    from distill.data.digits import make_digits

    data = make_digits(tmp_path / "d", size=16, per_class=1)
    cfg = tmp_path / f"h{suffix}"
    text = (
        'teacher = "local:hash"\nbudget = 0.25\ndry_run = true\n'
        if suffix == ".toml"
        else "teacher: local:hash\nbudget: 0.25\ndry-run: true\n"
    )
    cfg.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert main(["harvest", str(data), "--config", str(cfg), "--cache", str(tmp_path / "c")]) == 0
    assert "budget $0.25" in capsys.readouterr().out


def test_relative_paths_in_a_config_file_are_from_the_current_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on the command line (README, CLI reference): not from the file's folder."""
    from distill.data.digits import make_digits

    make_digits(tmp_path / "d", size=16, per_class=1)
    (tmp_path / "conf").mkdir()
    cfg = tmp_path / "conf" / "h.toml"
    cfg.write_text('teacher = "local:hash"\ndry_run = true\nclass_file = "classes.txt"\n')
    (tmp_path / "conf" / "classes.txt").write_text("0\n1\n")  # beside the file: not read
    monkeypatch.chdir(tmp_path)
    assert main(["harvest", "d", "--config", str(cfg), "--cache", "c"]) == 2
    assert "class file 'classes.txt' does not exist" in capsys.readouterr().err
