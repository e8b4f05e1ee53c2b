"""`fit-teacher` and `serve-teacher --backend mini-clip` with files they cannot use: an
``--out`` folder that cannot be written, damaged weights, an edited manifest. Each is one
line (exit 2), said before the work it would waste."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from distill.cli import main
from tests.train.read_only_view import run_read_only


def test_fit_teacher_into_a_read_only_folder_is_refused_before_fitting(tmp_path: Path) -> None:
    """It fitted the teacher (minutes for the Fashion pool's 12,000 steps), then ended in
    "fit-teacher failed on a file: OUT/t.safetensors.tmp-...: Read-only file system"."""
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "dataset.json").write_text("{}")  # what fit-teacher looks for before fitting
    folder = tmp_path / "teachers"
    folder.mkdir()
    view = tmp_path / "view"
    out = view / "t.safetensors"
    argv = ["fit-teacher", str(pool), "--out", str(out), "--steps", "1", "--threads", "1"]
    done = run_read_only(folder, view, argv, spy="distill.teacher.miniclip.fit_teacher",
                         marker="FITTING")  # fmt: skip
    assert "FITTING" not in done.stderr, done.stderr  # refused before the fit
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"cannot write --out {out}" in lines[0]
    assert not any(folder.iterdir())


def _mini_clip_files(folder: Path, weights: bytes | None = None, **manifest: Any) -> Path:
    """A mini-clip weights file (a random tower, or ``weights``) and its manifest: the
    one fit-teacher writes, with ``manifest``'s keys put over it."""
    import torch
    from safetensors.torch import save

    from distill.teacher.miniclip_model import MiniClipTower

    folder.mkdir()
    if weights is None:
        torch.manual_seed(0)
        weights = save({k: v.contiguous() for k, v in MiniClipTower().state_dict().items()})
    path = folder / "t.safetensors"
    path.write_bytes(weights)
    full = {"format": "mini-clip/1", "weights_sha256": hashlib.sha256(weights).hexdigest(),
            "widths": [16, 32, 64, 128], "stem_stride": 2, "dim": 384,
            "class_names": ["0_zero", "1_one"], **manifest}  # fmt: skip
    path.with_suffix(".json").write_text(json.dumps(full))
    return path


def _a_safetensors_file_cut_short(folder: Path) -> Path:
    import torch
    from safetensors.torch import save

    whole = save({"w": torch.zeros(64, 64)})
    path = folder / "cut.safetensors"
    path.write_bytes(whole[:200])
    return path


def _serve(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """serve-teacher refused: exit 2 and one line on stderr (it never serves here)."""
    assert main(["serve-teacher", "--port", "0", *argv]) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.strip().splitlines() if x.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _manifest_not_an_object(folder: Path) -> Path:
    weights = _mini_clip_files(folder)
    weights.with_suffix(".json").write_text("[1]")
    return weights


CASES = {
    # the weights its manifest names, under a manifest whose tower was edited
    "edited widths": lambda d: _mini_clip_files(d, widths=[8, 16]),
    "manifest not an object": _manifest_not_an_object,
    "no class names": lambda d: _mini_clip_files(d, class_names=None),
    # a manifest with no hash to check, over weights cut short
    "no hash, cut weights": lambda d: _mini_clip_files(
        d, weights=_a_safetensors_file_cut_short(d.parent).read_bytes(), weights_sha256=None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_serve_teacher_with_mini_clip_files_it_cannot_load_is_one_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """They ended in safetensors' or torch's traceback (a RuntimeError listing every size
    that differs, an AttributeError, a KeyError)."""
    weights = CASES[case](tmp_path / "teacher")
    line = _serve(["--backend", "mini-clip", "--weights", str(weights)], capsys)
    assert str(weights.with_suffix("")) in line  # the weights or the manifest named
    assert "refit with: vlm-distill fit-teacher" in line


def test_serve_teacher_open_clip_with_a_wrong_or_damaged_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A download cut short, or the mini-clip file given as --open-clip-weights: a
    SafetensorError traceback, or a RuntimeError of some 20,000 characters naming every key."""
    pytest.importorskip("open_clip")
    mini = _mini_clip_files(tmp_path / "mini")
    cut = _a_safetensors_file_cut_short(tmp_path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file" * 8)
    for weights in (cut, mini, junk):
        line = _serve(["--backend", "open-clip", "--open-clip-model", "ViT-S-32-alt",
                       "--open-clip-weights", str(weights)], capsys)  # fmt: skip
        assert f"open-clip weights {weights}" in line, line
        assert "ViT-S-32-alt" in line and len(line) < 600, line


def test_serve_teacher_open_clip_with_an_unknown_model_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo in --open-clip-model: open_clip's RuntimeError traceback, listing all 160
    of its architectures."""
    pytest.importorskip("open_clip")
    weights = _a_safetensors_file_cut_short(tmp_path)
    line = _serve(["--backend", "open-clip", "--open-clip-model", "ViT-B-32x",
                   "--open-clip-weights", str(weights)], capsys)  # fmt: skip
    assert "--open-clip-model ViT-B-32x: open_clip has no such model" in line, line
    assert len(line) < 300, line


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--weights", "W"], "--weights"),  # the default backend: pseudo-clip
        (["--backend", "hash", "--weights", "W"], "--weights"),
        (["--backend", "mini-clip", "--weights", "W", "--open-clip-weights", "W"],
         "--open-clip-weights"),
        (["--open-clip-model", "ViT-B-32"], "--open-clip-model"),
        # pseudo-clip's softmax: mini-clip's answers did not change, without a word
        (["--backend", "mini-clip", "--weights", "W", "--temperature", "0.5"], "--temperature"),
        # the hash backend's vector size: pseudo-clip served 512-d vectors, without a word
        (["--hash-dim", "64"], "--hash-dim"),
        (["--backend", "mini-clip", "--weights", "W", "--hash-dim", "64"], "--hash-dim"),
        # pseudo-clip's EfficientNet: the hash (or mini-clip) backend served, without a word
        (["--backend", "hash", "--image-tower", "lite0"], "--image-tower"),
        (["--backend", "mini-clip", "--weights", "W", "--image-tower", "auto"], "--image-tower"),
    ],
)  # fmt: skip
def test_serve_teacher_refuses_a_file_flag_its_backend_would_ignore(
    argv: list[str], flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`serve-teacher --weights t.safetensors` (no --backend, as fit-teacher's file is easy
    to give alone) served the pseudo-clip teacher without a word: a harvest with the
    `--teacher local:mini-clip-<hash>` fit-teacher printed then cached pseudo-clip's
    answers under the mini-clip teacher's name, where every later run read them."""
    import distill.server

    built: list[str] = []

    def no_backend(name: str, **_: Any) -> Any:
        built.append(name)
        raise SystemExit(99)  # it would have served that backend

    monkeypatch.setattr(distill.server, "make_backend", no_backend)
    weights = _mini_clip_files(tmp_path / "teacher")
    argv = [str(weights) if a == "W" else a for a in argv]
    line = _serve(argv, capsys)
    assert built == []
    assert f"{flag} is for the " in line and "--backend" in line, line


def test_fit_teacher_whose_manifest_name_is_a_folder_is_refused_before_fitting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--out T.safetensors`` beside a folder ``T.json`` (the manifest's name): the
    teacher was fitted (minutes), the weights renamed in, then the manifest's rename failed
    ("Is a directory"): a weights file without its manifest, which serve-teacher refuses."""
    import distill.teacher.miniclip as miniclip

    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "dataset.json").write_text("{}")
    (tmp_path / "t.json").mkdir()
    fitted: list[object] = []
    monkeypatch.setattr(miniclip, "fit_teacher", lambda *a, **k: fitted.append(a))
    out = tmp_path / "t.safetensors"
    code = main(["fit-teacher", str(pool), "--out", str(out), "--steps", "1"])
    err = capsys.readouterr().err
    assert (code, fitted) == (2, []), err
    assert len(err.strip().splitlines()) == 1, err
    assert f"{tmp_path / 't.json'}, but that is a folder" in err
    assert not out.exists()


@pytest.mark.parametrize("beside", ["dataset.json", "results.json", "not json"])
def test_fit_teacher_never_replaces_a_json_file_that_is_not_its_manifest(
    tmp_path: Path,
    beside: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The manifest goes beside --out under its stem: ``--out pool/dataset.safetensors``
    replaced the teacher pool's own dataset.json (the pool no longer read), and
    ``--out results.safetensors`` a results.json of the user's, without a word. A
    manifest of an earlier fit (a refit over the same --out) is still replaced."""
    import distill.teacher.miniclip as miniclip

    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "dataset.json").write_text('{"name": "teacher-pool"}')
    fitted: list[object] = []
    monkeypatch.setattr(miniclip, "fit_teacher", lambda *a, **k: fitted.append(a))
    if beside == "dataset.json":
        out = pool / "dataset.safetensors"
    else:
        out = tmp_path / "results.safetensors"
        (tmp_path / "results.json").write_text('{"accuracy": 0.9}' if beside != "not json" else "x")
    manifest = out.with_suffix(".json")
    before = manifest.read_bytes()
    code = main(["fit-teacher", str(pool), "--out", str(out), "--steps", "1"])
    err = capsys.readouterr().err
    assert (code, fitted) == (2, []), err
    assert len(err.strip().splitlines()) == 1, err
    assert f"would replace {manifest}, which is not a mini-clip manifest" in err
    assert manifest.read_bytes() == before
    # an earlier fit's manifest is the teacher's own: a refit replaces it
    manifest.write_text(json.dumps({"format": "mini-clip/1"}))
    monkeypatch.setattr(miniclip, "fit_teacher", lambda *a, **k: fitted.append(a) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["fit-teacher", str(pool), "--out", str(out), "--steps", "1"])
    assert len(fitted) == 1


def test_serve_teacher_gives_the_image_tower_to_pseudo_clip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--image-tower, refused with the backends that have no such choice, still reaches
    pseudo-clip's (and "auto" when it is not given)."""
    import distill.server

    built: list[tuple[str, str]] = []

    def no_backend(name: str, **kwargs: Any) -> Any:
        built.append((name, kwargs.get("image_tower", "auto")))
        raise SystemExit(99)  # it would have served that backend

    monkeypatch.setattr(distill.server, "make_backend", no_backend)
    for argv in (["--image-tower", "lite0"], []):
        with pytest.raises(SystemExit):
            main(["serve-teacher", "--port", "0", *argv])
    assert built == [("pseudo-clip", "lite0"), ("pseudo-clip", "auto")]


def test_fit_teacher_out_onto_weights_without_a_manifest_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fit-teacher POOL --out RUN/model.safetensors`: a trained student's weights (no
    mini-clip manifest beside them) were replaced by the fit, exit 0 (until 2026-12-08)."""
    import distill.teacher.miniclip as miniclip

    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "dataset.json").write_text('{"name": "teacher-pool"}')
    run = tmp_path / "run"
    run.mkdir()
    weights = run / "model.safetensors"
    weights.write_bytes(b"precious")
    fitted: list[object] = []
    monkeypatch.setattr(miniclip, "fit_teacher", lambda *a, **k: fitted.append(a))
    code = main(["fit-teacher", str(pool), "--out", str(weights), "--steps", "1"])
    err = capsys.readouterr().err
    assert (code, fitted) == (2, []), err
    assert "exists and is not a mini-clip teacher" in err
    assert weights.read_bytes() == b"precious"
