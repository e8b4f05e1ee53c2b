"""EmbeddingStore: layout per the spec, round trips, gathers, atomic replace, refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cache import EmbeddingStore, StoreError, StoreWriter
from cache.codecs import FORMATS
from cache.store import WRITE_BLOCK_ROWS

N, K, D, C = 40, 3, 32, 5


def _vectors(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N, K, D)).astype(np.float32) * 3,
            rng.standard_normal((C, D)).astype(np.float32))


def _write(path: Path, seed: int = 0, **kw: Any) -> EmbeddingStore:
    images, texts = _vectors(seed)
    args: dict[str, Any] = dict(
        image_ids=[f"dom/cls{i % C}/img{i}.jpg" for i in range(N)], image_vectors=images,
        text_vectors=texts, class_names=[f"class_{c}" for c in range(C)],
        prompts=[f"a photo of a class {c}" for c in range(C)], teacher="local:pseudo-clip",
        teacher_fingerprint="teacher-fp", dataset_fingerprint=f"data-fp-{seed}",
    )
    args.update(kw)
    return EmbeddingStore.write(path, **args)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_layout_and_meta_follow_the_spec(tmp_path: Path) -> None:
    store = _write(tmp_path / "s", extra_meta={"harvest_run": "r1"})
    files = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert files == ["image_ids.json", "images.npy", "meta.json", "texts.npy"]
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert meta["format_version"] == 1 and meta["format"] == "float16"
    assert (meta["dim"], meta["views"], meta["n_images"]) == (D, K, N)
    assert meta["normalized"] is True and meta["teacher"] == "local:pseudo-clip"
    assert meta["teacher_fingerprint"] == "teacher-fp" and meta["harvest_run"] == "r1"
    assert meta["class_names"][0] == "class_0" and len(meta["prompts"]) == C
    assert isinstance(meta["created"], float)
    images = np.load(tmp_path / "s" / "images.npy", mmap_mode="r")
    assert images.shape == (N, K, D) and images.dtype == np.float16
    # memory-mapped, not read: a change to the file's bytes shows through an open store
    opened = EmbeddingStore.open(tmp_path / "s")
    before = opened.gather([0])
    on_disk = np.load(tmp_path / "s" / "images.npy", mmap_mode="r+")
    on_disk[0, 0] = -on_disk[0, 0]
    on_disk.flush()
    np.testing.assert_array_equal(opened.gather([0]), -before)
    assert (store.dim, store.views, store.format, len(store)) == (D, K, "float16", N)
    assert store.meta == meta and store.class_names == meta["class_names"]
    assert store.text_embeddings.dtype == np.float32 and store.text_embeddings.shape == (C, D)
    assert np.allclose(np.linalg.norm(store.text_embeddings, axis=1), 1, atol=1e-6)


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_and_gather(tmp_path: Path, fmt: str) -> None:
    images, _ = _vectors()
    store = EmbeddingStore.open(_write(tmp_path / "s", fmt=fmt).path)
    assert store.format == fmt
    if fmt == "int8":
        scales = np.load(tmp_path / "s" / "images_scale.npy")
        assert scales.shape == (N, K) and scales.dtype == np.float32
    rows = np.array([5, 0, 39, 5])
    for view in range(K):
        got = store.gather(rows, view)
        assert got.dtype == np.float32 and got.shape == (4, D)
        want = _unit(images[rows, view])
        cos = (got * want).sum(1) / np.linalg.norm(got, axis=1)
        assert cos.min() > {"float16": 0.9999, "float8_e4m3": 0.998, "int8": 0.9995}[fmt]
    if fmt == "float16":
        exact = _unit(images[rows, 1]).astype(np.float16).astype(np.float32)
        assert np.array_equal(store.gather(rows, 1), exact)
    assert np.array_equal(store.gather(rows, np.int64(2)), store.gather(rows, np.array(2)))
    per_row = store.gather(rows, np.array([0, 1, 2, 1]))
    assert np.array_equal(per_row[2], store.gather(np.array([39]), 2)[0])
    assert np.array_equal(per_row[3], store.gather(np.array([5]), 1)[0])


def test_ids_and_rows(tmp_path: Path) -> None:
    store = _write(tmp_path / "s")
    assert store.row_of("dom/cls2/img7.jpg") == 7
    assert store.rows_of(["dom/cls0/img10.jpg", "dom/cls1/img1.jpg"]).tolist() == [10, 1]
    assert store.rows_of([]).dtype == np.int64
    with pytest.raises(KeyError):
        store.row_of("nope.jpg")
    with pytest.raises(KeyError, match="1 id"):
        store.rows_of(["dom/cls0/img0.jpg", "nope.jpg"])
    with pytest.raises(IndexError):
        store.gather(np.array([N]))
    with pytest.raises(IndexError):
        store.gather(np.array([-1]))
    with pytest.raises(IndexError):
        store.gather(np.array([0]), K)
    with pytest.raises(ValueError):
        store.gather(np.array([0, 1]), np.array([0]))
    assert store.gather(np.array([], dtype=np.int64)).shape == (0, D)


def test_refuses_nan_rows_naming_the_image(tmp_path: Path) -> None:
    images, _ = _vectors()
    images[7, 2, 3] = np.nan
    with pytest.raises(StoreError, match=r"1 image.*img7\.jpg"):
        _write(tmp_path / "s", image_vectors=images)
    assert not (tmp_path / "s").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image_ids": ["same"] * N}, "duplicates"),
        ({"image_vectors": np.ones((N - 1, K, D), np.float32)}, "image_vectors must be"),
        ({"text_vectors": np.ones((C, D + 1), np.float32)}, "text_vectors must be"),
        ({"class_names": ["only one"]}, "text_vectors must be"),
        ({"fmt": "bfloat16"}, "unknown vector format"),
        ({"extra_meta": {"dim": 7}}, "may not override"),
    ],
)
def test_refuses_bad_input(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _write(tmp_path / "s", **change)


def test_zero_vector_cannot_be_normalised(tmp_path: Path) -> None:
    images, _ = _vectors()
    images[3] = 0
    with pytest.raises(StoreError, match="all-zero"):
        _write(tmp_path / "s", image_vectors=images)
    store = _write(tmp_path / "raw", image_vectors=images, normalize=False)
    assert store.meta["normalized"] is False
    assert not store.gather(np.array([3])).any()
    assert np.allclose(store.gather(np.array([4])), images[4, 0], rtol=1e-3, atol=1e-2)


def test_two_dimensional_input_means_one_view(tmp_path: Path) -> None:
    images, _ = _vectors()
    store = _write(tmp_path / "s", image_vectors=images[:, 0, :])
    assert store.views == 1


def test_atomic_replace_keeps_open_readers_working(tmp_path: Path) -> None:
    path = tmp_path / "s"
    old = _write(path, seed=0)
    before = old.gather(np.arange(N), 1)
    new = _write(path, seed=1, fmt="int8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no tmp or old left behind
    reopened = EmbeddingStore.open(path)
    assert reopened.meta["dataset_fingerprint"] == "data-fp-1" and reopened.format == "int8"
    assert np.array_equal(new.gather(np.arange(N)), reopened.gather(np.arange(N)))
    # the old memory map still reads the old vectors (its files are unlinked, not rewritten)
    assert np.array_equal(old.gather(np.arange(N), 1), before)


def test_racing_writers_of_one_store_all_succeed(tmp_path: Path) -> None:
    """Two harvests of one dataset into one cache finish together: both exports land."""
    import threading

    path = tmp_path / "s"
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def writer(seed: int) -> None:
        try:
            start.wait()
            for _ in range(10):
                _write(path, seed=seed)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no tmp or old left behind
    store = EmbeddingStore.open(path)
    assert store.meta["dataset_fingerprint"] in {f"data-fp-{i}" for i in range(4)}
    assert np.isfinite(store.gather(np.arange(N))).all()


def test_failed_write_leaves_the_old_store_untouched(tmp_path: Path) -> None:
    path = tmp_path / "s"
    _write(path, seed=0)
    with pytest.raises(TypeError):  # not JSON: fails after the arrays were written
        _write(path, seed=1, extra_meta={"bad": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    assert EmbeddingStore.open(path).meta["dataset_fingerprint"] == "data-fp-0"


def test_open_reports_missing_and_inconsistent_stores(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no embedding store"):
        EmbeddingStore.open(tmp_path / "absent")
    _write(tmp_path / "s")
    meta_path = tmp_path / "s" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "n_images": N + 1}))
    with pytest.raises(StoreError, match="inconsistent"):
        EmbeddingStore.open(tmp_path / "s")
    meta_path.write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(StoreError, match="format_version"):
        EmbeddingStore.open(tmp_path / "s")
    (tmp_path / "s" / "images.npy").write_bytes(b"garbage")
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="unreadable"):
        EmbeddingStore.open(tmp_path / "s")


@pytest.mark.parametrize("fmt", FORMATS)
def test_writer_fed_in_any_order_writes_what_write_writes(tmp_path: Path, fmt: str) -> None:
    """Vectors put one response at a time, out of order, make the same files as one write."""
    images, texts = _vectors()
    whole = _write(tmp_path / "whole", fmt=fmt)
    ids = [f"dom/cls{i % C}/img{i}.jpg" for i in range(N)]
    slots = [(row, view) for row in range(N) for view in range(K)]
    order = np.random.default_rng(1).permutation(len(slots))
    with StoreWriter(tmp_path / "parts", image_ids=ids, views=K, dim=D, fmt=fmt) as writer:
        for batch in np.array_split(order, 9):
            rows = [slots[i][0] for i in batch]
            views = [slots[i][1] for i in batch]
            writer.put(rows, views, images[rows, views])
        assert writer.complete
        path = writer.commit(
            text_vectors=texts, class_names=whole.class_names, prompts=whole.prompts,
            teacher="local:pseudo-clip", teacher_fingerprint="teacher-fp",
            dataset_fingerprint="data-fp-0",
        )  # fmt: skip
    store = EmbeddingStore.open(path)
    for name in ("images.npy", "texts.npy", "image_ids.json", "images_scale.npy"):
        a, b = tmp_path / "whole" / name, tmp_path / "parts" / name
        assert a.exists() == b.exists()
        assert not a.exists() or a.read_bytes() == b.read_bytes(), name
    assert np.array_equal(store.gather(np.arange(N), 2), whole.gather(np.arange(N), 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts", "whole"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_writer_leaves_out_rows_never_put(tmp_path: Path, fmt: str) -> None:
    """Rows left out (images that could not be decoded, so never bought) are not in the
    store: the others' files are those of a write of them alone, byte for byte."""
    images, texts = _vectors()
    ids = [f"dom/cls{i % C}/img{i}.jpg" for i in range(N)]
    out = [0, 7, 8, N - 1]
    kept = [i for i in range(N) if i not in out]
    whole = _write(tmp_path / "whole", fmt=fmt, image_ids=[ids[i] for i in kept],
                   image_vectors=images[kept])  # fmt: skip
    with StoreWriter(tmp_path / "parts", image_ids=ids, views=K, dim=D, fmt=fmt) as writer:
        writer.put_rows(1, images[1:7])
        writer.leave_out(out)  # after some rows are written, before others
        assert writer.image_ids == [ids[i] for i in kept] and not writer.complete
        writer.put_rows(6, images[9 : N - 1])  # rows now count without those left out
        writer.put_rows(0, images[1:7])
        path = writer.commit(
            text_vectors=texts, class_names=whole.class_names, prompts=whole.prompts,
            teacher="local:pseudo-clip", teacher_fingerprint="teacher-fp",
            dataset_fingerprint="data-fp-0",
        )  # fmt: skip
    for name in ("images.npy", "texts.npy", "image_ids.json", "images_scale.npy"):
        a, b = tmp_path / "whole" / name, tmp_path / "parts" / name
        assert a.exists() == b.exists()
        assert not a.exists() or a.read_bytes() == b.read_bytes(), name
    assert EmbeddingStore.open(path).image_ids == [ids[i] for i in kept]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts", "whole"]


def test_writer_refuses_a_missing_view_and_leaves_nothing(tmp_path: Path) -> None:
    images, texts = _vectors()
    ids = [f"img{i}.jpg" for i in range(N)]
    with StoreWriter(tmp_path / "s", image_ids=ids, views=K, dim=D) as writer:
        writer.put_rows(0, images[:12])
        writer.put([12] * (K - 1), list(range(K - 1)), images[12, : K - 1])  # one view short
        writer.put_rows(13, images[13:])
        assert not writer.complete
        assert any(p.name.startswith("s.tmp-") for p in tmp_path.iterdir())  # written as fed
        with pytest.raises(StoreError, match=r"1 image.*img12\.jpg"):
            writer.commit(
                text_vectors=texts, class_names=[str(c) for c in range(C)],
                prompts=[str(c) for c in range(C)], teacher="t", teacher_fingerprint="t",
                dataset_fingerprint="d",
            )  # fmt: skip
    assert list(tmp_path.iterdir()) == []
    with StoreWriter(tmp_path / "s", image_ids=ids, views=K, dim=D):
        pass  # never fed
    assert list(tmp_path.iterdir()) == []


def test_write_in_blocks_is_the_normalised_float16_matrix(tmp_path: Path) -> None:
    n = WRITE_BLOCK_ROWS + 3  # more than one block
    images = np.random.default_rng(2).standard_normal((n, 2, 8)).astype(np.float32)
    EmbeddingStore.write(
        tmp_path / "s", image_ids=[str(i) for i in range(n)], image_vectors=images,
        text_vectors=np.ones((1, 8), np.float32), class_names=["c"], prompts=["p"],
        teacher="t", teacher_fingerprint="t", dataset_fingerprint="d",
    )  # fmt: skip
    expected = (images / np.linalg.norm(images, axis=-1, keepdims=True)).astype(np.float16)
    assert np.array_equal(np.load(tmp_path / "s" / "images.npy"), expected)


@pytest.mark.parametrize("damage", ["bit flipped in the matrix", "ids swapped", "texts replaced"])
def test_a_changed_file_is_refused_on_open(tmp_path: Path, damage: str) -> None:
    """Before 2026-12-06 only shapes were checked: a flipped bit in images.npy or two ids
    swapped in image_ids.json opened fine and trained on wrong targets, silently."""
    _write(tmp_path / "s", fmt="int8")
    root = tmp_path / "s"
    meta = json.loads((root / "meta.json").read_text())
    assert sorted(meta["checksums"]) == [
        "image_ids.json", "images.npy", "images_scale.npy", "texts.npy"
    ]
    if damage == "bit flipped in the matrix":
        data = bytearray((root / "images.npy").read_bytes())
        data[-7] ^= 0x10
        (root / "images.npy").write_bytes(bytes(data))
        name = "images.npy"
    elif damage == "ids swapped":
        ids = json.loads((root / "image_ids.json").read_text())
        ids[0], ids[1] = ids[1], ids[0]
        (root / "image_ids.json").write_text(json.dumps(ids))
        name = "image_ids.json"
    else:
        np.save(root / "texts.npy", np.ones((C, D), np.float32))
        name = "texts.npy"
    with pytest.raises(StoreError, match=f"is damaged: {name} no longer match"):
        EmbeddingStore.open(root)


def test_a_store_written_before_checksums_still_opens(tmp_path: Path) -> None:
    _write(tmp_path / "s")
    meta_path = tmp_path / "s" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["checksums"]
    meta_path.write_text(json.dumps(meta))
    assert len(EmbeddingStore.open(tmp_path / "s")) == N


@pytest.mark.parametrize("damage", ["no class_names", "no prompts", "a list", "nested deep"])
def test_a_meta_json_without_its_keys_is_unreadable_not_a_crash(
    tmp_path: Path, damage: str
) -> None:
    """A meta.json without class_names was a KeyError traceback (until 2026-12-06)."""
    _write(tmp_path / "s")
    meta_path = tmp_path / "s" / "meta.json"
    meta = json.loads(meta_path.read_text())
    if damage == "a list":
        meta_path.write_text(json.dumps([meta]))
    elif damage == "nested deep":  # json.loads raised RecursionError (until 2026-12-06)
        meta_path.write_text("[" * 100_000 + "]" * 100_000)
    else:
        del meta[damage.removeprefix("no ")]
        meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="unreadable"):
        EmbeddingStore.open(tmp_path / "s")
