"""Helpers shared by the teacher-server tests (imported by package path, so they never clash
with another folder's conftest.py): the server token, tiny PNGs, data URIs, auth headers."""

from __future__ import annotations

import base64
import io

from PIL import Image

TOKEN = "test-token-0123456789"


def png(seed: int, size: int = 16) -> bytes:
    img = Image.new("RGB", (size, size + 4), ((seed * 37) % 256, (seed * 91) % 256, 120))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def data_uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sliver_png(long: int = 3000, short: int = 2) -> bytes:
    """A ``long`` x ``short`` PNG of a few hundred bytes (a horizontal gradient)."""
    row = [(i * 255 // long, 40, 255 - i * 255 // long) for i in range(long)]
    img = Image.new("RGB", (long, short))
    img.putdata(row * short)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def assert_the_transform_sees_a_bounded_sliver(backend: object, attr: str) -> None:
    """A sliver (a 1-3 pixel wide strip: a scan line, a hostile request) reached the
    backend's eval transform whole: timm's and open_clip's scale the short side to the
    model's size before the centre crop, so a 2 x 3000 PNG of a few hundred bytes became a
    256 x 384,000 image (295 MB, seconds), a 1 x 40,000,000 one terabytes. The transform
    now sees the sliver's middle, at most MAX_ASPECT times as long as it is short, and
    returns the same tensor (the centre crop keeps only that middle anyway)."""
    import torch

    from distill.server.backend_base import MAX_ASPECT, ImageOut, ImageTask, decode_rgb

    transform = getattr(backend, attr)
    seen: list[tuple[int, int]] = []
    got: list[object] = []

    def spy(img: Image.Image) -> object:
        seen.append(img.size)
        got.append(transform(img))
        return got[-1]

    data = sliver_png()
    setattr(backend, attr, spy)
    try:
        out = backend.embed_images([ImageTask(data)])  # type: ignore[attr-defined]
    finally:
        setattr(backend, attr, transform)
    assert isinstance(out[0], ImageOut), out
    ((w, h),) = seen
    assert max(w, h) <= MAX_ASPECT * min(w, h), seen
    whole = transform(decode_rgb(data))
    assert isinstance(whole, torch.Tensor) and isinstance(got[0], torch.Tensor)
    assert torch.allclose(got[0], whole, atol=1e-5)
