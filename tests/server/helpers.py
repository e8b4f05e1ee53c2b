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
