"""The view-consistency check of the parity filter (``pseudolabel --check views``).

A teacher that answers deterministically from one embedding (the bundled local server, or
any teacher whose answer is its zero-shot argmax) agrees with itself on a second question
by construction, so ``--check zeroshot`` and ``--check resample`` cannot drop anything.
What such a teacher can still show is whether its label survives the image being seen
differently: this check asks for the teacher's zero-shot label (image embedding against
the class prompts' text embeddings, as ``--check zeroshot`` does) of views 1..N of each
image, the harvest's view recipe (:func:`distill.data.views.view_bytes`: a random
resized crop, brightness and contrast) with no horizontal flip (a mirrored digit, letter
or arrow may be another class). An answer passes when every view's label equals it.

Cost: at most N image embeddings per answered image, plus one text embedding per class
(shared with ``--check zeroshot``), all through the run's client: reserved against
``--budget`` / ``--run-budget`` before sending, ledgered and cached, so a rerun pays
nothing. Views are bought one round at a time and view k only for the images whose views
1..k-1 all agreed, so an image that already failed buys no more; images with no usable
answer buy none.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from distill.data import DataError, Dataset, class_prompts
from distill.data.views import view_bytes
from distill.teacher.zeroshot import zeroshot_labels
from vlmclient import BudgetExceededError, Image, ImageEmbeddingRequest, TextEmbeddingRequest

from .pseudolabel import Label, LabelClient

__all__ = ["DEFAULT_VIEWS", "UNREADABLE", "view_check_labels", "view_request"]

DEFAULT_VIEWS = 3  # measured on the digits teacher: 3 views keep 54 % at 97 % accuracy
UNREADABLE = "unreadable"  # in a Label's ``answer``: the image's views could not be made


def view_request(path: str | os.PathLike[str], image_id: str, view: int) -> ImageEmbeddingRequest:
    """The embedding request for view ``view`` of one image, never flipped."""
    data, media_type = view_bytes(path, image_id, view, hflip=False)
    return ImageEmbeddingRequest(image=Image(data=data, media_type=media_type))


async def view_check_labels(
    dataset: Dataset,
    client: LabelClient,
    class_names: Sequence[str],
    answers: Sequence[int | None],
    views: int = DEFAULT_VIEWS,
    *,
    prompt: str = "a photo of a {}",
) -> list[Label]:
    """The views' second opinion on each answer, one Label per sample, in order.

    ``answers[i]`` is sample i's parsed answer (None: nothing to check, no view bought).
    A checked image's Label has ``label`` = its answer when all ``views`` views agree with
    it, else the first disagreeing view's label; ``answer`` lists the view labels bought
    ("3|3|7"; ending in ``unreadable`` and ``label`` None when the file, sent to the
    teacher as it is, does not decode into views). When the budget stops the check, the
    images not decided get ``answer=None`` (not bought: raise the budget and run again;
    what was bought is cached).
    """
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    samples = list(dataset.samples)
    if len(answers) != len(samples):
        raise ValueError("one answer per sample is needed")
    seen: dict[int, list[int]] = {i: [] for i, a in enumerate(answers) if a is not None}
    out: dict[int, Label] = {}

    def settle(i: int, label: int | None, note: str = "") -> None:
        names = "|".join([*(class_names[c] for c in seen[i]), *([note] if note else [])])
        out[i] = Label(samples[i].id, label, names, "views")

    def request(i: int, k: int) -> ImageEmbeddingRequest | None:
        try:
            return view_request(samples[i].path, samples[i].id, k)
        except DataError:  # the file was sent as it is but does not decode: no views
            settle(i, None, UNREADABLE)
            return None

    try:
        texts = await client.embed_texts(
            [TextEmbeddingRequest(text=p) for p in class_prompts(class_names, prompt)]
        )
        text = np.stack([t.vector for t in texts])
        limit = client.batch_limit("image_embedding")
        for k in range(1, views + 1):
            todo = [i for i in seen if i not in out]
            for start in range(0, len(todo), limit):
                made = [(i, request(i, k)) for i in todo[start : start + limit]]
                chunk = [i for i, r in made if r is not None]
                reqs = [r for _, r in made if r is not None]
                if not reqs:
                    continue
                res = await client.embed_images(reqs)
                got = zeroshot_labels(np.stack([r.vector for r in res]), text).tolist()
                for i, c in zip(chunk, got, strict=True):
                    seen[i].append(int(c))
                    if c != answers[i]:
                        settle(i, int(c))  # one disagreeing view decides: no more bought
        for i in seen:
            if i not in out:
                settle(i, answers[i])  # every view agreed
    except BudgetExceededError:
        pass  # the undecided images stay unbought; the caller says so
    return [
        out.get(i, Label(s.id, None, None if i in seen else "", "views"))
        for i, s in enumerate(samples)
    ]
