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
