"""Cache keys: every part that changes the answer changes the key; file names do not."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cache import make_key

BASE = {
    "provider": "cohere",
    "model": "embed-v4.0",
    "endpoint": "/v2/embed",
    "api_version": "2024-10-01",
    "params": {"input_type": "image", "output_dimension": 1024, "truncate": "END"},
    "prompt": None,
    "image_sha256": hashlib.sha256(b"pixels").hexdigest(),
}


def _changed(path: tuple[str, ...], value: object) -> dict[str, object]:
    parts: dict[str, object] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    target: dict[str, object] = parts
    for name in path[:-1]:
        inner = target[name]
        assert isinstance(inner, dict)
        target = inner
    target[path[-1]] = value
    return parts


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("provider",), "voyage"),
        (("model",), "embed-v3.0"),
        (("endpoint",), "/v1/embed"),
        (("api_version",), "2025-01-01"),
        (("params", "input_type"), "search_document"),
        (("params", "output_dimension"), 512),
        (("params", "truncate"), "NONE"),
        (("prompt",), "describe the image"),
        (("image_sha256",), hashlib.sha256(b"other pixels").hexdigest()),
    ],
)
def test_key_changes_when_any_part_changes(path: tuple[str, ...], value: object) -> None:
    assert make_key(_changed(path, value)) != make_key(BASE)


def test_key_is_stable_and_order_independent() -> None:
    reordered = dict(reversed(list(BASE.items())))
    assert make_key(reordered) == make_key(BASE)
    assert make_key(BASE) == make_key(dict(BASE))
    assert len(make_key(BASE)) == 64


def test_parameter_type_matters() -> None:
    # 512 and "512" are different requests to a provider, so they must not share a key
    assert make_key(_changed(("params", "output_dimension"), "1024")) != make_key(BASE)


def test_same_bytes_under_another_file_name_give_the_same_key(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    first = tmp_path / "cats" / "IMG_0001.jpg"
    second = tmp_path / "copies" / "renamed-photo.jpeg"
    for path in (first, second):
        path.parent.mkdir(parents=True)
        path.write_bytes(data)

    def key_for(path: Path) -> str:
        # what the client hashes: the bytes actually sent, never the file name
        return make_key({**BASE, "image_sha256": hashlib.sha256(path.read_bytes()).hexdigest()})

    assert key_for(first) == key_for(second)
    second.write_bytes(data + b"\x00")
    assert key_for(first) != key_for(second)
