"""The optional open-clip backend, with a randomly initialised checkpoint the test writes."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydantic import SecretStr

from distill.server import OpenClipBackend, ServerConfig, ServerThread, create_app
from tests.server.helpers import TOKEN, auth, data_uri, png

open_clip = pytest.importorskip(
    "open_clip", reason="optional extra: pip install open_clip_torch for the open-clip backend"
)
torch = pytest.importorskip("torch")

ARCH = "ViT-S-32-alt"  # the smallest bundled config (256-d), builds in about a second


def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("the open-clip backend tried to open a network connection")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    torch.manual_seed(0)
    model = open_clip.create_model(ARCH, pretrained=None).eval()
    path = tmp_path_factory.mktemp("openclip") / "random_vit_s32.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return path, model


def test_open_clip_backend_serves_the_checkpoint_offline(checkpoint, monkeypatch) -> None:
    path, reference = checkpoint
    with monkeypatch.context() as m:
        m.setattr(socket.socket, "connect", _no_network)
        backend = OpenClipBackend(ARCH, path)
    try:
        assert backend.dim == 256
        cfg = ServerConfig(token=SecretStr(TOKEN))
        with ServerThread(create_app(cfg, backend)) as server, httpx.Client(
            headers=auth(), timeout=60
        ) as c:
            r = c.post(
                server.base_url + "/v2/embed",
                json={"model": ARCH, "input_type": "image", "images": [data_uri(png(4, 40))]},
            )
            t = c.post(
                server.base_url + "/v1/embeddings",
                json={"model": ARCH, "input": "a photo of a cat"},
            )
        assert r.status_code == 200 and t.status_code == 200
        served = np.asarray(r.json()["embeddings"]["float"][0])
        served_text = np.asarray(t.json()["data"][0]["embedding"])
        assert served.shape == (256,) and served_text.shape == (256,)
        # the served vectors come from the file's weights, not from a fresh random init
        tok = open_clip.get_tokenizer(ARCH)
        with torch.inference_mode():
            ref = reference.encode_text(tok(["a photo of a cat"]))
            ref = torch.nn.functional.normalize(ref, dim=-1)[0].numpy()
        np.testing.assert_allclose(served_text, ref, atol=1e-4)
    finally:
        backend.close()


def test_open_clip_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        OpenClipBackend(ARCH, tmp_path / "nope.pt")


def test_a_sliver_image_is_not_scaled_whole(checkpoint) -> None:
    from tests.server.helpers import assert_the_transform_sees_a_bounded_sliver

    backend = OpenClipBackend(ARCH, checkpoint[0])
    try:
        assert_the_transform_sees_a_bounded_sliver(backend, "_preprocess")
    finally:
        backend.close()
