"""The cache's value encoding: exact round trips, and any damage is a CacheCorruptError."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache import CacheEntry
from cache.codecs import FORMATS, check_format
from cache.entry_codec import SECRET_META_KEYS as SECRET_NAMES
from cache.entry_codec import encode_entries
from cache.response_cache import CacheCorruptError, decode_entry, encode_entry

REPO = Path(__file__).resolve().parents[2]

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)

meta_keys = st.text(min_size=1, max_size=12).filter(lambda k: k.lower() not in SECRET_NAMES)


@settings(max_examples=200, deadline=None)
@given(
    text=st.none() | st.text(max_size=200),
    meta=st.dictionaries(meta_keys, json_values, max_size=6),
    dim=st.none() | st.integers(1, 64),
    fmt=st.sampled_from(FORMATS),
)
def test_round_trip(text: str | None, meta: dict[str, Any], dim: int | None, fmt: str) -> None:
    vector = None if dim is None else np.linspace(-1, 1, dim, dtype=np.float32)
    entry = CacheEntry(vector=vector, text=text, meta=meta)
    got = decode_entry(encode_entry(entry, check_format(fmt), stored=1.0))
    assert got.text == text and dict(got.meta) == meta
    if vector is None:
        assert got.vector is None
    else:
        assert got.vector is not None and got.vector.shape == vector.shape
        assert np.allclose(got.vector, vector, atol=0.07)  # e4m3 step near 1 is 1/8


def test_every_single_byte_flip_and_truncation_is_detected() -> None:
    entry = CacheEntry(vector=np.linspace(-1, 1, 16, dtype=np.float32), text="a cat",
                       meta={"kind": "answer", "cost_usd": "0.01"})
    data = encode_entry(entry)
    for i in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(data)
            damaged[i] ^= mask
            with pytest.raises(CacheCorruptError):
                decode_entry(bytes(damaged))
    for n in range(len(data)):
        with pytest.raises(CacheCorruptError):
            decode_entry(data[:n])


def test_importing_cache_pulls_in_nothing_of_ours_nor_torch() -> None:
    code = (
        "import sys, cache\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('vlmclient', 'distill', 'torch', 'timm', 'httpx'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""


@settings(max_examples=100, deadline=None)
@given(
    texts=st.lists(st.none() | st.text(max_size=40), min_size=1, max_size=6),
    dims=st.lists(st.none() | st.integers(1, 8), min_size=6, max_size=6),
    meta=st.dictionaries(meta_keys, json_values, max_size=4),
    fmt=st.sampled_from(FORMATS),
)
def test_encoding_a_batch_gives_the_bytes_of_encoding_each(
    texts: list[str | None], dims: list[int | None], meta: dict[str, Any], fmt: str
) -> None:
    # one meta object shared (the entries of one response), one of their own
    metas = [meta, meta, {"own": 1}, meta, {}, meta]
    entries = [
        CacheEntry(
            vector=None if dims[i] is None else np.linspace(-2, 3, dims[i], dtype=np.float32),
            text=text,
            meta=metas[i],
        )
        for i, text in enumerate(texts)
    ]
    batch = encode_entries(entries, check_format(fmt), stored=12.5)
    assert batch == [encode_entry(e, check_format(fmt), stored=12.5) for e in entries]


@pytest.mark.parametrize(
    "bad",
    [
        CacheEntry(vector=np.array([1.0, np.nan], np.float32)),
        CacheEntry(vector=np.array([1e6], np.float32)),  # beyond float16
        CacheEntry(vector=np.ones((2, 2), np.float32)),
        CacheEntry(text="x", meta={"Authorization": "Bearer sk-1"}),
        CacheEntry(text="x", meta={"f": float("nan")}),
    ],
)
def test_a_batch_refuses_what_one_entry_refuses_with_the_same_error(bad: CacheEntry) -> None:
    good = CacheEntry(vector=np.ones(1, np.float32))
    with pytest.raises(ValueError) as one:
        encode_entry(bad)
    with pytest.raises(ValueError) as batch:
        encode_entries([good, bad])
    assert str(batch.value) == str(one.value)


def test_a_header_nested_too_deep_is_a_corrupt_entry_not_a_crash(tmp_path: Path) -> None:
    """A value whose checksum matches but whose header JSON nests 100,000 levels deep (a
    crafted cache, handed over or downloaded): ``json.loads`` raised RecursionError, which
    crashed a harvest's lookup, `cache verify`, `cache stats` and `cache prune` with a
    traceback. It is a corrupt entry now: a miss, listed by verify."""
    import struct
    import zlib

    from cache import ResponseCache, verify_cache
    from cache.entry_codec import MAGIC

    header = b'{"meta":' + b"[" * 100_000 + b"]" * 100_000 + b',"text":null,"vector":null}'
    rest = struct.pack("<I", len(header)) + header
    value = MAGIC + struct.pack("<I", zlib.crc32(rest)) + rest
    with pytest.raises(CacheCorruptError, match="undecodable"):
        decode_entry(value)
    with ResponseCache(tmp_path / "c", spill=False) as cache:
        cache.store_encoded([("deep", value)])
        assert cache.get("deep") is None and cache.get_many(["deep"]) == [None]
        assert cache.stats().corrupt == 1
        assert cache.prune(corrupt=True, dry_run=True) == 1
    assert [key for key, _ in verify_cache(tmp_path / "c")] == ["deep"]
