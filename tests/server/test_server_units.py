"""Pieces of the teacher server without HTTP: options, tokens, limiter, faults, batching."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr, ValidationError

from distill.server import Faults, HashBackend, ServerConfig, count_tokens
from distill.server.answers import option_prompt, parse_options, pick_option
from distill.server.batching import MicroBatcher
from distill.server.faults import Fault, FaultPlan
from distill.server.ratelimit import SlidingWindowLimiter, go_duration

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("prompt", "options"),
    [
        ("What is it? Options: cat, dog or car.", ["cat", "dog", "car"]),
        ("Choices: 'red' | 'green' | 'blue'", ["red", "green", "blue"]),
        ("Pick one.\nClasses:\n- tabby cat\n- golden dog\n", ["tabby cat", "golden dog"]),
        ("Which?\nA) a cat\nB) a dog\nAnswer with the letter.", ["a cat", "a dog"]),
        ("Which?\n1. cat\n2. dog", ["cat", "dog"]),
        ("* one\n* two\n* two", ["one", "two"]),
        ("What is in this picture?", []),
        ("Options: cat", []),  # one option is not a choice
        ("Is it a cat or a dog?", []),
    ],
)
def test_parse_options(prompt: str, options: list[str]) -> None:
    assert parse_options(prompt) == options


def test_option_prompt_and_pick() -> None:
    assert option_prompt("dog") == "a photo of a dog"
    assert option_prompt("an owl") == "a photo of an owl"
    assert option_prompt("a photo of a car") == "a photo of a car"
    vecs = [np.array([1.0, 0.0]), np.array([0.6, 0.8])]
    assert pick_option(np.array([0.5, 0.9]), ["x", "y"], vecs) == "y"


def test_count_tokens() -> None:
    assert count_tokens("") == 0
    assert count_tokens("a photo of a cat.") == 6
    assert count_tokens("don't stop") == 4


def test_limiter_slides() -> None:
    now = [0.0]
    lim = SlidingWindowLimiter(2, window_s=10, clock=lambda: now[0])
    assert lim.try_acquire() is None
    now[0] = 4
    assert lim.try_acquire() is None
    assert lim.try_acquire() == pytest.approx(6.0)
    now[0] = 10.0
    assert lim.try_acquire() is None
    assert lim.remaining() == (0, pytest.approx(4.0))


def test_go_duration() -> None:
    assert [go_duration(s) for s in (0.02, 1.5, 59.5, 360)] == ["20ms", "1.5s", "59.5s", "6m0s"]


def test_fault_plan_fractions_and_seed() -> None:
    faults = Faults(fail_500=0.25, drop=0.25, wrong_dim=0.25, seed=3)
    draws = [FaultPlan(faults).draw() for _ in range(1)]
    plan_a, plan_b = FaultPlan(faults), FaultPlan(faults)
    a = [plan_a.draw() for _ in range(4000)]
    assert a == [plan_b.draw() for _ in range(4000)]
    assert draws[0] == a[0]
    for kind in (Fault.FAIL_500, Fault.DROP, Fault.WRONG_DIM, Fault.NONE):
        assert 850 < a.count(kind) < 1150
    assert FaultPlan(Faults()).draw() is Fault.NONE
    with pytest.raises(ValidationError):
        Faults(fail_500=0.6, fail_503=0.6)


def test_pricing_made_in_code_above_the_cli_bound_is_refused_when_made() -> None:
    """Before: Pricing(usd_per_image=Decimal("1e1000000")) was accepted and every request
    that billed an image was a decimal.Overflow 500 (the CLI's price flags stop at $10**12,
    code did not)."""
    from decimal import Decimal

    from distill.server import Pricing

    with pytest.raises(ValueError, match="usd_per_image"):
        Pricing(usd_per_image=Decimal("1e1000000"))
    with pytest.raises(ValueError, match="usd_per_1m_output_tokens"):
        Pricing(usd_per_1m_output_tokens=Decimal(10**12) + 1)
    assert Pricing(usd_per_image=Decimal(10**12)).usd_per_image == 10**12  # the bound


def test_config_hides_token_and_rejects_empty() -> None:
    cfg = ServerConfig(token=SecretStr("hunter2-secret"))
    assert "hunter2-secret" not in repr(cfg) and "hunter2-secret" not in str(cfg.model_dump())
    with pytest.raises(ValidationError):
        ServerConfig(token=SecretStr(""))


def test_hash_backend_is_deterministic_and_domain_separated() -> None:
    a, b = HashBackend(dim=32), HashBackend(dim=32)
    va, vb = a.embed_texts(["cat"])[0], b.embed_texts(["cat"])[0]
    np.testing.assert_array_equal(va, vb)
    assert va.dtype == np.float32 and abs(float(va @ va) - 1) < 1e-5
    from distill.server.backends import ImageTask

    (img,) = a.embed_images([ImageTask(b"cat")])
    assert not np.allclose(img.vector, va)  # same bytes as image vs text: different vectors
    assert img.label


async def test_micro_batcher_groups_concurrent_items() -> None:
    from concurrent.futures import ThreadPoolExecutor

    calls: list[list[int]] = []
    busy = threading.Event()  # the worker thread has taken the first batch
    release = threading.Event()

    def fn(items: list[int]) -> list[int | Exception]:
        calls.append(list(items))
        busy.set()
        release.wait(30)
        return [ValueError("bad") if x < 0 else x * 10 for x in items]

    with ThreadPoolExecutor(1) as pool:
        batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=4, executor=pool)
        first = asyncio.ensure_future(batcher.submit_many([1]))
        assert await asyncio.to_thread(busy.wait, 30)  # the worker is now busy on [1]
        # Submitted while it is busy: these tasks are scheduled now, so they queue their
        # items before the worker's wake-up (which comes only after `release`) is.
        rest = [asyncio.ensure_future(batcher.submit_many([i])) for i in range(2, 8)]
        bad = asyncio.ensure_future(batcher.submit_many([-1]))
        release.set()
        assert await first == [10]
        assert [await r for r in rest] == [[i * 10] for i in range(2, 8)]
        with pytest.raises(ValueError, match="bad"):
            await bad
        await batcher.aclose()
    assert calls == [[1], [2, 3, 4, 5], [6, 7, -1]]


def test_the_server_answers_while_a_model_runs_in_its_executor() -> None:
    """The event loop never runs a model: /healthz answers while a forward pass is held."""
    import base64
    from concurrent.futures import ThreadPoolExecutor

    from distill.server import ServerThread, create_app
    from tests.conftest import png_bytes

    running, release = threading.Event(), threading.Event()

    class HeldBackend(HashBackend):
        def __init__(self) -> None:
            super().__init__(dim=8)
            self.executor = ThreadPoolExecutor(1)

        def embed_images(self, tasks):  # type: ignore[no-untyped-def]
            running.set()
            release.wait(30)
            return super().embed_images(tasks)

    backend = HeldBackend()
    token = "held-backend-token-5c1d"
    image = "data:image/png;base64," + base64.b64encode(png_bytes(1)).decode("ascii")
    body = {"model": "m", "input_type": "image", "images": [image]}
    headers = {"Authorization": f"Bearer {token}"}
    app = create_app(ServerConfig(token=SecretStr(token)), backend)
    with ServerThread(app) as server, ThreadPoolExecutor(1) as caller:
        url = server.base_url
        embed = caller.submit(httpx.post, url + "/v2/embed", json=body, headers=headers, timeout=60)
        try:
            assert running.wait(30)
            health = httpx.get(url + "/healthz", timeout=10)
            assert health.status_code == 200 and not embed.done()
        finally:
            release.set()
        assert embed.result(timeout=60).status_code == 200
    assert backend.executor is not None
    backend.executor.shutdown()


async def test_serve_in_background_yields_a_working_url() -> None:
    from distill.server import serve_in_background

    cfg = ServerConfig(token=SecretStr("bg-token"))
    async with serve_in_background(cfg, HashBackend(dim=8)) as url:
        assert url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(headers={"Authorization": "Bearer bg-token"}) as c:
            r = await c.post(url + "/v1/embeddings", json={"model": "m", "input": "x"})
            bill = (await c.get(url + "/admin/billing")).json()
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 8
    assert bill["requests"] == 1
    with pytest.raises(httpx.ConnectError):  # stopped on exit
        httpx.get(url + "/healthz")


def test_server_package_imports_without_torch() -> None:
    code = (
        "import sys; import distill.server, distill.cli.serve_teacher; "
        "bad = [m for m in ('torch', 'timm', 'transformers', 'open_clip') if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_cli_serves_and_stops_without_printing_the_token() -> None:
    token = "cli-test-token-abcdef"
    env = {**os.environ, "VLM_DISTILL_TEACHER_TOKEN": token, "PYTHONPATH": str(ROOT)}
    code = (
        "import sys; from distill.cli import main; "
        "sys.exit(main(['serve-teacher', '--backend', 'hash', '--port', '0', '--rpm', '100']))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        banner = proc.stderr.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", banner)
        assert url, banner
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.post(
                    url.group(0) + "/v1/embeddings",
                    json={"model": "m", "input": "x"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert r.status_code == 200
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0
        assert token not in banner + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _palette_with_a_transparent_colour(path: Path) -> Path:
    im = Image.new("P", (8, 6), 1)
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    im.paste(0, (0, 0, 4, 6))  # the left half: entry 0, the transparent one
    im.save(path, "PNG", transparency=0)
    return path


def _grey_alpha(path: Path) -> Path:
    la = np.zeros((6, 8, 2), np.uint8)
    la[..., 0], la[:, :4, 1], la[:, 4:, 1] = 40, 0, 128  # hidden dark grey, half see-through
    Image.fromarray(la, mode="LA").save(path, "PNG")
    return path


def test_the_bundled_teacher_decodes_16_bit_grey_and_transparency_as_the_student_does(
    tmp_path: Path,
) -> None:
    """The server's decoder (every bundled backend's pixels: pseudo-clip, mini-clip,
    open-clip) clipped a 16-bit grey PNG to white (``convert("RGB")``) and dropped alpha,
    so transparent pixels showed the colour stored under them, while the student
    (``load_rgb``) and the harvest's views see grey levels and white (until 2026-12-06)."""
    from distill.data.views import load_rgb
    from distill.server.backend_base import decode_rgb
    from tests.data.test_sixteen_bit import write_16bit
    from tests.data.test_transparency import write_rgba

    files = [
        write_16bit(tmp_path / "grey16.png"),
        write_rgba(tmp_path / "rgba.png"),
        write_rgba(tmp_path / "half.png", alpha_left=100),
        _grey_alpha(tmp_path / "la.png"),
        _palette_with_a_transparent_colour(tmp_path / "palette.png"),
        write_rgba(tmp_path / "opaque.png", alpha_left=255),
    ]
    for path in files:
        served = decode_rgb(path.read_bytes())
        assert not isinstance(served, Exception), path.name
        assert served.mode == "RGB", path.name
        assert np.array_equal(np.asarray(served), np.asarray(load_rgb(path))), path.name
    grey = np.asarray(decode_rgb(files[0].read_bytes()))
    assert 0 < (grey == 255).mean() < 0.05  # grey levels, not white
    assert isinstance(decode_rgb(b"not an image"), Exception)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_the_bundled_teacher_turns_a_photo_upright_as_the_student_does(
    tmp_path: Path, fmt: str
) -> None:
    """A phone photo stores its pixels sideways plus an EXIF Orientation tag. The student
    (``load_rgb``) and every provider that honours the tag see it upright; the server's
    decoder ignored the tag, so a file sent as it is (a small photo within every limit,
    by vlm-distill's client, another client or a hand-made request) was embedded turned
    or mirrored: the teacher's target was of another picture (until 2026-12-06)."""
    from distill.data.views import load_rgb
    from distill.server.backend_base import decode_rgb
    from tests.data.test_exif_orientation import write_oriented

    for orientation in range(1, 9):
        path = write_oriented(tmp_path / f"o{orientation}.{fmt.lower()}", orientation, fmt)
        served = decode_rgb(path.read_bytes())
        assert not isinstance(served, Exception), orientation
        assert np.array_equal(np.asarray(served), np.asarray(load_rgb(path))), orientation


def test_the_running_bill_keeps_exact_totals_but_not_every_bill() -> None:
    """A server that runs for weeks (one chat request per image: a million requests)
    held every bill in memory (about 330 bytes each) and listed every request id in each
    ``GET /admin/billing``, built on the event loop (seconds per call at a million)."""
    from decimal import Decimal

    from distill.server.billing import Bill, Billing

    n = 30_000
    billing = Billing()
    for i in range(n):
        billing.record(Bill(f"req_{i}", "/v1/chat/completions", 1, 90, 2, Decimal("0.00001"), 7))
    kept = billing.bills()
    assert len(kept) < n and kept[-1].request_id == f"req_{n - 1}"
    snap = billing.snapshot()
    assert snap["requests"] == n and snap["images"] == n and snap["body_bytes"] == 7 * n
    assert (snap["input_tokens"], snap["output_tokens"]) == (90 * n, 2 * n)
    assert Decimal(snap["usd"]) == Decimal("0.00001") * n
    ids = snap["billed_request_ids"]
    assert ids == [b.request_id for b in kept]
    assert snap["earlier_ids_not_listed"] == n - len(ids)
    billing.reset()
    assert billing.snapshot()["requests"] == 0 and billing.bills() == []
