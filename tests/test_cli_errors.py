"""Bad paths and bad numbers through the real CLI: one ``error:`` line and an exit code.

Folders that cannot be created, a closed stdout (``| head -1``), out-of-range flags and
prices. None may end in a traceback. Usage errors found before anything is sent or
trained exit 2; failures while running exit 1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distill.cli import main
from distill.data import DataError
from distill.data.digits import MAX_SIZE, make_digits

ROOT = Path(__file__).resolve().parents[1]


def one_error_line(err: str) -> str:
    """The single stderr line, checked: starts with ``error:``, no traceback."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def argparse_error(exc: pytest.ExceptionInfo[SystemExit], err: str, flag: str) -> None:
    """argparse's refusal: exit 2, its usage, then one ``... error: argument FLAG`` line."""
    assert exc.value.code == 2
    assert "Traceback" not in err, err
    assert f"error: argument {flag}: " in err.strip().splitlines()[-1], err


@pytest.fixture
def afile(tmp_path: Path) -> Path:
    path = tmp_path / "AFILE"
    path.write_text("a file where a folder would go\n")
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """Two classes of one 8x8 image each: a valid harvest input."""
    root = tmp_path / "data"
    for i, cls in enumerate(("a", "b")):
        (root / cls).mkdir(parents=True)
        pixels = np.full((8, 8, 3), 60 * i, dtype=np.uint8)
        Image.fromarray(pixels).save(root / cls / f"{cls}.png")
    return root


# ------------------------------------------------------------ folders that cannot be made


def _cache_cases(afile: Path) -> list[Path]:
    cases = [afile / "sub", afile / "sub" / "deeper"]
    if Path("/proc/self").is_dir():  # a virtual file system: mkdir there fails
        cases.append(Path("/proc/vlm-distill-no-such-cache"))
    return cases


@pytest.mark.parametrize("case", [0, 1, 2])
def test_harvest_cache_that_cannot_be_created_exits_2_before_sending(
    case: int, afile: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = _cache_cases(afile)
    if case >= len(cases):
        pytest.skip("no /proc here")
    cache = cases[case]
    argv = [
        "harvest", str(data), "--teacher", "local:hash", "--cache", str(cache),
        "--base-url", "http://127.0.0.1:9",  # the discard port: nothing may be sent anyway
    ]  # fmt: skip
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"cannot create the --cache folder {cache}" in line
    assert not cache.exists()


def test_folder_check_leaves_nothing_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a creatable --cache passes the check; the run then stops on its missing data (a
    # usage error, exit 2)
    argv = ["harvest", str(tmp_path / "no-data"), "--teacher", "local:hash"]
    assert main([*argv, "--cache", str(tmp_path / "c"), "--base-url", "http://127.0.0.1:9"]) == 2
    assert "no-data" in one_error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_train_out_that_cannot_be_created_exits_2_before_training(
    afile: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "train", str(data), "--teacher", "local:hash", "--cache", str(tmp_path / "c"),
        "--out", str(afile / "run"),
    ]  # fmt: skip
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"cannot create the --out folder {afile / 'run'}: {afile} is a file" in line


@pytest.mark.parametrize("command", ["train", "harvest", "make-digits"])
def test_a_folder_flag_naming_a_file_exits_2_with_one_line(
    command: str, afile: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # train used to end in exit 1 "train failed on a file: AFILE: File exists"
    argv = {
        "train": ["train", str(data), "--teacher", "local:hash", "--cache",
                  str(tmp_path / "c"), "--out", str(afile)],
        "harvest": ["harvest", str(data), "--teacher", "local:hash", "--cache", str(afile)],
        "make-digits": ["data", "make-digits", str(afile), "--size", "8"],
    }[command]  # fmt: skip
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"folder {afile} is a file, not a folder" in line
    assert afile.read_text() == "a file where a folder would go\n"


def test_make_digits_out_that_cannot_be_created_exits_2(
    afile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "make-digits", str(afile / "sub"), "--size", "8"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "cannot create the --out folder" in line and ".tmp-" not in line


def test_make_digits_names_the_folder_asked_for_not_its_temporary_twin(
    afile: Path, tmp_path: Path
) -> None:
    # the library call (no CLI check in front): a DataError, no temporary folder left
    with pytest.raises(DataError, match=r"cannot create .*AFILE[/\\]sub: ") as exc:
        make_digits(afile / "sub", size=8, per_class=1, domains=["upright"])
    assert ".tmp-" not in str(exc.value)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(DataError, match="cannot write"):
        make_digits(dangling, size=8, per_class=1, domains=["upright"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["AFILE", "dangling"]


@pytest.mark.parametrize("what", ["data", "run"])
def test_a_path_that_names_nothing_is_a_usage_error(
    what: str, tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`train /nonexistent` and `eval /nonexistent-run` exited 1, the code of a failure to
    run again (until 2026-12-06)."""
    if what == "data":
        argv = ["train", str(tmp_path / "nowhere"), "--cache", str(tmp_path / "c"),
                "--teacher", "local:hash", "--out", str(tmp_path / "o")]  # fmt: skip
        expected = "does not exist"
    else:
        argv = ["eval", str(tmp_path / "no-run"), str(data)]
        expected = "is not a finished training run"
    assert main(argv) == 2
    assert expected in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "c").exists() and not (tmp_path / "o").exists()


def test_a_run_folder_inside_the_data_folder_is_refused(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Accepted until 2026-12-06: the run's checkpoint/ then scanned as a class of the
    data on the next run."""
    argv = ["train", str(data), "--cache", str(tmp_path / "c"), "--teacher", "local:hash",
            "--out", str(data / "runs" / "a")]  # fmt: skip
    assert main(argv) == 2
    assert "is inside the data folder" in one_error_line(capsys.readouterr().err)
    assert not (data / "runs").exists()


@pytest.mark.parametrize("where", ["", "stores/digits-local_hash-c440865acb16", "responses/x",
                                   "select/r"])
def test_a_run_folder_in_the_cache_folder_or_its_stores_is_refused(
    where: str, tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Accepted until 2026-12-08: a run trained into CACHE/stores/STORE was deleted by the
    next harvest, which swaps the store folder whole (model, metrics and checkpoint)."""
    cache = tmp_path / "c"
    out = cache / where if where else cache
    argv = ["train", str(data), "--cache", str(cache), "--teacher", "local:hash",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "put the run folder elsewhere" in err and "--out" in err, err
    assert not cache.exists()


@pytest.mark.parametrize("suffix", ["", "/", "/."])
def test_the_data_folder_itself_as_the_run_folder_is_refused(
    suffix: str, tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`train DATA --out DATA` passed until 2026-12-06 (only folders below DATA were
    refused): its checkpoint/ was the class "checkpoint" at the next scan, so --resume
    never found the store again, and `eval DATA DATA` refused the run."""
    argv = ["train", str(data), "--cache", str(tmp_path / "c"), "--teacher", "local:hash",
            "--out", str(data) + suffix]  # fmt: skip
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"--out {data}{suffix} is the data folder" in line
    assert sorted(p.name for p in data.iterdir()) == ["a", "b"]


def test_a_run_folder_above_the_data_folder_is_not_refused(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the run writes config.json, checkpoint/, ... beside DATA, not into it: the run goes
    # on (and stops here on the cache that holds no store)
    argv = ["train", str(data), "--cache", str(tmp_path / "c"), "--teacher", "local:hash",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "data folder" not in line and "no cached teacher embeddings" in line


def test_eval_out_that_is_a_folder_exits_2_before_evaluating(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ADIR"
    out.mkdir()
    # RUN does not exist either: --out is refused first, before any model is loaded
    assert main(["eval", str(tmp_path / "run"), str(data), "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"--out {out} is a folder" in line


def test_eval_out_under_a_file_exits_2(
    afile: Path, tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", str(tmp_path / "run"), str(data), "--out", str(afile / "e.json")]) == 2
    assert "is a file, not a folder" in one_error_line(capsys.readouterr().err)


def test_a_file_error_while_running_is_one_line_and_exit_1(
    afile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the demo makes its folders as it goes: an OSError from deep inside reaches main (a
    # --workdir that is a file is refused up front since 2026-12-07; a file where the
    # demo's data folder goes is met only when the digits are made)
    work = afile.parent / "work"
    work.mkdir()
    (work / "data").write_text("not a folder\n")
    assert main(["demo", "--workdir", str(work), "--quick"]) == 1
    line = one_error_line(capsys.readouterr().err)
    # "File exists" from the mkdir of the folder the digits' lock is taken on
    assert line.startswith("error: ") and str(work / "data") in line, line
    assert "Not a directory" in line or "File exists" in line, line


# ------------------------------------------------------------------- a closed stdout


def test_stdout_closed_by_its_reader_exits_quietly(tmp_path: Path) -> None:
    """`vlm-distill data make-digits ... | head -1`: no traceback, no "Exception ignored"."""
    argv = ["data", "make-digits", str(tmp_path / "d"), "--size", "8", "--per-class", "1"]
    code = f"import sys; from distill.cli import main; sys.exit(main({argv!r}))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.close()  # the reader goes away before anything is printed
    _, err = proc.communicate(timeout=120)
    assert err.decode() == ""
    assert proc.returncode == 0  # the command's own code: it went on to the end
    assert (tmp_path / "d" / "dataset.json").is_file()  # the work itself was done



@pytest.mark.parametrize("argv", [["providers"], ["providers", "--json"], ["data", "scan", "D"]])
def test_a_listing_into_a_closed_pipe_ends_quietly_with_its_own_code(
    argv: list[str], tmp_path: Path
) -> None:
    """`vlm-distill providers | head -0`: exit 1 (as a failure) until 2026-12-06; now the
    listing's own 0, no traceback, no "Exception ignored"."""
    make_digits(tmp_path / "d", size=8, per_class=1, seed=0)
    argv = [str(tmp_path / "d") if a == "D" else a for a in argv]
    code = f"import sys; from distill.cli import main; sys.exit(main({argv!r}))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert err.decode() == ""
    assert proc.returncode == 0


@pytest.mark.parametrize("shared", [True, False], ids=["2>&1 | head -0", "2>| closed"])
def test_an_error_said_into_a_closed_stderr_keeps_the_command_s_exit_code(
    shared: bool, tmp_path: Path
) -> None:
    """`vlm-distill harvest /nonexistent 2>&1 | head -0`: the error line could not be
    written, and its BrokenPipeError made the exit code 1 (a failure while running) instead
    of the command's own 2 (bad input). Now the rest of stderr goes to devnull, as stdout's
    does."""
    argv = ["harvest", str(tmp_path / "nonexistent")]
    code = f"import sys; from distill.cli import main; sys.exit(main({argv!r}))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT,
        stdout=subprocess.PIPE if shared else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if shared else subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    pipes = [proc.stdout] if shared else [proc.stderr]
    for pipe in pipes:
        assert pipe is not None
        pipe.close()  # the reader goes away before anything is printed
    proc.wait(timeout=120)
    assert proc.returncode == 2


# ----------------------------------------------------------------- numbers out of range


@pytest.mark.parametrize("size", ["0", "-3"])
def test_eval_batch_size_must_be_positive(
    size: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["eval", str(tmp_path / "run"), str(tmp_path), f"--batch-size={size}"])
    argparse_error(exc, capsys.readouterr().err, "--batch-size")


@pytest.mark.parametrize("command", ["make-digits", "make-fashion", "make-mnist-digits"])
@pytest.mark.parametrize("size", ["100000", str(MAX_SIZE + 1), "7", "0"])
def test_data_size_is_bounded_before_anything_is_allocated(
    command: str, size: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["data", command, str(tmp_path / "d"), "--size", size])
    err = capsys.readouterr().err
    argparse_error(exc, err, "--size")
    assert f"from 8 to {MAX_SIZE}" in err
    assert not (tmp_path / "d").exists()


def test_make_digits_refuses_a_huge_size_itself(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"8 to {MAX_SIZE} pixels"):
        make_digits(tmp_path / "d", size=100_000)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("size", ["5000", "1025", "7"])
def test_demo_student_size_is_bounded_before_the_student_is_checked(
    size: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`demo --student-size 5000` ran the student check's forward pass at 5000 px (36 s
    and 4.4 GB here), then would have trained at that size: bounded as `harvest
    --select-image-size` is, before anything runs."""
    import distill.train.student as student
    from distill.cli.validate import MAX_STUDENT_SIZE
    from distill.train.config import MAX_IMAGE_SIZE

    def check_started(*args: object, **kwargs: object) -> None:
        raise AssertionError("the student check started")

    monkeypatch.setattr(student, "check_student", check_started)
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--workdir", str(tmp_path / "w"), "--student-size", size])
    err = capsys.readouterr().err
    argparse_error(exc, err, "--student-size")
    assert "from 8 to 1024" in err
    assert not (tmp_path / "w").exists()
    assert MAX_STUDENT_SIZE == MAX_IMAGE_SIZE  # one bound: train --image-size's


@pytest.mark.parametrize("amount", ["1e999999999", "1e7", "1000000.01"])
def test_price_file_amount_out_of_range_exits_2(
    amount: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"local:hash": {"usd_per_image": amount}}))
    assert main(["providers", "--price-file", str(prices)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "local:hash.usd_per_image must be at most 1000000 dollars" in line


def test_price_file_amount_at_the_bound_is_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"local:hash": {"usd_per_image": "1000000"}}))
    assert main(["providers", "--price-file", str(prices)]) == 0
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        # a typo in the provider: the entry was silently never used, and a run charged
        # the built-in price the file was meant to replace
        ({"antropic:claude-haiku-5-5": {"usd_per_1m_input_tokens": "9"}}, "'antropic'"),
        # a long-prompt rate with no threshold: the tier never applied, every long prompt
        # reserved at the base rate
        (
            {
                "openai:gpt-x": {
                    "usd_per_1m_input_tokens": "1",
                    "usd_per_1m_output_tokens": "1",
                    "usd_per_1m_input_tokens_long_prompt": "5",
                }
            },
            "long_prompt_above_tokens",
        ),
        # true read as 1 token per image; 85 as a string read as 85
        (
            {
                "openai:gpt-x": {
                    "usd_per_1m_input_tokens": "1",
                    "usd_per_1m_output_tokens": "1",
                    "max_image_tokens": True,
                }
            },
            "max_image_tokens",
        ),
        # a pydantic error: several lines and a link before
        (
            {"openai:gpt-x": {"usd_per_1m_input_tokens": "1", "usd_per_1m_inputtokens": "3"}},
            "usd_per_1m_inputtokens",
        ),
    ],
)
def test_a_price_file_entry_that_cannot_apply_exits_2_in_one_line(
    entry: dict[str, object], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(entry))
    assert main(["providers", "--price-file", str(prices)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert said in line and str(prices) in line


@pytest.mark.parametrize("tokens", [0, -1, "0", 0.5, "-Infinity"])
def test_a_price_file_max_image_tokens_below_one_exits_2(
    tokens: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: 0 (or "0") was accepted: every image was reserved as free, and the first
    answer overran the budget and stopped the run after it was billed; -1 and 0.5 were
    refused without the value, -Infinity as a pydantic message."""
    prices = tmp_path / "prices.json"
    entry = {"usd_per_1m_input_tokens": "1", "usd_per_1m_output_tokens": "1"}
    prices.write_text(json.dumps({"openai:gpt-x": {**entry, "max_image_tokens": tokens}}))
    assert main(["providers", "--price-file", str(prices)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "openai:gpt-x.max_image_tokens must be a whole number >= 1" in line, line
    assert f"not {tokens!r}" in line and str(prices) in line


def test_fit_teacher_out_under_a_file_exits_2_before_fitting(
    afile: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # it used to fit the teacher first, then fail writing: "fit-teacher failed on a file"
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "dataset.json").write_text("{}")
    argv = ["fit-teacher", str(pool), "--out", str(afile / "t.safetensors"), "--steps", "1"]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{afile} is a file, not a folder" in line


def _no_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A pool fit-teacher takes, with a fit that fails the test when it starts."""
    import distill.teacher.miniclip as miniclip

    def fit_started(*args: object, **kwargs: object) -> None:
        raise AssertionError("the fit started")

    monkeypatch.setattr(miniclip, "fit_teacher", fit_started)
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "dataset.json").write_text("{}")
    return pool


def test_fit_teacher_sizes_past_any_machine_are_refused_before_fitting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """A stage a million channels wide went on to load the text model and then asked
    torch for gigabytes (a MemoryError or the OOM killer, minutes in)."""
    pool = _no_fit(tmp_path, monkeypatch)
    argv = ["fit-teacher", str(pool), "--out", str(tmp_path / "t.safetensors"),
            "--widths", "16,1000000"]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--widths" in line and "fit started" not in line, line


@pytest.mark.parametrize("flags", [
    ["--steps", str(10**23)], ["--steps", "100001"], ["--steps", "1e23"], ["--steps", "0"],
    ["--steps", "-5"], ["--steps", "2.5"], ["--batch", "1000000000"], ["--batch", "1"],
    ["--threads", "100000"], ["--threads", "0"],
])  # fmt: skip
def test_fit_teacher_counts_past_any_machine_or_run_are_usage_errors(
    flags: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--steps 100000000000000000000000` (a typo) was taken: the fit ran for ever without
    a word. `--batch 1000000000` (or `--threads 100000`) loaded the text model, then asked
    torch for gigabytes. Refused as argparse refuses a bad number, nothing written."""
    pool = _no_fit(tmp_path, monkeypatch)
    argv = ["fit-teacher", str(pool), "--out", str(tmp_path / "t.safetensors"), *flags]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    argparse_error(exc, capsys.readouterr().err, flags[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool"]


@pytest.mark.parametrize("argv", [
    ["demo", "--workdir", "W", "--teacher-steps", str(10**23)],
    ["demo", "--workdir", "W", "--seeds", str(10**23)],
    ["harvest", "D", "--cache", "W", "--select", "random", "--round-steps", str(10**23)],
])  # fmt: skip
def test_step_counts_that_never_end_are_usage_errors(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`demo --teacher-steps` and `harvest --select ... --round-steps` took any count:
    10**23 fitted (or trained between rounds, after round 1 was paid for) for ever; `demo
    --seeds 10**23` trained seed after seed for ever (its seeds past 2**32 out of range)."""
    import importlib

    module = importlib.import_module(f"distill.cli.{argv[0]}")
    monkeypatch.setattr(module, "run", lambda args: pytest.fail("the command ran"))
    argv = [str(tmp_path / a) if a in ("W", "D") else a for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    argparse_error(exc, capsys.readouterr().err, argv[-2])
    assert not (tmp_path / "W").exists()


@pytest.mark.parametrize("damage", ["weights", "run.json"])
def test_eval_of_a_damaged_run_folder_is_one_line(
    damage: str, tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a damaged model.safetensors ended in safetensors' traceback ("header too large")
    run = tmp_path / "run"
    run.mkdir()
    info = {"student": "mobilenetv3_small_050", "method": "erm", "class_names": ["a", "b"]}
    (run / "run.json").write_text("{cut short" if damage == "run.json" else json.dumps(info))
    (run / "model.safetensors").write_bytes(b"\xff" * 64)
    code = main(["eval", str(run), str(data)])
    line = one_error_line(capsys.readouterr().err)
    assert code != 0 and f"{run} is not a readable training run" in line


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "make-digits", "OUT", "--seed", "-1"],
        ["data", "make-digits", "OUT", "--seed", str(2**32)],
        ["data", "make-teacher-pool", "digits", "OUT", "--bench-seed", "-1"],
        ["data", "make-teacher-pool", "digits", "OUT", "--pool-seed", "-1"],
        ["fit-teacher", "POOL", "--out", "OUT", "--seed", "-1"],
    ],
)
def test_a_seed_numpy_cannot_take_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """Before: a negative seed was a numpy traceback (``harvest --select --seed -1`` after
    paying for the prompts)."""
    argv = [str(tmp_path / a) if a in ("OUT", "POOL") else a for a in argv]
    flag = next(a for a in argv if a.endswith("seed"))
    with pytest.raises(SystemExit) as exc:
        main(argv)
    argparse_error(exc, capsys.readouterr().err, flag)
    assert not (tmp_path / "OUT").exists()


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["data", "make-digits", "OUT", "--per-class", "0"], "--per-class"),
        (["data", "make-mnist-digits", "OUT", "--per-class", "0"], "--per-class"),
        (["data", "make-fashion", "OUT", "--per-domain", "0"], "--per-domain"),
        (["data", "make-teacher-pool", "digits", "OUT", "--per-class", "-1"], "--per-class"),
        (["data", "make-teacher-pool", "digits", "OUT", "--digits-per-class", "0"],
         "--digits-per-class"),
    ],
)
def test_a_size_that_leaves_nothing_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], flag: str
) -> None:
    """``--per-class 0`` (and friends) exited 1 from deep inside (until 2026-12-06)."""
    argv = [str(tmp_path / a) if a == "OUT" else a for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    argparse_error(exc, capsys.readouterr().err, flag)
    assert not (tmp_path / "OUT").exists()


def test_a_teacher_pool_the_benchmark_leaves_empty_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It exited 1 with "(per-class/per-domain cap None?)" (until 2026-12-06)."""
    out = tmp_path / "pool"
    code = main(["data", "make-teacher-pool", "digits", str(out), "--digits-per-class", "200"])
    assert code == 2
    assert "deals out every source image" in one_error_line(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize("content", ["{bad", "[1]", '{"cache": 5}'])
def test_report_of_a_run_folder_with_a_damaged_config_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    """Before: ``report RUN`` with a config.json that is not JSON (or not an object) was a
    JSONDecodeError / AttributeError traceback."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(content)
    assert main(["report", str(run)]) != 0
    line = one_error_line(capsys.readouterr().err)
    assert "report CACHE" in line or "neither a cache directory" in line


# An empty value of each path argument, e.g. `--cache "$CACHE"` with CACHE unset: the
# argument's name in argparse's refusal. Other paths (D, C, O: never made) stay valid.
EMPTY_PATHS = [
    (["harvest", "", "--cache", "C"], "data"),
    (["harvest", "D", "--cache", ""], "--cache"),
    (["harvest", "D", "--class-file", ""], "--class-file"),
    (["harvest", "D", "--price-file", ""], "--price-file"),
    (["harvest", "D", "--config", ""], "--config"),
    (["pseudolabel", "", "--cache", "C"], "data"),
    (["pseudolabel", "D", "--cache", ""], "--cache"),
    (["pseudolabel", "D", "--out", ""], "--out"),
    (["pseudolabel", "D", "--student-run", ""], "--student-run"),
    (["pseudolabel", "D", "--synonyms", ""], "--synonyms"),
    (["report", ""], "path"),
    (["report", "--cache", ""], "--cache"),
    (["cache", "verify", "--cache", ""], "--cache"),
    (["cache", "stats", "--cache", ""], "--cache"),
    (["cache", "recover", "--cache", ""], "--cache"),
    (["cache", "prune", "--cache", "", "--corrupt"], "--cache"),
    (["cache", "export", "", "--cache", "C", "--teacher", "local:hash"], "data"),
    (["cache", "export", "D", "--cache", "C", "--teacher", "local:hash", "--class-file", ""],
     "--class-file"),
    (["train", "", "--cache", "C", "--teacher", "local:hash", "--out", "O"], "DATA"),
    (["train", "D", "--cache", "", "--teacher", "local:hash", "--out", "O"], "--cache"),
    (["train", "D", "--cache", "C", "--teacher", "local:hash", "--out", ""], "--out"),
    (["train", "D", "--store", "", "--teacher", "local:hash", "--out", "O"], "--store"),
    (["train", "D", "--cache", "C", "--teacher", "local:hash", "--out", "O", "--weights", ""],
     "--weights"),
    (["train", "D", "--cache", "C", "--teacher", "local:hash", "--out", "O",
      "--weights-dir", ""], "--weights-dir"),
    (["eval", "", "D"], "RUN"),
    (["eval", "O", ""], "DATA"),
    (["eval", "O", "D", "--out", ""], "--out"),
    (["eval", "O", "D", "--store", ""], "--store"),
    (["data", "scan", ""], "data"),
    (["data", "scan", "D", "--class-file", ""], "--class-file"),
    (["data", "make-digits", ""], "out"),
    (["fit-teacher", "", "--out", "O"], "pool"),
    (["fit-teacher", "D", "--out", ""], "--out"),
    (["demo", "--workdir", ""], "--workdir"),
    (["serve-teacher", "--weights", ""], "--weights"),
    (["serve-teacher", "--open-clip-weights", ""], "--open-clip-weights"),
    (["serve-teacher", "--token-file", ""], "--token-file"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "flag"), EMPTY_PATHS, ids=[" ".join(a) for a, _ in EMPTY_PATHS])
def test_an_empty_path_is_a_usage_error_naming_its_argument(
    argv: list[str],
    flag: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An empty path meant the current folder: `--cache ""` made the current folder a
    cache and exited 0, `harvest ""` scanned it, `report ""` and `cache verify --cache ""`
    ran on it (until 2026-12-06)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VLM_DISTILL_TEACHER_TOKEN", "t" * 32)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    argparse_error(exc, err, flag)
    assert "empty" in err.strip().splitlines()[-1], err
    assert not any(tmp_path.iterdir())  # nothing made in the current folder


def test_an_empty_folder_is_refused_by_the_new_folder_check() -> None:
    """The check behind --cache and --out, for a value no argparse type saw."""
    from distill.cli import check_new_folder
    from vlmclient.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"--out folder must not be empty"):
        check_new_folder("", "--out")


@pytest.mark.parametrize("flag", ["--train-domains", "--test-domains"])
def test_a_domain_named_twice_is_refused(
    flag: str, tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--train-domains a a` (or `a,b a` in a config file) was accepted: domain a got two
    groups of the batch with their own random streams, twice the batch of any other, and
    nothing said so. Checked on the domains the flag names once the data is read (a
    domain's name may hold a comma), before anything is written."""
    domains = tmp_path / "domains"
    for domain in ("a", "b"):  # domain/class/image: a and b are domains here
        shutil.copytree(data, domains / domain)
    argv = ["train", str(domains), "--cache", str(tmp_path / "c"), "--teacher", "local:hash",
            "--out", str(tmp_path / "run"), flag, "a,b", "a"]  # fmt: skip
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{flag} names a twice" in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("flags", "train", "test"),
    [(["--test-domains", "a, b"], ("c",), ("a", "b")),
     (["--train-domains", "a, b"], ("a", "b"), ("c",)),
     (["--train-domains", " c ,a", "--test-domains", "b,,"], ("c", "a"), ("b",))],
)  # fmt: skip
def test_domains_listed_with_spaces_after_the_commas_are_the_domains_named(
    flags: list[str], train: tuple[str, ...], test: tuple[str, ...], tmp_path: Path,
    data: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--test-domains "a, b"` was refused as "unknown domain ' b'" (exit 2): the space
    after the comma stayed on the name (until 2026-12-07)."""
    import distill.train.trainer as trainer
    from distill.train.prepare import split_data

    splits = []
    monkeypatch.setattr(trainer, "train", lambda config, **kw: splits.append(split_data(config)))
    domains = tmp_path / "domains"
    for domain in ("a", "b", "c"):
        shutil.copytree(data, domains / domain)
    argv = ["train", str(domains), "--cache", str(tmp_path / "c"), "--teacher", "local:hash",
            "--out", str(tmp_path / "run"), *flags]  # fmt: skip
    main(argv)
    assert [(s.train_domains, s.test_domains) for s in splits] == [(train, test)]


@pytest.mark.parametrize("value", ["", ",", " , "])
@pytest.mark.parametrize("flag", ["--train-domains", "--test-domains"])
def test_a_domain_flag_that_names_no_domain_is_refused(
    flag: str, value: str, tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--test-domains "$TEST"` with TEST unset (or ","): no domain at all, taken as "no
    test domain" and the run trained on every domain (`--train-domains ""`: "no training
    domain left: every domain is a test domain"), while `test_domains = []` in a config
    file was refused (until 2026-12-07)."""
    domains = tmp_path / "domains"
    for domain in ("a", "b"):
        shutil.copytree(data, domains / domain)
    argv = ["train", str(domains), "--cache", str(tmp_path / "c"), "--teacher", "local:hash",
            "--out", str(tmp_path / "run"), flag, value]  # fmt: skip
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{flag} names no domain" in line, line
    assert not (tmp_path / "run").exists() and not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--threads", "100000"], "threads"),
     (["--num-workers", "100000"], "num_workers"),
     (["--batch-per-domain", "1000000000"], "batch_per_domain"),
     (["--image-size", "5000"], "image_size"),
     (["--steps", str(10**23)], "steps"),
     (["--method", "adip", "--steps-align", "100001"], "steps_align"),
     (["--method", "adip", "--steps-distill", str(10**23)], "steps_distill"),
     (["--swad", "--swad-bn-steps", str(10**23)], "swad_bn_steps"),
     (["--swad", "--swad-n-converge", str(10**23)], "swad_n_converge")],
)  # fmt: skip
def test_train_sizes_past_any_machine_are_refused_before_anything_is_read(
    flags: list[str], named: str, tmp_path: Path, data: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """`train --threads 100000` scanned the data and opened the store, then torch asked for
    100,000 OpenMP threads: a MemoryError traceback (a segfault, or "libgomp: Thread
    creation failed", with fewer); `--num-workers 100000` wrote config.json and forked
    DataLoader workers until stopped (580 in 30 s); `--batch-per-domain 1000000000` listed
    its first batch's billion indices in Python (the OOM killer); `--image-size 5000` ran
    the student check's forward pass at 5000 px (36 s, 4.4 GB) and went on to train.
    `--steps 10**23` (or `--steps-align`, `--steps-distill`, `--swad-bn-steps`) trained
    for ever without a word: every count of steps stops at MAX_STEPS, as fit-teacher's."""
    import distill.train.student as student
    import distill.train.trainer as trainer

    def train_started(*args: object, **kwargs: object) -> None:
        raise AssertionError("the training started")

    monkeypatch.setattr(trainer, "train", train_started)
    monkeypatch.setattr(student, "check_student", train_started)
    argv = ["train", str(data), "--cache", str(tmp_path / "c"), "--teacher", "local:hash",
            "--out", str(tmp_path / "run"), *flags]  # fmt: skip
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert named in line and "less than or equal to" in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("size", ["100000000000000000000", "1000000"])
def test_eval_batch_size_past_any_machine_is_refused(
    size: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`eval RUN DATA --batch-size 100000000000000000000` (past sys.maxsize) loaded the
    student and read the data, then ended in a ValueError traceback from the DataLoader;
    a million put every image of a large dataset in one batch (the OOM killer)."""
    with pytest.raises(SystemExit) as exc:
        main(["eval", str(tmp_path / "run"), str(tmp_path), "--batch-size", size])
    err = capsys.readouterr().err
    argparse_error(exc, err, "--batch-size")
    assert "from 1 to 4096" in err, err


# ------------------------------------------------- a refused teacher leaves no --cache behind


@pytest.mark.parametrize(
    ("teacher", "env", "says"),
    [
        ("anthropic:claude-haiku-4-5", {"ANTHROPIC_API_KEY": "sk-dummy"}, "cannot give"),
        ("cohere:embed-english-v3.0", {}, "no API key"),
        ("cohere:embed-english-v9", {"CO_API_KEY": "sk-dummy"}, "no price known"),
    ],
)
def test_a_refused_teacher_leaves_no_new_cache_folder(
    teacher: str,
    env: dict[str, str],
    says: str,
    tmp_path: Path,
    data: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # a mistyped --cache is not left behind as a stray folder holding an empty database,
    # journal and ledger when the teacher is refused before anything is bought
    for key in ("ANTHROPIC_API_KEY", "CO_API_KEY", "COHERE_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cache = tmp_path / "new" / "cache"
    argv = ["harvest", str(data), "--teacher", teacher, "--budget", "1"]
    argv += ["--cache", str(cache), "--base-url", "http://127.0.0.1:9"]
    assert main(argv) == 2
    assert says in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "new").exists()


def test_a_refused_teacher_keeps_a_cache_folder_that_was_there(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mine.txt").write_text("kept\n")
    argv = ["harvest", str(data), "--teacher", "openai:text-embedding-3-small", "--budget", "1"]
    assert main([*argv, "--cache", str(cache), "--base-url", "http://127.0.0.1:9"]) == 2
    assert "cannot give" in one_error_line(capsys.readouterr().err)
    assert (cache / "mine.txt").read_text() == "kept\n"
    assert (cache / "ledger.jsonl").exists()  # opened as before: only a new folder goes


def test_a_refused_teacher_keeps_a_new_cache_folder_another_run_uses(
    tmp_path: Path,
    data: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # a second run that made the same new folder meanwhile (and may be buying into it)
    # keeps it: only a folder no other live process uses is removed
    import distill.cli._common as common

    monkeypatch.setattr(common, "live_owners", lambda _db: ["pid 1 on this host"])
    cache = tmp_path / "new" / "cache"
    argv = ["harvest", str(data), "--teacher", "openai:text-embedding-3-small", "--budget", "1"]
    assert main([*argv, "--cache", str(cache), "--base-url", "http://127.0.0.1:9"]) == 2
    assert "cannot give" in one_error_line(capsys.readouterr().err)
    assert (cache / "ledger.jsonl").exists()


def test_pseudolabel_with_a_refused_teacher_leaves_no_new_cache_folder(
    tmp_path: Path,
    data: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("CO_API_KEY", raising=False)
    monkeypatch.delenv("COHERE_API_KEY", raising=False)
    for cls in ("a", "b"):  # class names an answer's option letters cannot be taken for
        (data / cls).rename(data / f"class_{cls}")
    cache = tmp_path / "new" / "cache"
    argv = ["pseudolabel", str(data), "--teacher", "cohere:embed-english-v3.0", "--budget", "1"]
    assert main([*argv, "--cache", str(cache), "--base-url", "http://127.0.0.1:9"]) == 2
    assert "cannot give answers" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "new").exists()
