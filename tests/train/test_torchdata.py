"""Per-domain batches, reproducible streams, rank shards, teacher views and store targets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from distill.data import scan
from distill.data.loaders import DomainBatchSampler, load_image, train_loader
from distill.data.views import view_array


def test_each_step_has_batch_per_domain_from_every_domain() -> None:
    groups = [list(range(0, 10)), list(range(10, 13))]
    s = DomainBatchSampler(groups, 4, views=3, seed=1)
    it = iter(s)
    for _ in range(5):
        batch = next(it)
        doms = Counter(0 if i < 10 else 1 for i, _ in batch)
        assert doms == {0: 4, 1: 4}
        assert all(0 <= v < 3 for _, v in batch)
    # One epoch of a domain visits each of its images once.
    s2 = DomainBatchSampler([list(range(8))], 4, seed=3)
    assert sorted(i for i, _ in s2.batch_at(0) + s2.batch_at(1)) == list(range(8))


def test_stream_is_seeded_and_resumable() -> None:
    groups = [list(range(7)), list(range(7, 20))]
    a = DomainBatchSampler(groups, 5, views=2, seed=0)
    steps = [b for b, _ in zip(a, range(6), strict=False)]
    b = DomainBatchSampler(groups, 5, views=2, seed=0, start_step=4)
    assert next(iter(b)) == steps[4]
    c = DomainBatchSampler(groups, 5, views=2, seed=1)
    assert next(iter(c)) != steps[0]


def test_rank_shards_are_disjoint() -> None:
    groups = [list(range(12))]
    seen = []
    for rank in range(2):
        s = DomainBatchSampler(groups, 6, rank=rank, world_size=2, seed=0)
        seen.append({i for i, _ in s.batch_at(0)})
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(12))


def test_student_sees_the_teachers_view_pixels(tiny_data: Path) -> None:
    ds = scan(tiny_data)
    s = ds.samples[0]
    for view in (0, 1, 2):
        want = view_array(Image.open(s.path), s.id, view, hflip=ds.hflip)
        got = load_image(s, view, want.shape[0], hflip=ds.hflip)
        assert got.dtype == np.uint8
        assert np.array_equal(got.transpose(1, 2, 0), want)
    assert load_image(s, 1, 16).shape == (3, 16, 16)


def test_loader_gathers_targets_of_the_batch_views(tiny_data: Path, tiny_cache: Path) -> None:
    from cache.store import EmbeddingStore

    ds = scan(tiny_data)
    store = EmbeddingStore.open(tiny_cache / "stores" / "s1")
    samples = list(ds.samples)
    rows = store.rows_of([s.id for s in samples])
    groups = [[i for i, s in enumerate(samples) if s.domain == d] for d in ds.domains]
    loader = train_loader(samples, groups, image_size=16, batch_per_domain=2, store=store,
                          rows=rows, views=2, seed=0)
    batch = next(iter(loader))
    assert batch["image"].dtype.is_floating_point is False
    assert batch["image"].shape == (6, 3, 16, 16)
    for i, idx in enumerate(batch["index"].tolist()):
        v = int(batch["view"][i])
        want = store.gather(np.array([rows[idx]]), v)[0]
        assert np.allclose(batch["image_t"][i].numpy(), want)
        assert batch["label"][i] == samples[idx].label


def test_pixel_cache_serves_the_same_pixels_without_decoding_again(
    tiny_data: Path, tmp_path: Path
) -> None:
    import shutil

    from distill.data.loaders import PixelCache

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    ds = scan(data)
    samples = list(ds.samples)
    groups = [[i for i, s in enumerate(samples) if s.domain == d] for d in ds.domains]

    def stream(cache: PixelCache | None, steps: int) -> list[np.ndarray]:
        loader = train_loader(samples, groups, image_size=16, batch_per_domain=2, store=None,
                              rows=np.arange(len(samples)), views=3, seed=0, cache=cache)
        it = iter(loader)
        return [next(it)["image"].numpy() for _ in range(steps)]

    plain = stream(None, 12)
    cache = PixelCache()
    first = stream(cache, 12)
    assert all(np.array_equal(a, b) for a, b in zip(plain, first, strict=True))
    kept = len(cache)
    assert kept > 0 and cache.size == kept * 3 * 16 * 16
    # Every image file gone: the stream is made from the cache alone, the same pixels.
    for s in samples:
        s.path.unlink()
    again = stream(cache, 12)
    assert all(np.array_equal(a, b) for a, b in zip(plain, again, strict=True))
    # A budget smaller than one image keeps nothing and still serves (decoding each time).
    tiny = PixelCache(max_bytes=3 * 16 * 16 - 1)
    assert tiny.get(("x", 0, 16, True), lambda: np.zeros((3, 16, 16), np.uint8)).shape \
        == (3, 16, 16)
    assert len(tiny) == 0 and tiny.size == 0
