"""mini-clip end to end on tiny data: pool -> fit-teacher -> serve -> zero-shot over HTTP.

A few optimiser steps only (seconds): what is checked is the plumbing, the determinism and
the manifest, not the accuracy (benchmarks/teacher_zeroshot.py measures that).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr

from distill.cli import main
from distill.data import class_prompts, scan
from distill.data.digits import make_digits
from distill.server import ServerConfig, ServerThread, create_app, make_backend
from distill.teacher.pool import PoolSpec, make_teacher_pool
from tests.server.helpers import TOKEN, auth, data_uri

FIT = ["--steps", "3", "--batch", "16", "--threads", "1"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(pool, weights): a 5-per-class digits pool and a 3-step teacher fitted on it."""
    root = tmp_path_factory.mktemp("miniclip")
    pool = make_teacher_pool("digits", root / "pool", spec=PoolSpec(), per_class=5)
    weights = root / "teacher.safetensors"
    assert main(["fit-teacher", str(pool), "--out", str(weights), "--seed", "3", *FIT]) == 0
    return pool, weights


def test_fit_teacher_says_the_name_to_harvest_it_as(fitted, capsys):
    from distill.teacher.miniclip import teacher_name

    pool, weights = fitted
    out = weights.with_name("named.safetensors")
    assert main(["fit-teacher", str(pool), "--out", str(out), "--seed", "3", *FIT]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"harvest it as: --teacher {teacher_name(out)}"
    assert teacher_name(out).startswith("local:mini-clip-")


@pytest.fixture(scope="module")
def url(fitted: tuple[Path, Path]) -> Iterator[str]:
    backend = make_backend("mini-clip", weights=fitted[1])
    with ServerThread(create_app(ServerConfig(token=SecretStr(TOKEN)), backend)) as server:
        yield server.base_url
    backend.close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fit_is_deterministic_and_the_manifest_describes_the_pool(fitted, tmp_path):
    pool, weights = fitted
    manifest = json.loads(weights.with_suffix(".json").read_text())
    assert manifest["seed"] == 3 and manifest["steps"] == 3
    assert manifest["weights_sha256"] == _sha(weights)
    hashes = manifest["pool"]["image_sha256"]
    assert len(hashes) == 50 == manifest["pool"]["images"]
    assert sorted(hashes) == sorted(p.relative_to(pool).as_posix() for p in pool.rglob("*.png"))
    assert manifest["pool"]["benchmark_spec"]["digits_per_class"] == 20
    assert manifest["class_names"][0] == "0_zero"
    assert "a photo of a {}" in manifest["templates"]
    again = tmp_path / "again.safetensors"
    other = tmp_path / "other.safetensors"
    assert main(["fit-teacher", str(pool), "--out", str(again), "--seed", "3", *FIT]) == 0
    assert main(["fit-teacher", str(pool), "--out", str(other), "--seed", "4", *FIT]) == 0
    assert _sha(again) == _sha(weights)
    assert _sha(other) != _sha(weights)


def test_fit_teacher_size_flags_reach_the_manifest(fitted, tmp_path, capsys):
    pool, _ = fitted
    out = tmp_path / "small.safetensors"
    flags = ["--widths", "8,8,8,8", "--steps", "2", "--batch", "4", "--threads", "1"]
    assert main(["fit-teacher", str(pool), "--out", str(out), *flags]) == 0
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert (manifest["widths"], manifest["steps"], manifest["batch"]) == ([8, 8, 8, 8], 2, 4)
    bad = tmp_path / "bad.safetensors"
    assert main(["fit-teacher", str(pool), "--out", str(bad), "--widths", "8,x"]) == 2
    assert "--widths wants two or more positive integers" in capsys.readouterr().err
    assert not bad.exists()
    # one stage: its error named only "positive integers", which 16 is
    assert main(["fit-teacher", str(pool), "--out", str(bad), "--widths", "16"]) == 2
    assert "two or more positive integers" in capsys.readouterr().err


def test_fit_teacher_rejects_bad_input_with_exit_2(tmp_path, capsys):
    assert main(["fit-teacher", str(tmp_path), "--out", str(tmp_path / "t.safetensors")]) == 2
    assert "not a teacher pool" in capsys.readouterr().err
    assert main(["fit-teacher", str(tmp_path), "--out", str(tmp_path / "t.pt")]) == 2
    assert not list(tmp_path.iterdir())


def test_serve_teacher_without_weights_is_a_usage_error(capsys):
    assert main(["serve-teacher", "--backend", "mini-clip", "--port", "0"]) == 2
    assert "--weights" in capsys.readouterr().err


def _png(path: Path) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def test_zero_shot_over_http_matches_the_answers_and_bills(url, fitted, tmp_path):
    bench = make_digits(tmp_path / "bench", size=32, per_class=1, domains=["upright", "colour"])
    ds = scan(bench)
    images = [_png(s.path) for s in ds.samples]
    prompts = class_prompts(ds.class_names)
    with httpx.Client(headers=auth(), timeout=60) as c:
        img = c.post(url + "/v2/embed", json={
            "model": "mini-clip", "input_type": "image",
            "images": [data_uri(b) for b in images]})
        txt = c.post(url + "/v2/embed", json={
            "model": "mini-clip", "input_type": "search_query", "texts": prompts})
        assert img.status_code == 200 and txt.status_code == 200, img.text
        image_vecs = np.asarray(img.json()["embeddings"]["float"])
        text_vecs = np.asarray(txt.json()["embeddings"]["float"])
        assert image_vecs.shape == (20, 384) and text_vecs.shape == (10, 384)
        assert np.allclose(np.linalg.norm(image_vecs, axis=1), 1, atol=1e-4)
        predicted = (image_vecs @ text_vecs.T).argmax(axis=1)
        # An answer with no options names the nearest of the teacher's classes: the same
        # class the text prototypes pick.
        for k in (0, 13):
            r = c.post(url + "/v1/chat/completions", json={
                "model": "mini-clip", "max_completion_tokens": 8,
                "messages": [{"role": "user", "content": [
                    {"type": "text", "text": "Which digit is this?"},
                    {"type": "image_url", "image_url": {"url": data_uri(images[k])}}]}]})
            assert r.status_code == 200, r.text
            said = r.json()["choices"][0]["message"]["content"]
            assert said == ds.class_names[predicted[k]].replace("_", " ")
        bill = c.get(url + "/admin/billing").json()
        info = c.get(url + "/admin/info").json()
    assert bill["images"] == 22
    assert info["backend"] == "mini-clip" and info["classes"] == 10
    assert info["weights_sha256"] == _sha(fitted[1])


def test_ensure_teacher_fits_once_then_reuses(tmp_path):
    from distill.teacher.miniclip import ensure_teacher, manifest_path, teacher_name

    weights = ensure_teacher("digits", tmp_path, seed=1, steps=2)
    assert weights == tmp_path / "digits-s1-n2-w16-32-64-128-st2.safetensors"
    stamp = manifest_path(weights).stat().st_mtime_ns, weights.stat().st_mtime_ns
    assert ensure_teacher("digits", tmp_path, seed=1, steps=2) == weights
    assert (manifest_path(weights).stat().st_mtime_ns, weights.stat().st_mtime_ns) == stamp
    assert teacher_name(weights) == "local:mini-clip-" + _sha(weights)[:12]
    weights.write_bytes(weights.read_bytes()[:-1])  # damaged: refitted, not served
    assert ensure_teacher("digits", tmp_path, seed=1, steps=2) == weights
    assert teacher_name(weights) == "local:mini-clip-" + _sha(weights)[:12]


def test_ensure_teacher_uses_a_pool_another_process_made_meanwhile(tmp_path, monkeypatch):
    """Two demos fitting the teacher at once in one --workdir: both found no pool, one
    made it while the other was still dealing out its sources, and the other ended with
    "WORK/teacher/pool/digits is not empty; choose a new folder or pass --force" (exit 1;
    the demo has no --force)."""
    import distill.teacher.miniclip as miniclip
    import distill.teacher.pool as pool_module
    from distill.teacher.miniclip import ensure_teacher
    from distill.teacher.pool import POOL_PER_CLASS_BY_KIND

    real = pool_module.make_teacher_pool

    def the_other_demo_first(kind, out, **kwargs):
        real(kind, out, **kwargs)  # the other demo, a moment earlier
        return real(kind, out, **kwargs)

    fitted_on = []
    monkeypatch.setattr(pool_module, "make_teacher_pool", the_other_demo_first)
    monkeypatch.setattr(miniclip, "fit_teacher", lambda pool, *a, **k: fitted_on.append(pool))
    ensure_teacher("digits", tmp_path, seed=1, steps=2)
    pool = tmp_path / "pool" / "digits"
    assert fitted_on == [pool]  # the pool the other demo made
    assert json.loads((pool / "dataset.json").read_text())["per_class"] == (
        POOL_PER_CLASS_BY_KIND["digits"]
    )


def test_two_ensure_teachers_at_once_fit_once_and_the_second_waits(tmp_path, monkeypatch):
    """Two demos started at once on one --workdir both found no teacher, and both cut the
    pool and fitted it (double the work; the later files renamed over the earlier's). The
    second now says it waits, waits for the first's fit, and loads the teacher it wrote."""
    import threading

    import distill.teacher.miniclip as miniclip
    import distill.teacher.pool as pool_module
    from cache import atomic_write_files
    from distill.teacher.miniclip import ensure_teacher, manifest_path
    from distill.teacher.pool import POOL_PER_CLASS_BY_KIND

    per_class = POOL_PER_CLASS_BY_KIND["digits"]

    def make_pool(kind, out, **kwargs):
        out.mkdir(parents=True, exist_ok=True)
        (out / "dataset.json").write_text(json.dumps({"per_class": per_class}))
        return out

    fits: list[Path] = []
    other_arrived = threading.Event()

    def fit(pool, out, *, seed, steps, **kwargs):
        fits.append(out)
        if len(fits) == 1:
            other_arrived.wait(5)  # the other call waits for this fit, or fits as well
        other_arrived.set()
        blob = f"weights {len(fits)}".encode()
        atomic_write_files({out: blob, manifest_path(out): json.dumps({
            "seed": seed, "steps": steps, "pool": {"per_class": per_class},
            "weights_sha256": hashlib.sha256(blob).hexdigest()})})  # fmt: skip

    monkeypatch.setattr(pool_module, "make_teacher_pool", make_pool)
    monkeypatch.setattr(miniclip, "fit_teacher", fit)
    waited: list[int] = []
    fitting: list[int] = []
    got: list[Path] = []

    def demo(k: int) -> None:
        got.append(ensure_teacher("digits", tmp_path, seed=1, steps=2,
                                  waiting=lambda: (waited.append(k), other_arrived.set()),
                                  fitting=lambda: fitting.append(k)))

    threads = [threading.Thread(target=demo, args=(k,)) for k in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(got) == 2 and got[0] == got[1]
    assert len(fits) == 1  # fitted once, by the first
    assert len(waited) == 1  # the other said it waits
    assert len(fitting) == 1 and fitting != waited  # and only the one that fits says so
    assert got[0].read_bytes() == b"weights 1"


def test_ensure_teacher_refits_a_teacher_of_a_pool_cut_to_another_size(tmp_path):
    """A teacher fitted on a pool of another per-class cap (say the 1,000 per class every
    Fashion pool had before the cap became per kind) is not that kind's teacher any more:
    the pool is cut again and the teacher refitted, not silently reused."""
    from distill.teacher.miniclip import ensure_teacher, manifest_path
    from distill.teacher.pool import POOL_PER_CLASS_BY_KIND

    weights = ensure_teacher("digits", tmp_path, seed=1, steps=2)
    manifest = json.loads(manifest_path(weights).read_text())
    assert manifest["pool"]["per_class"] == POOL_PER_CLASS_BY_KIND["digits"]
    pool_meta = tmp_path / "pool" / "digits" / "dataset.json"
    for path, edit in ((manifest_path(weights), lambda m: m["pool"]), (pool_meta, lambda m: m)):
        record = json.loads(path.read_text())
        edit(record)["per_class"] = 5  # as if cut with --per-class 5
        path.write_text(json.dumps(record))
    stamp = weights.stat().st_mtime_ns
    assert ensure_teacher("digits", tmp_path, seed=1, steps=2) == weights
    assert weights.stat().st_mtime_ns != stamp
    assert json.loads(manifest_path(weights).read_text())["pool"]["per_class"] == (
        POOL_PER_CLASS_BY_KIND["digits"])
    assert json.loads(pool_meta.read_text())["per_class"] == POOL_PER_CLASS_BY_KIND["digits"]


def test_ensure_teacher_keeps_a_teacher_of_another_pool_size_apart(tmp_path):
    """`pool_per_class` (benchmarks/teacher_zeroshot.py --pool-per-class) fits a teacher on
    a pool of that size next to the kind's own, never in its place."""
    from distill.teacher.miniclip import ensure_teacher, manifest_path

    small = ensure_teacher("digits", tmp_path, seed=1, steps=2, pool_per_class=5)
    assert small.name == "digits-s1-n2-w16-32-64-128-st2-p5.safetensors"
    manifest = json.loads(manifest_path(small).read_text())
    assert manifest["pool"]["per_class"] == 5
    assert manifest["pool"]["images"] == 50  # 5 per class of the ten digits
    assert json.loads((tmp_path / "pool" / "digits-p5" / "dataset.json").read_text())[
        "per_class"] == 5
    own = ensure_teacher("digits", tmp_path, seed=1, steps=2)
    assert own != small and small.is_file()
    assert json.loads(manifest_path(own).read_text())["pool"]["images"] > 50


def test_no_inference_thread_outlives_a_request_while_the_server_runs(url):
    """Regression: the backend kept one inference thread for its lifetime; idle, it kept its
    OpenMP team, and torch work elsewhere in the process (students trained beside
    ``serve_in_background``) ran about 2x slower on 2 cores. Each call's thread exits now."""
    import threading
    import time

    with httpx.Client(headers=auth(), timeout=60) as c:
        r = c.post(url + "/v2/embed", json={
            "model": "mini-clip", "input_type": "image", "images": [data_uri(_png_bytes())]})
        assert r.status_code == 200, r.text
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        alive = [t.name for t in threading.enumerate() if t.name.startswith("mini-clip")]
        if not alive:
            break
        time.sleep(0.02)
    assert alive == []


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_weights_that_are_not_the_manifests_are_refused(fitted, tmp_path, monkeypatch, capsys):
    """A weights file beside another fit's manifest (a refit over one --out cut between
    its two writes) was served under the manifest's teacher name, so its answers were
    cached as another teacher's (until 2026-12-06)."""
    import shutil

    monkeypatch.setenv("VLM_DISTILL_TEACHER_TOKEN", TOKEN)
    _pool, weights = fitted
    other = tmp_path / "t.safetensors"
    shutil.copy(weights, other)
    shutil.copy(weights.with_suffix(".json"), other.with_suffix(".json"))
    make_backend("mini-clip", weights=other).close()  # the pair as written: served
    manifest = json.loads(other.with_suffix(".json").read_text())
    manifest["weights_sha256"] = "0" * 64  # another fit's manifest
    other.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.raises(FileNotFoundError, match="not the ones its manifest"):
        make_backend("mini-clip", weights=other)
    code = main(["serve-teacher", "--backend", "mini-clip", "--weights", str(other),
                 "--port", "0"])  # fmt: skip
    assert code == 2 and "not the ones its manifest" in capsys.readouterr().err


def test_a_full_disk_while_a_refit_writes_its_manifest_keeps_the_old_teacher(
    fitted, tmp_path, monkeypatch, capsys
):
    """Refitting over an earlier teacher: the weights were replaced, then the manifest
    written in place; a full disk there left new weights beside the old manifest, which
    the hash check refuses: the old teacher was lost as well as the new fit."""
    import builtins
    import errno
    import shutil

    from distill.teacher.miniclip_model import load_teacher, manifest_path

    pool, weights = fitted
    out = tmp_path / "teacher.safetensors"
    shutil.copy(weights, out)
    shutil.copy(manifest_path(weights), manifest_path(out))
    before = (_sha(out), _sha(manifest_path(out)))
    real_open = builtins.open

    def full_for_the_manifest(file, mode="r", *args, **kwargs):
        if "w" in mode and Path(file).name.startswith(manifest_path(out).name):
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_for_the_manifest)
    monkeypatch.setattr(io, "open", full_for_the_manifest)  # what Path.write_text opens with
    rc = main(["fit-teacher", str(pool), "--out", str(out), "--seed", "4", *FIT])
    monkeypatch.undo()
    assert rc == 1
    assert "No space left on device" in capsys.readouterr().err
    assert (_sha(out), _sha(manifest_path(out))) == before  # the old teacher, whole
    load_teacher(out)  # and it still loads
    assert sorted(p.name for p in tmp_path.iterdir()) == ["teacher.json", "teacher.safetensors"]


def test_fitted_teacher_says_whether_ensure_teacher_will_reuse_or_fit(tmp_path):
    """What the demo prints before it calls ensure_teacher ("loaded from" or "fitting it
    once") was whether any digits-*.safetensors existed: with other --teacher-steps, or a
    manifest edited by hand, it said "loaded from" and then fitted."""
    from distill.teacher.miniclip import ensure_teacher, fitted_teacher, manifest_path

    assert fitted_teacher("digits", tmp_path, seed=1, steps=2) is None  # nothing yet
    weights = ensure_teacher("digits", tmp_path, seed=1, steps=2)
    assert fitted_teacher("digits", tmp_path, seed=1, steps=2) == weights
    assert fitted_teacher("digits", tmp_path, seed=1, steps=3) is None  # other steps: a fit
    manifest_path(weights).write_text("[]")  # edited by hand: refitted
    assert fitted_teacher("digits", tmp_path, seed=1, steps=2) is None


def test_a_demo_that_waits_for_another_s_teacher_does_not_say_it_fits(
    tmp_path, monkeypatch, capsys
):
    """A demo started beside one fitting the teacher in its --workdir said "fitting it
    once ..." and then "waiting for another demo fitting the teacher", and loaded the
    other's teacher: it never fitted. Now it says it fits only when it starts to."""
    import fcntl
    import os

    import distill.demo as demo
    import distill.teacher.miniclip as miniclip
    from cache import atomic_write_files
    from distill.teacher.miniclip import manifest_path

    teacher = tmp_path / "teacher"
    teacher.mkdir()
    other = os.open(teacher / "digits.lock", os.O_RDWR | os.O_CREAT)  # the other demo's
    fcntl.flock(other, fcntl.LOCK_EX)
    monkeypatch.setattr(miniclip, "fit_teacher", lambda *a, **k: pytest.fail("fitted"))
    monkeypatch.setattr(demo, "ensure_demo_data", lambda data, cfg: None)
    real_fit = demo.fit_demo_teacher
    got = []

    def beside_another_fit(work, cfg, *, waiting, **kwargs):
        plan = miniclip._plan("digits", work / "teacher", cfg.seed, cfg.teacher_steps,
                              None, None, "kind")  # fmt: skip

        def the_other_finishes():
            waiting()
            blob = b"the other demo's teacher"
            atomic_write_files({plan.weights: blob, manifest_path(plan.weights): json.dumps({
                "seed": plan.seed, "steps": plan.steps, "pool": {"per_class": plan.per_class},
                "weights_sha256": hashlib.sha256(blob).hexdigest()})})  # fmt: skip
            os.close(other)  # its lock goes with it

        got.append(real_fit(work, cfg, waiting=the_other_finishes, **kwargs))
        raise demo.HarvestStopped(3)

    monkeypatch.setattr(demo, "fit_demo_teacher", beside_another_fit)
    assert main(["demo", "--workdir", str(tmp_path)]) == 3
    said = " ".join(capsys.readouterr().out.split())
    assert "waiting for another demo fitting the teacher" in said, said
    assert "fitting it once" not in said, said
    assert got[0].read_bytes() == b"the other demo's teacher"


def test_the_demo_says_it_fits_when_it_will(tmp_path, monkeypatch, capsys):
    import distill.demo as demo
    import distill.teacher.miniclip as miniclip
    import distill.teacher.pool as pool_module

    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "digits-s0-n99-w8-st1.safetensors").write_bytes(b"not a teacher")

    def stop_here(*args, **kwargs):
        raise demo.HarvestStopped(3)

    # the fit itself stops it (said when the fit starts, since a demo may end up loading
    # the teacher another demo fitted meanwhile)
    monkeypatch.setattr(demo, "ensure_demo_data", lambda data, cfg: None)
    monkeypatch.setattr(pool_module, "make_teacher_pool", lambda *a, **k: None)
    monkeypatch.setattr(miniclip, "fit_teacher", stop_here)
    main(["demo", "--workdir", str(tmp_path)])
    said = capsys.readouterr().out
    assert "fitting it once" in said and "loaded from" not in said, said
