"""``vlm-distill pseudolabel``: label unlabelled images with the teacher, parity-filtered.

Writes ``--out`` (a CSV manifest ``path,label,domain`` of the images kept by the parity
filter, ready for ``harvest``/``train``; ``*.dataset.json`` beside it keeps the data's
``hflip``), and beside it ``*.decisions.csv`` with every image's raw answer, parsed label,
second opinion, the view labels (``--check views``), student prediction and decision.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from vlmclient import (
    AnswerRequest,
    BudgetExceededError,
    ConfigurationError,
    ImageEmbeddingRequest,
    InputTooLongError,
    TeacherClient,
    TextEmbeddingRequest,
    VLMError,
)
from vlmclient.models import Kind
from vlmclient.providers.reasoning import REASONING_LEVELS

from . import EXIT_BUDGET, EXIT_ERROR, EXIT_OK
from .failures import failure_advice, retry_advice, show_failed
from .progress import LiveProgress, console
from .signals import run_paid

ROUTES = ("answer", "zeroshot")
CHECKS = ("zeroshot", "resample", "views", "answer", "none")
EMBEDDINGS: tuple[Kind, ...] = ("image_embedding", "text_embedding")


def needed_kinds(route: str, check: str) -> tuple[Kind, ...]:
    """What the teacher must offer for ``--route`` and ``--check`` (checked before sending)."""
    kinds: list[Kind] = []
    for step in (route, check):
        if step in ("answer", "resample"):
            kinds.append("answer")
        elif step in ("zeroshot", "views"):
            kinds += EMBEDDINGS
    return tuple(dict.fromkeys(kinds))


def add_arguments(p: argparse.ArgumentParser) -> None:
    from distill.labelfree.view_check import DEFAULT_VIEWS

    from ._common import add_client_arguments
    from .validate import MAX_VIEWS, int_in, path_arg

    p.add_argument("data", type=path_arg, help="a folder of images (all in it, or DATA/<class>/ or "
                   "DATA/<domain>/<class>/ with classes from --class-file) or a CSV manifest")
    add_client_arguments(p)
    p.add_argument("--class-file", type=path_arg, help="class names, one per line (the options)")
    p.add_argument(
        "--reasoning",
        choices=REASONING_LEVELS,
        default="off",
        help="the answer teacher's reasoning/thinking effort; reasoning tokens count "
        "against the short answer limit, so 'off' (the lowest the model allows) is the "
        "default; 'default' sends no setting (default: %(default)s)",
    )
    p.add_argument(
        "--route",
        choices=ROUTES,
        default="answer",
        help="answer: multiple-choice answers; zeroshot: embedding argmax (default: %(default)s)",
    )
    p.add_argument(
        "--check",
        choices=CHECKS,
        default="zeroshot",
        help="the teacher's second opinion: zeroshot (embedding argmax), resample (a second "
        "answer, options shuffled), views (the embedding argmax of --check-views augmented "
        "views must all agree), answer (for --route zeroshot) or none "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--check-views",
        type=int_in(1, MAX_VIEWS),
        metavar="N",
        help=f"--check views: augmented views per image, 1 to {MAX_VIEWS}; costs up to N "
        f"image embeddings per answered image (default: {DEFAULT_VIEWS})",
    )
    p.add_argument(
        "--student-run", type=path_arg, help="a trained run: keep only what it gets wrong"
    )
    p.add_argument("--prompt", default="a photo of a {}", help="class prompt for embeddings")
    p.add_argument("--synonyms", type=path_arg, help='JSON {"word": "class name"} for parsing')
    p.add_argument(
        "--out", type=path_arg, help="manifest to write (default: CACHE/pseudolabels.csv)"
    )


def _read_synonyms(path: Path, class_names: Sequence[str]) -> dict[str, str]:
    """The ``--synonyms`` file: a JSON object of ``"word": "class name"`` strings;
    ConfigurationError when it is missing, unreadable or not such an object (checked
    before anything is sent: parse_answer would fail only once answers were paid for)."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"--synonyms {path}: cannot read it ({exc})") from None
    except ValueError as exc:
        raise ConfigurationError(f"--synonyms {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ConfigurationError(
            f'--synonyms {path}: give a JSON object of strings, {{"word": "class name"}}'
        )
    unknown = sorted({v for v in data.values() if v not in class_names})
    if unknown:  # such an entry would never match: the answers it was meant for go unread
        raise ConfigurationError(
            f"--synonyms {path}: {', '.join(map(repr, unknown[:3]))} "
            f"{'is not a class name' if len(unknown) == 1 else 'are not class names'} "
            "of the class file"
        )
    if any(not k.strip() for k in data):
        raise ConfigurationError(f"--synonyms {path}: a word is empty")
    from distill.labelfree.pseudolabel import matchable

    unread = [k for k in data if not matchable(k)]
    if unread:  # it would never match: the answers it was meant for go unread
        raise ConfigurationError(
            f"--synonyms {path}: the word {unread[0]!r} has no letter or digit an answer "
            "could be matched by"
        )
    return data


def _check_not_an_input(out: Path, default: bool, inputs: dict[str, Path | None]) -> None:
    """ConfigurationError when the manifest ``out``, its description or its decisions
    file is a file this run reads (the data's manifest, the class file, ...): written
    over, the images the filter drops would be gone from the user's list, the class file
    would hold CSV rows. Checked before anything is sent."""
    from distill.data.manifest_file import manifest_meta

    for written in (out, manifest_meta(out), out.with_suffix(".decisions.csv")):
        for what, read in inputs.items():
            if read is None or not read.is_file() or not written.is_file():
                continue
            if os.path.samefile(written, read):
                given = "(the default) " if default else ""
                raise ConfigurationError(
                    f"--out {given}{out} would write {written} over {what} {read}, which "
                    "this run reads; give --out another file"
                )


DECISIONS_COLUMNS = ("id", "path", "answer", "label", "second", "views", "student", "decision")


def _ours(path: Path, header: str | None) -> bool:
    """Whether the existing ``path`` is one a pseudolabel run wrote: a CSV starting with
    ``header``, or (``header`` None) a manifest's description, ``{"hflip": ...}``."""
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    if header is not None:
        line = head.split(b"\n", 1)[0].decode("utf-8", "replace")
        return line.lstrip("\ufeff").rstrip("\r") == header
    try:
        meta = json.loads(head)
    except ValueError:
        return False
    return isinstance(meta, dict) and set(meta) == {"hflip"}


def _check_not_another_file(out: Path) -> None:
    """ConfigurationError when the manifest ``out``, its description or its decisions
    file exists and is not a pseudolabel run's (the paid response cache's cache.db, an
    image of the data, a trained run's weights were written over, exit 0). A run's own
    earlier output is replaced, as before."""
    from distill.data.manifest_file import MANIFEST_COLUMNS, manifest_meta

    decisions = out.with_suffix(".decisions.csv")
    for written, header in ((out, ",".join(MANIFEST_COLUMNS)), (manifest_meta(out), None),
                            (decisions, ",".join(DECISIONS_COLUMNS))):  # fmt: skip
        if os.path.lexists(written) and not _ours(written, header):
            raise ConfigurationError(
                f"--out {out}: {written} exists and is not a pseudolabel run's output; it "
                "writes over nothing else (a cache's database, an image, a run's files): "
                "give --out a new file name, or remove that file first"
            )


class _BudgetStops:
    """The run's client, keeping the first budget refusal (it names the cap that stopped
    the run: ``--budget``, ``--run-budget``, ``--max-requests``, and what to do)."""

    def __init__(self, client: TeacherClient) -> None:
        self.client = client
        self.stop: BudgetExceededError | None = None

    @property
    def concurrency(self) -> int:
        return self.client.concurrency

    def batch_limit(self, kind: Kind) -> int:
        return self.client.batch_limit(kind)

    async def _call(self, calls: Awaitable[list[Any]]) -> list[Any]:
        try:
            return await calls
        except BudgetExceededError as exc:
            self.stop = self.stop or exc
            raise

    async def embed_images(self, requests: Sequence[ImageEmbeddingRequest]) -> list[Any]:
        return await self._call(self.client.embed_images(requests))

    async def embed_texts(self, requests: Sequence[TextEmbeddingRequest]) -> list[Any]:
        return await self._call(self.client.embed_texts(requests))

    async def answer(self, requests: Sequence[AnswerRequest]) -> list[Any]:
        return await self._call(self.client.answer(requests))


def _for_every(samples: Sequence[Any], got: Sequence[Any], source: str) -> list[Any]:
    """One Label per sample, in order, from the Labels of some of them; the others get
    ``answer=""`` (not asked: nothing to check; not "unchecked")."""
    from distill.labelfree.pseudolabel import Label

    by_id = {lb.image_id: lb for lb in got}
    return [by_id.get(s.id) or Label(s.id, None, "", source) for s in samples]


def _load_student_run(run: Path, class_names: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
    """The ``--student-run`` student and its run.json, loaded before anything is sent;
    ConfigurationError when the run is missing, unreadable or trained on other classes."""
    from safetensors import SafetensorError

    from distill.train.evaluate import RUN_FILE, load_run_student
    from distill.train.student import check_student_name

    try:
        info = json.loads((run / RUN_FILE).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"--student-run {run}: not a finished training run ({exc})"
        ) from None
    if not isinstance(info, dict) or not isinstance(info.get("class_names"), list):
        raise ConfigurationError(f"--student-run {run}: its {RUN_FILE} lists no class names")
    if tuple(info["class_names"]) != tuple(class_names):
        raise ConfigurationError(
            f"--student-run {run} was trained on other classes: {info['class_names'][:5]}, "
            f"--class-file lists {list(class_names)[:5]} (train it with `vlm-distill train "
            "... --class-file` and this file: the classes and their order)"
        )
    missing = [k for k in ("student", "method", "image_size", "mean", "std") if k not in info]
    if missing:
        raise ConfigurationError(f"--student-run {run}: its {RUN_FILE} lacks {missing}")
    check_student_name(str(info["student"]))
    try:
        return load_run_student(run)
    # a missing or broken weights file (one that does not fit the student: RuntimeError)
    except (VLMError, SafetensorError, OSError, ValueError, TypeError, RuntimeError) as exc:
        raise ConfigurationError(f"--student-run {run}: cannot load it ({exc})") from None


def _student_predictions(
    student: Any, info: dict[str, Any], dataset: Any
) -> list[int | None]:
    """The student's class for every image; None for a file it cannot read (the teacher
    cannot read it either, so that image gets no label). Run before anything is sent."""
    import numpy as np
    import torch

    from distill.data import DataError
    from distill.data.loaders import load_image
    from distill.train.evaluate import to_input

    size = info["image_size"]
    preds: list[int | None] = []
    with torch.no_grad():
        for s in range(0, len(dataset.samples), 128):
            pixels, readable = [], []
            for x in dataset.samples[s : s + 128]:
                try:
                    pixels.append(load_image(x, 0, size, hflip=False))
                    readable.append(True)
                except (DataError, OSError):
                    pixels.append(np.zeros((3, size, size), np.uint8))
                    readable.append(False)
            px = torch.from_numpy(np.stack(pixels))
            got = student(to_input(px, info["mean"], info["std"])).argmax(1).tolist()
            preds += [int(c) if ok else None for c, ok in zip(got, readable, strict=True)]
    return preds


async def _prompts_refused(
    client: _BudgetStops, names: Sequence[str], prompt: str
) -> list[tuple[str, str]]:
    """Buy the class prompts (the steps that need them then find them cached); the
    failures of those refused as too long for the teacher (the others are bought)."""
    from distill.data import class_prompts
    from distill.harvest import refused_prompts

    try:
        await client.embed_texts(
            [TextEmbeddingRequest(text=p) for p in class_prompts(names, prompt)]
        )
    except InputTooLongError as exc:
        return refused_prompts(exc, names)
    except BudgetExceededError:
        pass  # the step that needs them stops there and says so
    return []


def run(args: argparse.Namespace) -> int:
    from cache import ResponseCache, SpendLedger, atomic_write_csv
    from cache.layout import CacheDir
    from distill.data import META_FILE, scan
    from distill.data.manifest_file import manifest_meta, write_manifest_rows
    from distill.labelfree.parity import parity_filter
    from distill.labelfree.pseudolabel import answer_labels, check_choices, embedding_labels
    from distill.labelfree.view_check import DEFAULT_VIEWS, view_check_labels

    from ._common import (
        budget_lines,
        open_client,
        open_coordinator,
        progress_money,
        removed_if_refused,
    )

    out = console()
    valid = {
        "answer": ("zeroshot", "resample", "views", "none"),
        "zeroshot": ("answer", "views", "none"),
    }
    if args.check not in valid[args.route]:
        raise ConfigurationError(
            f"--check {args.check} does not fit --route {args.route}; "
            f"use one of {', '.join(valid[args.route])}"
        )
    if args.check_views is not None and args.check != "views":
        raise ConfigurationError(f"--check-views needs --check views (not --check {args.check})")
    n_views = DEFAULT_VIEWS if args.check_views is None else args.check_views
    dataset = scan(
        args.data, class_file=args.class_file, allow_outside_paths=args.allow_outside_paths
    )
    names = dataset.class_names
    if len(names) < 2:
        raise ConfigurationError("give --class-file with at least two class names")
    if "answer" in needed_kinds(args.route, args.check):
        check_choices(names)  # > 26 classes, or two shown as one: before anything is bought
    # every input is checked before anything is sent: a late error loses paid answers
    if args.out is not None:
        from . import check_out_file

        check_out_file(Path(args.out), "--out", "labels.csv")
    cdir = CacheDir(args.cache)
    path = args.out or (cdir.root / "pseudolabels.csv")
    # the data's description (its hflip): DATA/dataset.json, or NAME.dataset.json beside NAME.csv
    described = args.data / META_FILE if args.data.is_dir() else manifest_meta(args.data)
    inputs = {
        "DATA": args.data, "the data's description": described,
        "--class-file": args.class_file, "--synonyms": args.synonyms,
        "the spend ledger": cdir.ledger,
    }  # fmt: skip
    if args.student_run is not None:  # the trained run's files, lost if written over
        from distill.train.evaluate import RUN_FILE, WEIGHTS_FILE

        for file in (RUN_FILE, WEIGHTS_FILE):
            inputs[f"--student-run's {file}"] = args.student_run / file
    _check_not_an_input(path, args.out is None, inputs)
    _check_not_another_file(path)
    synonyms = _read_synonyms(args.synonyms, names) if args.synonyms else None
    student = None
    if args.student_run is not None:
        student = _student_predictions(*_load_student_run(args.student_run, names), dataset)
    with (
        removed_if_refused(cdir.root),  # a new --cache folder, when the teacher is refused
        # the ledger first: a file of someone else's there is refused before a response
        # cache is made beside it (as harvest)
        SpendLedger(cdir.ledger) as ledger,
        ResponseCache(cdir.responses) as cache,
        open_coordinator(cdir) as coord,
    ):
        client = open_client(
            args, cache, ledger, coord, kinds=needed_kinds(args.route, args.check)
        )

        refused: list[tuple[str, str]] = []  # class prompts too long for the teacher
        teacher = _BudgetStops(client)  # the labelling steps say "not bought", not why

        async def go() -> tuple[list[Any], list[Any] | None]:
            async with client:
                if "text_embedding" in needed_kinds(args.route, args.check):
                    # The class prompts first: one too long for the teacher stops the run
                    # before anything else is bought (an answer's question holds the class
                    # names too: bought now, it would be bought again once they are shorter).
                    refused.extend(await _prompts_refused(teacher, names, args.prompt))
                    if refused:
                        return [], None
                every = list(dataset.samples)
                todo = every  # the check asks only about the images the first step labelled

                async def answers(seed: int | None = None) -> list[Any]:
                    step = "answers" if seed is None else "second answers"
                    with LiveProgress(f"pseudolabel {step}", len(todo), out=out) as bar:
                        got = await answer_labels(
                            dataset, teacher, names, samples=todo, shuffle_seed=seed,
                            synonyms=synonyms,
                            on_progress=lambda n: bar.update(n, progress_money(client)),
                        )  # fmt: skip
                    return _for_every(every, got, "answer")

                async def zeroshot() -> list[Any]:
                    with LiveProgress("pseudolabel zero-shot", len(todo), out=out) as bar:
                        got, _ = await embedding_labels(
                            dataset, teacher, names, samples=todo, prompt=args.prompt,
                            on_progress=lambda n: bar.update(n, progress_money(client)),
                        )  # fmt: skip
                    return _for_every(every, got, "zeroshot")

                first = await (answers() if args.route == "answer" else zeroshot())
                # an image with no usable label is dropped whatever a check says: none
                # is bought for it (as --check views buys no view of it)
                todo = [s for s, lb in zip(every, first, strict=True) if lb.label is not None]

                async def views() -> list[Any]:
                    parsed = [lb.label for lb in first]
                    return await view_check_labels(
                        dataset, teacher, names, parsed, n_views, prompt=args.prompt
                    )

                checks: dict[str, Callable[[], Awaitable[list[Any]]]] = {
                    "zeroshot": zeroshot, "resample": lambda: answers(1), "answer": answers,
                    "views": views,
                }  # fmt: skip
                second = checks.get(args.check)
                return first, (await second() if second is not None else None)

        labels, second = run_paid(go())
        money_rows = budget_lines(client)
    if refused:  # nothing labelled, no file written: as the plain harvest says
        t = Table(title=f"pseudolabel ({args.route}, check {args.check})", show_header=False)
        for label, value in money_rows:
            t.add_row(label, value)
        out.print(t)
        show_failed(out, refused)
        if client.overrun is not None:
            out.print(f"[red]{escape(str(client.overrun))}[/]")
            return EXIT_BUDGET
        failure_advice(out, refused, client)
        return EXIT_ERROR
    ids = [s.id for s in dataset.samples]
    first_l = [lb.label for lb in labels]
    second_l = first_l if second is None else [lb.label for lb in second]
    # a check the budget stopped before it was bought is not a disagreement
    not_checked = [
        s.id for s, lb, ch in zip(dataset.samples, labels, second or labels, strict=True)
        if second is not None and lb.answer is not None and ch.answer is None
    ]
    result = parity_filter(ids, first_l, second_l, student, unchecked=not_checked)
    kept = set(result.kept)
    write_manifest_rows(  # with the data's hflip: harvest and train of it flip as it says
        path,
        ((str(s.path), names[lb.label], s.domain)
         for s, lb in zip(dataset.samples, labels, strict=True) if s.id in kept),
        hflip=dataset.hflip,
    )  # fmt: skip

    def name(c: int | None) -> str:
        return "" if c is None else names[c]

    decisions = path.with_suffix(".decisions.csv")
    atomic_write_csv(decisions, [
        list(DECISIONS_COLUMNS),
        *([
            s.id, str(s.path), labels[i].answer or "", name(first_l[i]), name(second_l[i]),
            (second[i].answer or "") if args.check == "views" and second else "",
            "" if student is None else name(student[i]), result.decision(s.id),
        ] for i, s in enumerate(dataset.samples)),
    ])  # fmt: skip
    check = f"{args.check} x{n_views}" if args.check == "views" else args.check
    t = Table(title=f"pseudolabel ({args.route}, check {check})", show_header=False)
    for k, v in result.counts.items():
        t.add_row(k, str(v))
    for label, value in money_rows:
        t.add_row(label, value)
    t.add_row("manifest", escape(str(path)))
    t.add_row("decisions", escape(str(decisions)))
    out.print(t)
    if client.overrun is not None:  # the provider billed more than reserved: exit 3
        out.print(f"[red]{escape(str(client.overrun))}[/]")
        return EXIT_BUDGET
    failed = [lb for lb in (labels + (second or [])) if lb.error is not None]
    if failed:
        advice = retry_advice(client.stats.charged_no_answer, client.billed_malformed)
        out.print(
            f"[red]{len(failed)} answers failed at the teacher[/] "
            f"(last: {escape(failed[-1].error or '')}); fix the cause"
            # "then run again ..." only fits the plain advice; the others are sentences
            + (", then " if advice.startswith("run again") else " first; ")
            + advice
        )
        return EXIT_ERROR
    unbought = sum(lb.answer is None for lb in labels)
    unchecked = sum(
        lb.answer is not None and ch.answer is None
        for lb, ch in zip(labels, second or labels, strict=True)
    )
    if unbought or unchecked:
        what = f"{unbought} images have no answer yet" if unbought else ""
        if unchecked:  # their drop reason is provisional: the check was not bought
            what += ("; " if what else "") + f"{unchecked} answers are not checked yet"
        why = (
            "what was bought is cached: raise --budget and run again"
            if teacher.stop is None
            else str(teacher.stop)
        )
        out.print(f"[yellow]stopped by the budget[/]: {what}; {escape(why)}")
        return EXIT_BUDGET
    return EXIT_OK
