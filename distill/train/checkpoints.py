"""Checkpoints of a training run and resuming from them.

``<run>/checkpoint/`` holds the student's weights (``model.safetensors``), the best weights
of the current stage so far (``best.safetensors``, when ``select="best_id"``), the optimizer
and torch RNG state (``optim.pt``), the current stage's own state (``stage.safetensors`` and
``state.json``'s ``stage_state``: SWAD's loss valley and its averages, Align's stopping rule,
P before Align) and where the run stands (``state.json``: stage, step, the evaluation
history, the notes of finished stages, the checkpoint's other files: a copy that lost one
is refused, not resumed without it). A resumed stage so ends as an uninterrupted one.
A save builds ``checkpoint.tmp``, syncs it to disk and swaps it in (one atomic exchange
where the system has it, else two renames mended by :func:`recover_checkpoint`), so a kill
or a power cut at any moment leaves one complete checkpoint.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cache import atomic_write, fsync_directory, leftover_name
from cache.swap import exchange
from distill.train.config import CONFIG_FILE, TrainConfig
from distill.train.distributed import barrier
from distill.train.evaluate import RUN_FILE, WEIGHTS_FILE
from distill.train.student import Student, starts_from_weights
from vlmclient.errors import ConfigurationError, VLMError

__all__ = [
    "CHECKPOINT_DIR",
    "RESUME_MAY_CHANGE",
    "SELECTION_DIGITS",
    "STATE_FILE",
    "CheckpointWriteError",
    "RunState",
    "check_checkpoint",
    "check_same_settings",
    "recover_checkpoint",
    "resume_or_start",
    "run_lock",
    "save_checkpoint",
    "save_weights",
    "save_weights_replacing",
    "selection_key",
    "state_dict",
    "truncate_log",
    "write_final_student",
    "write_json",
]

# The trainer's logger: the name its messages carried before this module was split off.
log = logging.getLogger("distill.train.trainer")

CHECKPOINT_DIR = "checkpoint"
BEST_FILE = "best.safetensors"
STAGE_FILE = "stage.safetensors"
OPTIM_FILE = "optim.pt"
STATE_FILE = "state.json"
FILES_KEY = "files"  # state.json: the checkpoint's other files (a resume checks them)
_CHECKPOINT_FILES = (WEIGHTS_FILE, OPTIM_FILE, STATE_FILE)
# state.json keys that must match for a run to be resumed.
_RESUME_KEYS = ("teacher_fingerprint", "dataset_fingerprint", "method", "student",
                "store_content")
_RESUME_KEYS_SINCE = frozenset({"store_content"})  # recorded since 2026-12-05
# config.json keys a resumed run may change: where files are and how fast it runs, not what
# it trains. Any other change (lr, steps, lam, views, proj_init, ...) would make the
# finished run a mix of two runs recorded as the second one, so a resume with it is refused
# (proj_init too: P started at random or at its least-squares fit are two runs, though a
# resume never fits P again).
RESUME_MAY_CHANGE = frozenset({
    "data", "out", "cache", "store", "weights_dir", "threads", "num_workers",
    "eval_batch_size", "resume",
    # the checkpoint's weights replace the starting weights; the memory layout is speed
    "student_weights", "channels_last",
    # a path, like data: the class list it holds is in dataset_fingerprint (_RESUME_KEYS)
    "class_file",
})


def state_dict(student: Student) -> dict[str, torch.Tensor]:
    """A CPU copy of the student's weights and buffers, ready for safetensors.

    A copy, never a view: ``.cpu()`` and ``.contiguous()`` return the tensor itself when it
    is already on the CPU and contiguous, and the optimizer updates those in place, so a
    "best" state kept that way drifted with training (only channels_last conv weights were
    copied) and best-ID selection restored a mix of the best step's convolutions and the
    last step's everything else."""
    import torch

    return {
        k: v.detach().clone(memory_format=torch.contiguous_format).cpu()
        for k, v in student.state_dict().items()
    }


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write ``state`` as safetensors."""
    from safetensors.torch import save_file

    save_file(state, str(path))


def save_weights_replacing(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write ``state`` as safetensors over ``path`` in one step: a crash or a full disk
    leaves the previous file or none, never a torn one that `eval` would read."""
    tmp = leftover_name(path, "tmp")
    try:
        save_weights(state, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_final_student(out: Path, state: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Write the trained student and run.json into ``out``; a failure (a full disk) is a
    :class:`CheckpointWriteError` that says the run is checkpointed and how to finish it."""
    try:
        save_weights_replacing(state, out / WEIGHTS_FILE)
        write_json(out / RUN_FILE, info)
    except Exception as exc:  # a full disk: torch/safetensors raise RuntimeErrors too
        raise CheckpointWriteError(
            f"could not write the trained student in {out} (a full disk? {_short(exc)}); "
            "training is finished and checkpointed: free space, then run the same command "
            "with --resume to write it"
        ) from exc


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write(path, json.dumps(obj, indent=2, default=str) + "\n")


def save_checkpoint(
    out: Path,
    student: Student,
    state: dict[str, Any],
    optimizer: torch.optim.Optimizer | None,
    best: dict[str, torch.Tensor] | None,
    stage_tensors: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write checkpoint/ atomically: build checkpoint.tmp, then swap it in. ``stage_tensors``:
    the current stage's own tensors (its JSON part goes in ``state["stage_state"]``)."""
    final = out / CHECKPOINT_DIR
    tmp = out / (CHECKPOINT_DIR + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_weights(state_dict(student), tmp / WEIGHTS_FILE)
        if best is not None:
            save_weights(best, tmp / BEST_FILE)
        if stage_tensors:
            save_weights(stage_tensors, tmp / STAGE_FILE)
        extra: dict[str, Any] = {"torch_rng": torch.get_rng_state()}
        if optimizer is not None:
            extra["optimizer"] = optimizer.state_dict()
        torch.save(extra, tmp / OPTIM_FILE)
        # the files beside it, so a resume can tell a copy that lost one (best weights,
        # SWAD's averages) from a checkpoint written without it
        files = sorted(p.name for p in tmp.iterdir())
        # last: a folder with state.json is complete
        write_json(tmp / STATE_FILE, {**state, FILES_KEY: files})
        # on disk before the swap, which deletes the previous checkpoint: after a power
        # cut the new one's files could be empty or cut short, and it was the only one
        _fsync_files(tmp)
    except Exception as exc:
        # a full disk surfaces as torch's "unexpected pos" RuntimeError or safetensors'
        # SafetensorError, not as an OSError: say what it means, leave no half checkpoint
        shutil.rmtree(tmp, ignore_errors=True)
        if _complete(final):
            then = "the previous checkpoint is intact: free space, then train again with --resume"
        else:  # the first save: --resume finds nothing to continue
            then = (
                "no checkpoint was written yet, so --resume would start again from step 0: "
                "free space, then train again"
            )
        raise CheckpointWriteError(
            f"could not write a checkpoint in {out} (a full disk? {_short(exc)}); {then}"
        ) from exc
    if final.exists() and exchange(tmp, final):
        # One step, no moment without a checkpoint; ``tmp`` now holds the previous one.
        fsync_directory(out)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    # No RENAME_EXCHANGE on this system: two renames; recover_checkpoint mends a crash
    # between them.
    old = out / (CHECKPOINT_DIR + ".old")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_directory(out)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_files(folder: Path) -> None:
    """Flush every file of ``folder``, then the folder itself, to disk."""
    for path in folder.iterdir():
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
    fsync_directory(folder)


def _complete(ckpt: Path) -> bool:
    """True when ``ckpt`` holds every file a resume reads (state.json is written last)."""
    return all((ckpt / f).is_file() for f in _CHECKPOINT_FILES)


def _finished(ckpt: Path, stage_names: Sequence[str], done_file: Path | None) -> bool:
    """True when ``ckpt`` was written after the last stage and ``done_file`` exists."""
    if done_file is None or not done_file.is_file():
        return False
    try:
        saved = json.loads((ckpt / STATE_FILE).read_text("utf-8"))
        return int(saved["stage_index"]) >= len(stage_names)
    except (OSError, ValueError, KeyError, TypeError):
        return False  # a damaged checkpoint: the resume path says so


def _refuse_results_without_checkpoint(out: Path, done_file: Path) -> None:
    """ConfigurationError when ``out`` holds a finished run's results (``done_file``, the
    trained student, run.json) but no checkpoint/: a start at step 0 trained over them."""
    found = [p.name for p in (done_file, out / WEIGHTS_FILE, out / RUN_FILE) if p.is_file()]
    if not found:
        return
    scores = (
        f" (`vlm-distill eval {out} DATA` scores it again)"
        if (out / WEIGHTS_FILE).is_file() and (out / RUN_FILE).is_file() else ""
    )
    raise ConfigurationError(
        f"{out} holds a finished run ({', '.join(found)}) without its {CHECKPOINT_DIR}/: "
        f"training would start at step 0 and write over it; train into another --out, or "
        f"remove {out} to train it again{scores}"
    )


class CheckpointWriteError(VLMError):
    """A checkpoint could not be written (disk full, a write error)."""


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def recover_checkpoint(out: Path) -> None:
    """Mend what a save killed mid-way left: if checkpoint/ is missing, the complete one of
    checkpoint.tmp (the new, finished) or checkpoint.old (the previous) takes its place;
    then both leftovers go. Without this a --resume silently restarted from step 0."""
    final = out / CHECKPOINT_DIR
    tmp, old = out / (CHECKPOINT_DIR + ".tmp"), out / (CHECKPOINT_DIR + ".old")
    if not final.exists():
        for candidate in (tmp, old):
            if _complete(candidate):
                os.replace(candidate, final)
                log.warning("recovered %s from an interrupted checkpoint save", final)
                break
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover, ignore_errors=True)


# The descriptors of the run locks this process holds. A forked child (a DataLoader worker,
# any multiprocessing "fork") shares their open file, and with it the flock: the lock would
# live as long as the child, after the trainer was killed or had let it go.
_HELD: set[int] = set()


def _drop_inherited_locks() -> None:
    """In a forked child: close the parent's run locks (the parent keeps them)."""
    for fd in _HELD:
        with suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)  # every fork, now and later


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run folder while training into it: a second ``train``
    into the same folder (another terminal, a job submitted twice) is refused at once
    instead of writing its checkpoints and weights over this one's. The lock is the
    folder's own (``flock`` on it, nothing written) and goes with the process, kill -9
    included; forked children (DataLoader workers) do not keep it. A folder this call
    made is removed again if the run leaves it empty (it stopped on bad input before
    writing anything)."""
    made = []  # the folders this call creates, deepest first
    folder = out
    while not folder.exists() and folder != folder.parent:
        made.append(folder)
        folder = folder.parent
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_RDONLY)
    _HELD.add(fd)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigurationError(
                f"{out} is being trained into by another process right now; wait for it to "
                "finish (then --resume or another --out) or choose another --out"
            ) from None
        except OSError as exc:  # NFS (flock on a read-only fd), Lustre without -o flock
            log.warning("cannot lock %s (%s): a second train into it would not be refused",
                        out, exc.strerror or exc)
        try:
            yield
        except BaseException:
            for folder in made:
                if any(folder.iterdir()):
                    break
                folder.rmdir()
            raise
    finally:
        _HELD.discard(fd)
        os.close(fd)


@contextmanager
def _damaged(out: Path, ckpt: Path) -> Iterator[None]:
    """A checkpoint file that does not read (a disk error, an edit, another tool's file
    under its name) is a one-line refusal, not the reader's traceback."""
    import pickle

    from safetensors import SafetensorError

    try:
        yield
    except (SafetensorError, OSError, RuntimeError, pickle.UnpicklingError, EOFError,
            ValueError, KeyError, TypeError, AttributeError) as exc:  # fmt: skip
        raise ConfigurationError(
            f"cannot resume {out}: its checkpoint does not read ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); move {ckpt} aside to "
            "start the run again"
        ) from None


def check_checkpoint(ckpt: Path, written: Sequence[str] = ()) -> None:
    """ConfigurationError when ``ckpt`` lacks one of the files a resume needs, or one of
    ``written`` (the files its save wrote, as its state.json lists them)."""
    needed = dict.fromkeys([*_CHECKPOINT_FILES, *written])
    missing = [f for f in needed if not (ckpt / f).is_file()]
    if missing:
        raise ConfigurationError(
            f"cannot resume from {ckpt}: it is incomplete (missing {', '.join(missing)}); "
            "move it aside to start the run again"
        )


def _defaults(config: dict[str, Any]) -> dict[str, Any]:
    """Every TrainConfig setting's default, as config.json writes it."""
    required = {k: config[k] for k in ("data", "teacher", "out", "cache", "store")
                if config.get(k) is not None}
    try:
        return TrainConfig.model_validate(required).model_dump(mode="json")
    except ValueError:  # pydantic's ValidationError
        return {}


def check_same_settings(out: Path, config: dict[str, Any]) -> None:
    """ConfigurationError when ``config`` differs from ``out/config.json`` (the settings the
    run started with) in a key outside :data:`RESUME_MAY_CHANGE`; a run folder without
    config.json (written by an older version) is not checked."""
    path = out / CONFIG_FILE
    try:
        saved = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot resume {out}: {path} is unreadable ({exc})") from exc
    # A setting added to TrainConfig after the run started is not in its config.json: the
    # run trained with that setting's default.
    defaults = _defaults(config)
    if saved.get("pretrained") and not starts_from_weights(
        str(saved.get("student")), pretrained=True
    ):  # written before config.json said so: a student without packaged weights started random
        saved["pretrained"] = False
    changed = sorted(
        k for k in config
        if k not in RESUME_MAY_CHANGE and saved.get(k, defaults.get(k)) != config[k]
    )
    if changed:
        shown = "; ".join(
            f"{k}: {saved.get(k, defaults.get(k))!r} then, {config.get(k)!r} now"
            for k in changed[:6]
        )
        more = f" (and {len(changed) - 6} more)" if len(changed) > 6 else ""
        raise ConfigurationError(
            f"cannot resume {out} with other training settings: {shown}{more}. Resume with "
            "the settings it started with (its config.json), or train into another --out"
        )


def truncate_log(path: Path, stage_names: Sequence[str], stage_index: int, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (a crashed run's tail)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text("utf-8").splitlines():
        try:
            rec = json.loads(line)
            pos = (stage_names.index(rec["stage"]), int(rec["step"]))
        except (ValueError, KeyError):
            continue
        if pos < (stage_index, step):
            keep.append(line)
    atomic_write(path, "".join(x + "\n" for x in keep))


# Best-ID selection compares mean ID accuracies at this many decimals. The same true mean
# reached by other per-domain counts can differ in its last bit ((23/24 + 20/24) / 2 is one
# ulp above (22/24 + 21/24) / 2), so a strict ``>`` on the floats let rounding decide
# which of two equal evaluations was kept. Two truly different means closer than 1e-9
# (possible only with thousands of held-out images per domain, in counts of no common
# factor) count as equal too, and the earlier one is kept.
SELECTION_DIGITS = 9


def selection_key(acc: float) -> float:
    """``acc`` as best-ID selection compares it: rounded to :data:`SELECTION_DIGITS`.

    >>> selection_key((23 / 24 + 20 / 24) / 2) == selection_key((22 / 24 + 21 / 24) / 2)
    True
    """
    return round(acc, SELECTION_DIGITS)


@dataclass
class RunState:
    """Where a run stands: what state.json records, plus what resuming restores."""

    stage_index: int = 0  # the stage to run (or continue)
    step: int = 0  # steps of that stage already done
    best_acc: float = -1.0  # best mean ID accuracy of this stage so far (select="best_id")
    best_state: dict[str, torch.Tensor] | None = None  # the weights that scored it
    history: list[dict[str, Any]] = field(default_factory=list)  # every evaluation, short
    stage_notes: list[dict[str, Any]] = field(default_factory=list)  # finished stages
    optimizer: dict[str, Any] | None = None  # optimizer state to continue the stage with
    # The resumed stage's own state (see distill.train.stages.stage_state): JSON and tensors.
    stage_state: dict[str, Any] | None = None
    stage_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    # Summed over every process of the run, up to the checkpoint (a resumed run's timings
    # covered its last process only): seconds in training steps, images they saw, and
    # wall seconds before this process started (``started``: when it did).
    train_s: float = 0.0
    images_seen: int = 0
    wall_s_before: float = 0.0
    started: float = field(default_factory=time.time)

    def wall_s(self, now: float) -> float:
        """Wall seconds of the run so far, every process of it."""
        return self.wall_s_before + (now - self.started)

    def reset_best(self) -> None:
        """A new stage keeps its own best weights."""
        self.best_state, self.best_acc = None, -1.0

    def record(self, evaluation: dict[str, Any]) -> None:
        """Add an evaluation (an evals.jsonl line) to the history, without the per-domain
        detail."""
        self.history.append({k: evaluation[k] for k in
                             ("stage", "step", "mean_id", "mean_ood", "id_loss")})

    def finish_stage(self, note: dict[str, Any]) -> None:
        """Record a finished stage's note; the next stage keeps its own best weights."""
        self.stage_notes.append(note)
        self.reset_best()

    def keep_if_best(self, acc: float, student: Student) -> None:
        """Remember the student's weights when ``acc`` beats this stage's best, both read
        at :data:`SELECTION_DIGITS` decimals: a tie keeps the earlier evaluation, as
        DomainBed's argmax over its records in step order keeps the first maximum."""
        if self.beats(acc):
            self.best_acc = acc
            self.best_state = state_dict(student)

    def beats(self, acc: float) -> bool:
        """True when ``acc`` beats this stage's best at :data:`SELECTION_DIGITS` decimals.

        >>> RunState(best_acc=(22 / 24 + 21 / 24) / 2).beats((23 / 24 + 20 / 24) / 2)
        False
        """
        return selection_key(acc) > selection_key(self.best_acc)

    def to_json(
        self, info: dict[str, Any], stage_index: int, stage: str, step: int, now: float,
        stage_state: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """state.json: the run's description and where it stands (``step`` steps of
        ``stage`` done, and that stage's own state)."""
        return {
            **info, "stage_index": stage_index, "stage": stage, "step": step,
            "best_acc": self.best_acc, "history": self.history,
            "stage_notes": self.stage_notes, "time": now, "stage_state": stage_state,
            "train_s": self.train_s, "images_seen": self.images_seen,
            "wall_s": self.wall_s(now),
        }


def _check_state(saved: dict[str, Any], stages: int) -> None:
    """ValueError naming the first value of ``saved`` (state.json) of the wrong type or
    out of range: an edited or damaged one was taken as it was ("x" as a history of one
    letter, stage 7 of 2 as a finished run, a negative step as a crash later on)."""

    def fail(key: str, what: str) -> None:
        raise ValueError(f"{STATE_FILE}'s {key!r} is {saved[key]!r}, not {what}")

    def whole(key: str) -> bool:
        value = saved.get(key)
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    for key in ("stage_index", "step"):
        if not whole(key):
            fail(key, "a whole number >= 0")
    if saved["stage_index"] > stages:
        fail("stage_index", f"a stage of this run (0 to {stages})")
    if "images_seen" in saved and not whole("images_seen"):
        fail("images_seen", "a whole number >= 0")
    for key in ("best_acc", "train_s", "wall_s"):
        value = saved.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(key, "a number")
    for key in ("history", "stage_notes"):
        value = saved.get(key, [])
        if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
            fail(key, "a list of objects")
    if not isinstance(saved.get("stage_state"), (dict, type(None))):
        fail("stage_state", "an object")


def resume_or_start(
    out: Path,
    *,
    resume: bool,
    info: dict[str, Any],
    student: Student,
    stage_names: Sequence[str],
    log_files: Sequence[Path],
    main: bool,
    world: int,
    config: dict[str, Any] | None = None,
    done_file: Path | None = None,
) -> RunState:
    """Where the run starts: step 0, or (with ``resume``) the checkpoint's step, with the
    student's weights, the RNG and the log restored. Refuses to overwrite an unfinished run
    without ``resume`` and to resume a run of another teacher, dataset, method or student,
    or (given ``config``, the run's resolved config.json) with other training settings.
    ``log_files`` (log.jsonl, evals.jsonl) lose the lines written after the point the run
    starts from: all of them when it starts at step 0 (an abandoned run's, whose
    checkpoint was moved aside), the tail after the checkpoint when it resumes. A run
    whose checkpoint is past its last stage and whose ``done_file`` (metrics.json) is
    written is finished: refused with or without ``resume``; so is a folder holding a
    finished run's results without its checkpoint (deleted to save space, left out of a copy).
    """
    ckpt = out / CHECKPOINT_DIR
    if main:
        recover_checkpoint(out)
    barrier(world)
    if ckpt.exists() and _finished(ckpt, stage_names, done_file):
        # --resume would only score it again and overwrite metrics.json
        raise ConfigurationError(
            f"{out} holds a finished run; nothing to resume: train into another --out "
            f"(`vlm-distill eval {out} DATA` scores it again)"
        )
    if not ckpt.exists() and done_file is not None:
        _refuse_results_without_checkpoint(out, done_file)
    if ckpt.exists() and done_file is not None and done_file.is_file():
        # metrics.json is written last, so the run finished; its checkpoint does not say
        # so (damaged, or written for another method's stages). Before, this took three
        # attempts to learn: "pass --resume", then "damaged", then "a finished run".
        raise ConfigurationError(
            f"{out} holds a finished run ({done_file.name}) whose {CHECKPOINT_DIR}/ is "
            "damaged or of another method: nothing to resume; train into another --out, "
            f"or remove {out} to train it again"
        )
    if ckpt.exists() and not resume:
        raise ConfigurationError(
            f"{out} already holds a checkpoint; pass --resume to continue it or choose "
            "another --out"
        )
    if not resume or not ckpt.exists():
        if main and resume:  # a typo in --out, or killed before its first checkpoint
            log.warning("--resume: %s holds no checkpoint, so training starts at step 0", out)
        if main:
            # Nothing to resume from: the run starts at step 0, so any log lines are an
            # earlier start's and would be written again (appended, they doubled the plots)
            for path in log_files:
                truncate_log(path, stage_names, 0, 0)
        return RunState()
    check_checkpoint(ckpt)
    with _damaged(out, ckpt):
        saved = json.loads((ckpt / STATE_FILE).read_text("utf-8"))
        if not isinstance(saved, dict):
            raise ValueError(f"{STATE_FILE} holds no object")
        written = saved.get(FILES_KEY, [])  # not in a checkpoint of before 2026-12-06
        if not isinstance(written, list):
            raise ValueError(f"{STATE_FILE}'s {FILES_KEY!r} is not a list")
        _check_state(saved, len(stage_names))
    check_checkpoint(ckpt, [str(f) for f in written])
    for key in _RESUME_KEYS:
        if key in _RESUME_KEYS_SINCE and key not in saved:
            continue  # a checkpoint written before this key was recorded
        if saved.get(key) == info.get(key):
            continue
        if key == "store_content":
            raise ConfigurationError(
                f"cannot resume {out}: the teacher embeddings in {info.get('store')} changed "
                "since it started (harvested again with another --prompt, or of replaced "
                "images); train into another --out"
            )
        raise ConfigurationError(
            f"cannot resume {out}: its {key} is {saved.get(key)!r}, this run's is "
            f"{info.get(key)!r}"
        )
    if config is not None:
        check_same_settings(out, config)
    with _damaged(out, ckpt):
        student.load_state_dict(_load_weights(ckpt / WEIGHTS_FILE))
        run = RunState(
            stage_index=int(saved["stage_index"]),
            step=int(saved["step"]),
            best_acc=float(saved.get("best_acc", -1.0)),
            history=list(saved.get("history", [])),
            stage_notes=list(saved.get("stage_notes", [])),
            stage_state=saved.get("stage_state"),
            train_s=float(saved.get("train_s", 0.0)),
            images_seen=int(saved.get("images_seen", 0)),
            wall_s_before=float(saved.get("wall_s", 0.0)),
        )
        if (ckpt / BEST_FILE).is_file():
            run.best_state = _load_weights(ckpt / BEST_FILE)
        if (ckpt / STAGE_FILE).is_file():
            run.stage_tensors = _load_weights(ckpt / STAGE_FILE)
        extra = torch.load(ckpt / OPTIM_FILE, map_location="cpu", weights_only=True)
        if extra is not None and "torch_rng" in extra:
            torch.set_rng_state(extra["torch_rng"])
        if extra is not None:
            run.optimizer = extra.get("optimizer")
    log.info("resuming %s at stage %d step %d", out, run.stage_index, run.step)
    if main:
        for path in log_files:
            truncate_log(path, stage_names, run.stage_index, run.step)
    return run
