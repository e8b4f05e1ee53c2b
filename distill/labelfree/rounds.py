"""Budget-aware harvest in rounds: buy a first batch, train the student briefly on what was
bought, let :mod:`distill.labelfree.selection` pick the next images, repeat until the
budget is used.

Used when the budget cannot cover every image. The money guarantee is the client's Budget
(every request reserves its worst case first), so no round can overspend; the per-round
quota only spreads the budget over the rounds. Resumable: the images picked for each
round are written to a state file before they are bought, so a run stopped by a crash or
the budget re-buys nothing (the cache answers) and picks nothing twice. The state records
the settings that decide the picks (:data:`SETTING_FLAGS`): a resume with others is
refused (:func:`resume_conflict`), not mixed into the same manifest.

The in-between student is a small timm model trained for ``round_steps`` steps on the
teacher's zero-shot probabilities (softmax of 100 * cos(image, class prompt)), optionally
plus the true labels when the data has them. It only steers selection: the real training
run is ``vlm-distill train`` on the bought subset afterwards. It is trained as the trainer
trains (:func:`train_student`): BatchNorm frozen at its ImageNet statistics (when the
student is pretrained), Adam at lr 5e-4 after a linear warm-up, and each batch augmented
with the harvest's view recipe (random resized crop, brightness, contrast; no flip).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cache import SELECT_DIR, atomic_write, plain
from distill.data import Dataset, Sample, class_prompts
from distill.data.views import pixels_decode
from distill.harvest import refused_prompts
from distill.labelfree.pseudolabel import sample_image
from distill.labelfree.selection import STRATEGIES, select
from distill.teacher.zeroshot import zeroshot_probs
from distill.workers import off_loop
from vlmclient import (
    BadRequestError,
    BudgetExceededError,
    ConfigurationError,
    ImageEmbeddingRequest,
    InputError,
    InputTooLongError,
    TeacherClient,
    TextEmbeddingRequest,
)

if TYPE_CHECKING:  # torch is imported where it is used: this module loads without it
    import torch

    from distill.train.student import Student

__all__ = [
    "STATE_VERSION",
    "RoundsResult",
    "budget_left",
    "harvest_rounds",
    "jitter",
    "load_pixels",
    "predict_probs",
    "read_state",
    "resume_conflict",
    "selection_settings",
    "sendable",
    "state_path",
    "train_student",
]

STATE_VERSION = 1
DEFAULT_STUDENT = "mobilenetv3_small_100"
PRICE_SAMPLE = 8  # images priced to estimate what one more image costs
# What a stop signal loses while the in-between student is trained (off the event loop):
STOPPED_STEERING = (
    "while the student that picks the next images was trained (no request was in flight): "
    "every answer received is cached; run again to resume"
)


@dataclass
class RoundsResult:
    """What a round-based harvest bought, per round, and why it stopped."""

    picked: list[list[str]] = field(default_factory=list)  # image ids per round
    bought_ids: list[str] = field(default_factory=list)
    spent_usd: Decimal = Decimal(0)  # this run
    stopped_by_budget: str | None = None
    # the budget bought some rounds and no more image, with rounds left (more --rounds than
    # images it buys: one image a round): what --budget asks, not a stop
    budget_spent: str | None = None
    rounds_done: int = 0
    per_image_usd: Decimal = Decimal(0)
    state_file: Path | None = None
    # (class, reason) of the class prompts refused as too long: no image was bought
    failed: list[tuple[str, str]] = field(default_factory=list)


def state_path(cache_dir: Path, teacher: str, dataset: Dataset, strategy: str) -> Path:
    """The state file of one (dataset, teacher, strategy) selection run."""
    import re

    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{dataset.root.name}-{teacher}-{strategy}")
    return cache_dir / SELECT_DIR / f"{slug}-{dataset.fingerprint()[:12]}.json"


def read_state(path: Path) -> dict[str, Any]:
    """The selection state in ``path`` (a new one when there is none); ConfigurationError
    (one line, before anything is bought) when it cannot be read or is not one."""
    if not path.is_file():
        return {"version": STATE_VERSION, "picked": [], "rounds_done": 0, "spent_usd": "0"}
    try:
        state = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _bad_state(path, f"cannot be read ({exc})") from None
    if not isinstance(state, dict):
        raise _bad_state(path, "is not a JSON object")
    if state.get("version") != STATE_VERSION:
        raise _bad_state(path, f"has an unknown version {state.get('version')!r}")
    picked = state.get("picked")
    if not isinstance(picked, list) or not all(
        isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in picked
    ):
        raise _bad_state(path, "lists no picked rounds (a list of lists of image ids)")
    try:
        Decimal(str(state.get("spent_usd", "0")))
        int(state.get("rounds_done", 0))
    except (ArithmeticError, TypeError, ValueError):
        raise _bad_state(path, "has a spent_usd or rounds_done that is not a number") from None
    if not isinstance(state.get("settings", {}), dict):
        raise _bad_state(path, "has settings that are not a JSON object")
    return state


def _bad_state(path: Path, why: str) -> ConfigurationError:
    return ConfigurationError(
        f"the selection state {path} {why}; move it aside to start a new selection (the "
        "images bought stay cached)"
    )


# the settings that decide which images a round picks, with the harvest flag that sets each
SETTING_FLAGS = {
    "rounds": "--rounds",
    "round_steps": "--round-steps",
    "seed": "--seed",
    "student": "--select-student",
    "image_size": "--select-image-size",
    "use_labels": "--select-labels",
    "prompt": "--prompt",
    "pretrained": "pretrained",
}


def selection_settings(
    *,
    rounds: int,
    round_steps: int,
    seed: int,
    student: str,
    image_size: int,
    use_labels: bool,
    prompt: str,
    pretrained: bool = False,
) -> dict[str, Any]:
    """The settings a selection state records (keys of :data:`SETTING_FLAGS`)."""
    return {"rounds": rounds, "round_steps": round_steps, "seed": seed, "student": student,
            "image_size": image_size, "use_labels": use_labels, "prompt": prompt,
            "pretrained": pretrained}  # fmt: skip


def resume_conflict(path: Path, state: dict[str, Any], settings: dict[str, Any]) -> str | None:
    """Why a run with ``settings`` may not resume the selection ``state`` read from
    ``path`` (rounds picked with other settings: the two would mix in one manifest), or
    None. A state written before the settings were recorded has only its ``rounds``."""
    if not state["picked"]:
        return None
    recorded = state.get("settings", {"rounds": state["rounds"]} if "rounds" in state else {})
    differ = [
        f"{SETTING_FLAGS.get(k, k)} {recorded[k]!r} (this run: {v!r})"
        for k, v in settings.items()
        if k in recorded and recorded[k] != v
    ]
    if not differ:
        return None
    return (
        f"the selection state {path} was made with {', '.join(differ)}; its "
        f"{len(state['picked'])} picked round(s) would mix with this run's in one manifest. "
        "Rerun with its flags to resume it, or move the file aside to start a new selection "
        "(the images bought stay cached)"
    )


def write_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(state, indent=1) + "\n")  # a kill leaves old or new


# ------------------------------------------------------------------ the in-between student


def load_pixels(
    dataset: Dataset, size: int, check: Callable[[], None] | None = None
) -> torch.Tensor:
    """uint8 (N, 3, size, size) tensor of every sample's view 0; zeros for a file whose
    pixels cannot be read (the teacher cannot read it either: it is never bought).
    ``check()`` before each file (it raises to stop: :func:`distill.workers.off_loop`)."""
    import torch

    from distill.data import DataError
    from distill.data.loaders import load_image

    def pixels(s: Sample) -> np.ndarray:
        if check is not None:
            check()
        try:
            return load_image(s, 0, size, hflip=dataset.hflip)
        except (DataError, OSError):
            return np.zeros((3, size, size), np.uint8)

    return torch.from_numpy(np.stack([pixels(s) for s in dataset.samples]))


def jitter(pixels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image of a uint8 batch (B, 3, H, W) through the harvest's view recipe
    (:mod:`distill.data.views`) without its flip: a random resized crop (area 70-100 %,
    aspect ratio 3/4-4/3, resized back bilinearly), then brightness and contrast factors
    in [0.7, 1.3]; drawn from ``gen``, computed in torch for a whole batch at once. Close
    to the views' distribution, not the same: a crop side over the image's is clipped
    here where the views retry, and the pixels differ (the views' are keyed by image id).

    >>> import torch
    >>> x = torch.full((2, 3, 8, 8), 100, dtype=torch.uint8)
    >>> y = jitter(x, torch.Generator().manual_seed(0))
    >>> y.shape, y.dtype
    (torch.Size([2, 3, 8, 8]), torch.uint8)
    """
    import torch
    import torch.nn.functional as F

    from distill.data.views import BRIGHTNESS, CONTRAST, RATIO, SCALE

    b = pixels.shape[0]
    u = torch.rand(b, 6, generator=gen)
    area = SCALE[0] + (SCALE[1] - SCALE[0]) * u[:, 0]
    log_lo, log_hi = math.log(RATIO[0]), math.log(RATIO[1])
    ratio = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
    w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop size as a fraction of the side
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = w, h
    theta[:, 0, 2] = (1 - w) * (2 * u[:, 2] - 1)  # the crop's centre, anywhere it fits
    theta[:, 1, 2] = (1 - h) * (2 * u[:, 3] - 1)
    x = pixels.float()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    brightness = 1 - BRIGHTNESS + 2 * BRIGHTNESS * u[:, 4]
    x = (x * brightness.view(b, 1, 1, 1)).clamp(0, 255)
    # contrast blends with the mean grey level (ITU-R 601 luma), as the views do
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    mean = (x * luma).sum(dim=1, keepdim=True).mean(dim=(2, 3), keepdim=True)
    contrast = (1 - CONTRAST + 2 * CONTRAST * u[:, 5]).view(b, 1, 1, 1)
    return (mean + (x - mean) * contrast).clamp(0, 255).round().to(torch.uint8)


def train_student(
    pixels: torch.Tensor,
    targets: np.ndarray,
    *,
    labels: Sequence[int] | None = None,
    steps: int = 30,
    student: str = DEFAULT_STUDENT,
    pretrained: bool = False,
    batch_size: int = 32,
    lr: float = 5e-4,
    seed: int = 0,
    freeze_bn: bool | None = None,
    augment: bool = True,
    warmup: int | None = None,
    average: float = 0.0,
    check: Callable[[], None] | None = None,
) -> Student:
    """Train a fresh student for ``steps`` steps on soft ``targets`` (N, C) [+ CE on labels].

    ``pixels`` are uint8 (N, 3, H, W). As the trainer does by default: BatchNorm in eval
    mode (``freeze_bn``, by default when the student starts from packaged weights: it keeps
    the ImageNet statistics;
    a randomly initialised student has none to keep, so it trains them; trained BatchNorm
    cost the trainer's pretrained students 19-40 points out of domain) and lr 5e-4 (at
    1e-3 with frozen BatchNorm one seed in three collapsed to chance);
    ``augment`` passes each batch through :func:`jitter` (the target stays the image's
    own). The learning rate rises linearly over the first ``warmup`` steps (default: a
    tenth of ``steps``): Adam's first step moves every weight by about the full lr
    whatever its gradient, and with frozen BatchNorm that step could leave the network
    dead (constant output, loss stuck at ln C; seen in the budget curve, 1 run of 30).
    ``average`` (0 to 1): the returned weights are the uniform mean of the weights after
    each of the last ``average`` x ``steps`` steps (stochastic weight averaging over the
    run's tail, with :class:`distill.train.swad.Average`; 0 = the last step's weights).
    Trained BatchNorm statistics are then re-estimated for the mean weights over the
    images (:func:`distill.train.swad.update_bn`); frozen ones stay ImageNet's.
    ``check()`` before each step (it raises to stop: :func:`distill.workers.off_loop`).
    Returns the student in eval mode.
    """
    import torch
    import torch.nn.functional as F

    from distill.train.config import warmup_factor
    from distill.train.evaluate import to_input
    from distill.train.optim import adam
    from distill.train.student import build_student, norm_stats, starts_from_weights
    from distill.train.swad import Average, update_bn
    from distill.train.task import freeze_batchnorm

    if not 0.0 <= average <= 1.0:
        raise ValueError(f"average must be in [0, 1], not {average}")
    torch.manual_seed(seed)
    model = build_student(student, method="kd", num_classes=targets.shape[1], pretrained=pretrained)
    mean, std = norm_stats(model.backbone)
    opt = adam(model.parameters(), lr=lr)
    ramp = max(1, steps // 10) if warmup is None else max(1, warmup)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: warmup_factor(k, ramp))
    soft = torch.from_numpy(np.asarray(targets, dtype=np.float32))
    y = None if labels is None else torch.as_tensor(list(labels), dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    n = len(pixels)
    model.train()
    bn_frozen = (
        starts_from_weights(student, pretrained=pretrained) if freeze_bn is None else freeze_bn
    )
    if bn_frozen:
        freeze_batchnorm(model.backbone)
    mean_weights = Average() if average > 0 and steps > 0 else None
    first_averaged = steps - max(1, round(average * steps))
    # one image alone is a batch BatchNorm cannot train on (one value per channel once its
    # maps are 1x1: a traceback after a round bought one image): it is drawn twice
    size = max(min(batch_size, n), min(batch_size, 2))
    for step in range(steps):
        if check is not None:
            check()
        idx = torch.randint(0, n, (size,), generator=gen)
        batch = jitter(pixels[idx], gen) if augment else pixels[idx]
        logits = model(to_input(batch, mean, std))
        loss = F.cross_entropy(logits, soft[idx])  # soft-target cross-entropy = KD
        if y is not None:
            loss = 0.5 * loss + 0.5 * F.cross_entropy(logits, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        if mean_weights is not None and step >= first_averaged:
            mean_weights.update(dict(model.named_parameters()))
    if mean_weights is not None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(mean_weights.params[name])
        if not bn_frozen:
            batches = (
                to_input(pixels[s : s + batch_size], mean, std) for s in range(0, n, batch_size)
            )
            update_bn(model, batches, math.ceil(n / batch_size))
    model.eval()
    return model


def predict_probs(model: Student, pixels: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Softmax class probabilities (N, C) of a student from :func:`train_student`."""
    import torch

    from distill.train.evaluate import to_input
    from distill.train.student import norm_stats

    mean, std = norm_stats(model.backbone)  # as train_student normalised its inputs
    out = []
    with torch.no_grad():
        for s in range(0, len(pixels), batch_size):
            out.append(torch.softmax(model(to_input(pixels[s : s + batch_size], mean, std)), 1))
    return torch.cat(out).numpy() if out else np.zeros((0, model.num_classes), np.float32)


def _steer(
    pixels: torch.Tensor,
    bought: list[int],
    targets: np.ndarray,
    labels: list[int] | None,
    steps: int,
    student: str,
    pretrained: bool,
    seed: int,
    check: Callable[[], None],
) -> np.ndarray:
    """Every image's class probabilities by a student trained on the ``bought`` ones."""
    model = train_student(
        pixels[bought],
        targets,
        labels=labels,
        steps=steps,
        student=student,
        pretrained=pretrained,
        seed=seed,
        check=check,
    )
    return predict_probs(model, pixels)


# ------------------------------------------------------------------------------ rounds


async def harvest_rounds(
    dataset: Dataset,
    client: TeacherClient,
    *,
    cache_dir: Path,
    strategy: str,
    rounds: int = 3,
    round_steps: int = 30,
    prompt: str = "a photo of a {}",
    student: str = DEFAULT_STUDENT,
    pretrained: bool = False,
    image_size: int = 32,
    use_labels: bool = False,
    seed: int = 0,
    on_round: Callable[[int, list[str]], None] | None = None,
) -> RoundsResult:
    """Buy image embeddings in ``rounds`` rounds, each picked by ``strategy`` (see above).

    Round 0 is a random sample (there is no student yet); later rounds train the student
    on everything bought so far and select among the rest. The class prompts are bought
    first (the student's targets need them): when some are refused as too long for the
    teacher, they are listed in ``failed`` and no image is bought.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown selection {strategy!r}; choose from {sorted(STRATEGIES)}")
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    if not dataset.class_names:
        raise ValueError("selection needs class names (a class file for unlabelled data)")
    state_file = state_path(cache_dir, client.teacher, dataset, strategy)
    result = RoundsResult(state_file=state_file)
    state = read_state(state_file)
    settings = selection_settings(
        rounds=rounds, round_steps=round_steps, seed=seed, student=student,
        image_size=image_size, use_labels=use_labels, prompt=prompt, pretrained=pretrained,
    )  # fmt: skip
    conflict = resume_conflict(state_file, state, settings)
    if conflict is not None:  # harvest --select says so before the client opens
        raise ValueError(conflict)
    state.update(strategy=strategy, rounds=rounds, teacher=client.teacher,
                 dataset_fingerprint=dataset.fingerprint(), settings=settings)  # fmt: skip
    spent_before = Decimal(state.get("spent_usd", "0"))
    row_of = {s.id: i for i, s in enumerate(dataset.samples)}

    def save() -> None:
        state["spent_usd"] = str(spent_before + client.budget.spent)
        write_state(state_file, state)

    try:
        texts = await client.embed_texts(
            [TextEmbeddingRequest(text=p) for p in class_prompts(dataset.class_names, prompt)]
        )
    except BudgetExceededError as exc:
        result.stopped_by_budget = str(exc)
        save()
        return result
    except asyncio.CancelledError:  # a stop signal: what it bought (and lost) is spent
        save()
        raise
    except InputTooLongError as exc:
        # the others are bought and cached; the student's targets need every class, so no
        # image is picked until the long ones are shortened (a rerun alone fails the same)
        result.failed = refused_prompts(exc, dataset.class_names)
        save()
        return result
    text = np.stack([t.vector for t in texts])
    vectors: dict[int, np.ndarray] = {}
    requests = {}

    def make(row: int) -> ImageEmbeddingRequest:
        return ImageEmbeddingRequest(image=sample_image(dataset.samples[row], dataset.hflip))

    def request(row: int) -> ImageEmbeddingRequest:
        if row not in requests:
            requests[row] = make(row)
        return requests[row]

    counted: set[str] = set()  # keys of the new images picked: a copy of one is free too

    def is_new(row: int) -> bool:  # not cached (nor refused before sending): it costs
        ready = list(sendable(client, [request(row)]))
        if not ready:
            return False
        requests[row] = ready[0]  # kept prepared: the purchase does not downscale it again
        key = client.cache_key("image_embedding", ready[0])
        if key in counted or client.plan("image_embedding", ready)[0] == 0:
            return False
        counted.add(key)
        return True

    unreadable: set[int] = set()  # rows whose pixels the teacher refused: never bought

    async def buy(rows: list[int]) -> bool:
        limit = client.batch_limit("image_embedding")
        for s in range(0, len(rows), limit):
            chunk = rows[s : s + limit]
            try:
                try:
                    out = await client.embed_images([request(r) for r in chunk])
                except (BadRequestError, InputError):
                    # a file whose pixels do not decode makes a provider refuse its whole
                    # request (or the client, when it must be downscaled before sending):
                    # it is left out, its batch-mates are asked again (cached if sent)
                    good = [r for r in chunk if pixels_decode(request(r).image.data)]
                    if len(good) == len(chunk):
                        raise
                    unreadable.update(set(chunk) - set(good))
                    chunk = good
                    out = await client.embed_images([request(r) for r in chunk]) if chunk else []
            except BudgetExceededError as exc:
                result.stopped_by_budget = str(exc)
                return False
            except asyncio.CancelledError:
                # a stop signal mid-round: the state keeps what the round bought and what
                # was in flight (recorded at its reservation), not the spend at its pick
                save()
                raise
            vectors.update({r: o.vector for r, o in zip(chunk, out, strict=True)})
        return True

    # Rounds already picked (a resumed run): buy them again; the cache answers for free.
    for r, ids in enumerate(state["picked"]):
        if not await buy([row_of[i] for i in ids if i in row_of]):
            save()
            return _finish(result, state, dataset, vectors, client)
        result.rounds_done = r + 1
        # a round the stopped run picked and this one finished is done (it stayed 1 below)
        state["rounds_done"] = max(state.get("rounds_done", 0), r + 1)
    pixels = None
    sample_rows = list(range(len(dataset.samples)))
    for r in range(len(state["picked"]), rounds):
        left = [i for i in sample_rows if i not in vectors and i not in unreadable]
        result.per_image_usd = _price_one(client, left, make)
        remaining = budget_left(client)
        if remaining is None or result.per_image_usd <= 0:
            affordable = len(left)
        else:
            affordable = int(remaining / result.per_image_usd)
        quota = min(len(left), math.ceil(affordable / (rounds - r)))
        if not left:  # every image is bought: nothing to stop
            break
        if quota <= 0:  # images are left, but not the money for one of them
            why = (
                f"{len(left)} images not bought: the ${remaining} left of the budget does "
                f"not cover one more (up to ${result.per_image_usd} each); what was bought "
                f"is cached: {_raise_cap(client, remaining)}"
            )
            if r == 0:  # the budget buys no image at all
                result.stopped_by_budget = why
            else:
                result.budget_spent = why
            break
        if r == 0 or not vectors:
            choose = partial(select, "random", np.zeros((len(dataset.samples), 1)), seed=seed)
            picked = _pick_new(choose, left, [], quota, is_new)
        else:
            # off the event loop: a stop signal then stops it at once, instead of waiting
            # unseen until it ended and cancelling the next round's requests once sent
            # (billed, their answers lost)
            if pixels is None:
                pixels = await off_loop(
                    lambda check: load_pixels(dataset, image_size, check), STOPPED_STEERING
                )
            bought = sorted(vectors)
            targets = zeroshot_probs(np.stack([vectors[i] for i in bought]), text)
            labels = None
            known = [dataset.samples[i].label for i in bought]
            if use_labels and all(y is not None for y in known):
                labels = [y for y in known if y is not None]  # all of them: checked above
            probs = await off_loop(
                partial(_steer, pixels, bought, targets, labels, round_steps, student,
                        pretrained, seed + r),
                STOPPED_STEERING,
            )  # fmt: skip
            choose = partial(select, strategy, probs, seed=seed + r)
            picked = _pick_new(choose, left, bought, quota, is_new)
        ids = [dataset.samples[i].id for i in picked]
        state["picked"].append(ids)
        save()  # picked before bought: a crash mid-round resumes the same images
        ok = await buy(picked)
        if on_round is not None:
            on_round(r, ids)
        if not ok:
            break
        result.rounds_done = r + 1
        state["rounds_done"] = result.rounds_done
        save()
    save()
    return _finish(result, state, dataset, vectors, client)


def _pick_new(
    choose: Callable[..., list[int]],
    left: list[int],
    chosen: list[int],
    quota: int,
    is_new: Callable[[int], bool],
) -> list[int]:
    """The rows ``choose(candidates, chosen, k)`` picks, in its order, until ``quota`` of
    them are new (not cached) or none is left. A cached pick costs nothing, so it does not
    count against the round's share: counted, a round whose picks were half cached bought
    half its share and the selection ended with money unspent. Each further call asks for
    as many rows as picked so far (at least the number still needed): few calls when most
    picks are cached."""
    picked: list[int] = []
    need = quota
    while need > 0:
        taken = set(picked)
        candidates = [i for i in left if i not in taken]
        if not candidates:
            break
        for row in choose(candidates, chosen + picked, max(need, len(picked))):
            picked.append(row)
            need -= int(is_new(row))
            if need == 0:
                break
    return picked


def sendable(
    client: TeacherClient, requests: Iterable[ImageEmbeddingRequest]
) -> Iterator[ImageEmbeddingRequest]:
    """The requests the client can prepare for sending, prepared (one it refuses, an
    image too large to send as it is whose pixels do not decode, is never bought: it
    costs nothing, and pricing it would raise). A prepared request prepares to itself:
    priced, it is not downscaled again."""
    for req in requests:
        try:
            ready = client.prepare(req)
        except InputError:
            continue
        yield ready


def _price_one(
    client: TeacherClient, left: list[int], make: Callable[[int], ImageEmbeddingRequest]
) -> Decimal:
    """Worst-case price of one more image, from the first ``PRICE_SAMPLE`` of ``left`` not
    cached (a cached image is free: priced from the first images left, all cached when
    another run had bought them, one more image was $0 and a round's quota every image
    left); $0 when every image left is cached. The requests priced are not kept."""
    n_new, cost = 0, Decimal(0)
    for s in range(0, len(left), PRICE_SAMPLE):
        chunk = (make(i) for i in left[s : s + PRICE_SAMPLE])
        n, c = client.plan("image_embedding", sendable(client, chunk))
        n_new, cost = n_new + n, cost + c
        if n_new >= PRICE_SAMPLE:
            break
    return cost / max(1, n_new)


def budget_left(client: TeacherClient) -> Decimal | None:
    """What a selection plans to spend: what is left of the shared --budget for every run
    (None: no cap). This run's own --run-budget then stops it part-way (exit 3) and a
    rerun goes on, as a plain harvest buys a large job in slices; planned on the run cap,
    every round fitted into it and the selection ended, the rest of --budget never used."""
    shared = getattr(client.budget, "shared_remaining", None)
    return client.budget.remaining if shared is None else shared


def _raise_cap(client: TeacherClient, remaining: Decimal | None) -> str:
    """What to raise: this run's cap (a shared budget's ``--run-budget``) when it is the one
    that leaves too little (a rerun under it stops the same), else the budget."""
    budget = client.budget
    run_cap = budget.cap  # a SharedBudget's run cap; its shared one is ``total``
    shared = getattr(budget, "total", None) is not None
    if shared and run_cap is not None and run_cap - budget.spent - budget.reserved == remaining:
        return f"raise --run-budget ${plain(run_cap)} (it caps each run) and run again"
    return "raise the budget and run again"


def _finish(
    result: RoundsResult,
    state: dict[str, Any],
    dataset: Dataset,
    vectors: dict[int, np.ndarray],
    client: TeacherClient,
) -> RoundsResult:
    result.picked = [list(p) for p in state["picked"]]
    result.bought_ids = [dataset.samples[i].id for i in sorted(vectors)]
    result.spent_usd = client.budget.spent
    return result
