"""Pseudo-labels for unlabelled images: the teacher's multiple-choice answers, or its zero-shot
argmax over cached embeddings (the cheaper route).

The answer route asks one question per image, listing the class names as lettered options,
and parses the reply robustly: case, punctuation, articles, plurals, a few phrasings ("it is
a ...", "the answer is ..."), option letters ("B", "(b)", "B) cat"), option numbers ("2)",
"option 2") and user synonyms. Anything that does not name exactly one option is ``None``:
a wrong guess would poison training, a missing label only costs one image. So is an option
named beside a negation ("not a cat", "isn't a dog"), a number or letter followed by words
that do not name its option ("3 or 5"), and a letter whose explanation below names another.
A reply that reasons first and ends with its answer ("... Final answer: B", "Answer: 3") is
read from its last "answer:" (or "answer is") on.

Answers go through the TeacherClient, so each one is budgeted, ledgered and cached like
every embedding: asking again costs nothing.

>>> parse_answer("B) Dog.", ["cat", "dog"])
1
>>> parse_answer("a fox", ["cat", "dog"]) is None
True
"""

from __future__ import annotations

import asyncio
import random
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol, runtime_checkable

import numpy as np

from distill.data import Dataset, Sample, class_prompts
from distill.data.views import pixels_decode, view_bytes
from distill.harvest import FATAL
from distill.teacher.zeroshot import zeroshot_labels, zeroshot_probs
from distill.workers import all_or_none
from vlmclient import (
    AnswerRequest,
    BadRequestError,
    BudgetExceededError,
    ConfigurationError,
    Image,
    ImageEmbeddingRequest,
    InputError,
    Kind,
    Teacher,
    TextEmbeddingRequest,
    VLMError,
)

__all__ = [
    "DEFAULT_QUESTION",
    "MAX_FAILURES_IN_A_ROW",
    "Label",
    "LabelClient",
    "answer_labels",
    "before_the_cut",
    "check_choices",
    "choice_prompt",
    "display_name",
    "embedding_labels",
    "matchable",
    "parse_answer",
    "sample_image",
]

DEFAULT_QUESTION = "Which of these is shown in the image? Reply with one option only."
MAX_ANSWER_TOKENS = 16  # an option name is a few tokens; a long reply is not an answer
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
IN_FLIGHT_PER_SLOT = 2  # answer requests scheduled ahead per concurrency slot
# Failed answers in a row (after the client's own retries) that stop the run: a teacher
# that fails this often is misconfigured or down, and each failure may have been billed.
MAX_FAILURES_IN_A_ROW = 5

# Leading phrases a chatty model puts before the option; removed before matching.
_PREAMBLES = re.compile(
    r"^(?:(?:the\s+)?(?:correct\s+|final\s+)?(?:answer|option|choice|class|label)"
    r"(?:\s+is)?|it\s+is|it'?s|this\s+is|that\s+is|i\s+see|i\s+think\s+it\s+is|"
    r"the\s+image\s+(?:shows|contains|depicts)|(?:a\s+)?(?:photo|picture|image)\s+of)\b[\s:]*",
    re.IGNORECASE,
)
# A reply's own answer marker ("Final answer: B", "**Answer:** 3", "so the answer is B"):
# the reasoning before the last one names options it did not choose.
_ANSWER_MARKER = re.compile(
    r"\b(?:final\s+|correct\s+)?answer\b[*_\s]*(?:is\b[*_\s]*:?|:)", re.IGNORECASE
)
_ARTICLE = re.compile(r"^(?:a|an|the)\s+")
# An option letter alone, or before its name on its line; DOTALL keeps later lines in group 2.
# A to Z only: case-insensitive, [a-z] would also take the Kelvin sign and a dotted I.
_LETTER = re.compile(
    r"^\(?((?-i:[A-Za-z]))[^\S\n]*(?:\)|\.|:|(?=\n)|$)[^\S\n]*(.*)$", re.IGNORECASE | re.DOTALL
)
# Words that make a named option not the one chosen ("not a cat", "no dog", "isn't").
_NEGATIONS = frozenset({"not", "no", "neither", "nor", "none", "never", "t", "without"})
_NUMBER = re.compile(r"^(?:option\s+|choice\s+|#)?\(?(\d{1,3})\s*(\)|\.|:)?\s*(.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class Label:
    """One image's pseudo-label: ``label`` is a class index or None (no usable answer)."""

    image_id: str
    label: int | None
    answer: str | None  # the raw reply (None: not bought)
    source: str  # "answer" | "zeroshot"
    cached: bool = False
    cost_usd: Decimal = Decimal(0)
    error: str | None = None  # why the teacher gave no answer (None: not asked, or answered)


def display_name(class_name: str) -> str:
    """The class name as shown to the teacher: underscores become spaces."""
    return class_name.replace("_", " ").strip()


def check_choices(class_names: Sequence[str]) -> None:
    """Refuse (ConfigurationError) class lists a lettered question cannot show: fewer
    than 2 or more than 26 classes, two names shown as one option ("Cat", "cat"), a
    name an answer would read as an option letter ("c": option C, another class), or a
    name with no letter or digit ("🐱": no answer can be matched to it).

    >>> check_choices([f"c{i}" for i in range(27)])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    vlmclient.errors.ConfigurationError: answers ask ... at most 26 classes (27 given); use ...
    """
    if not 2 <= len(class_names) <= len(LETTERS):
        raise ConfigurationError(
            "answers ask a multiple-choice question with one letter per class, A to Z: "
            f"2 to {len(LETTERS)} classes ({len(class_names)} given)"
            if len(class_names) < 2
            else "answers ask a multiple-choice question with one letter per class, A to Z: "
            f"at most {len(LETTERS)} classes ({len(class_names)} given); use --route zeroshot "
            "(text prototypes) for more"
        )
    seen: dict[str, str] = {}
    for name in class_names:
        key = _key(display_name(name))
        if not key:  # matching reads letters and digits only: no answer could name it
            raise ConfigurationError(
                f"class {name!r} has no letter or digit an answer could name it by: rename "
                "it (e.g. 'cat') or use --route zeroshot"
            )
        if len(key) == 1 and _LETTER.match(key):  # its answer "c" would be option C
            raise ConfigurationError(
                f"class {name!r} could be read as an option letter in the teacher's answer: "
                f"rename it (e.g. 'letter_{key}') so its answers are not taken for another class"
            )
        other = seen.setdefault(key, name)
        if other != name:  # an answer naming it could only ever be read as one of them
            raise ConfigurationError(
                f"classes {other!r} and {name!r} are shown to the teacher as the same option "
                f"({display_name(name)!r}): rename one so their answers can be told apart"
            )


def choice_prompt(
    class_names: Sequence[str], question: str = DEFAULT_QUESTION, order: Sequence[int] | None = None
) -> str:
    """A multiple-choice prompt: the question, then ``Options:`` and one lettered line each.

    ``order`` lists class indices in the order shown (a shuffled order asks a second,
    independent question for the self-consistency check).

    >>> print(choice_prompt(["cat", "hot_dog"]))
    Which of these is shown in the image? Reply with one option only.
    Options:
    A) cat
    B) hot dog
    """
    idx = list(range(len(class_names))) if order is None else list(order)
    if sorted(idx) != list(range(len(class_names))):
        raise ValueError("order must be a permutation of the class indices")
    if not 2 <= len(idx) <= len(LETTERS):
        raise ValueError(f"a multiple-choice prompt needs 2 to {len(LETTERS)} classes")
    lines = [question, "Options:"]
    lines += [f"{LETTERS[k]}) {display_name(class_names[c])}" for k, c in enumerate(idx)]
    return "\n".join(lines)


def _norm(text: str) -> str:
    """Lower case, accents off, punctuation to spaces, spaces collapsed."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = re.sub(r"[^\w\s]|_", " ", text)
    return " ".join(text.split())


def _plurals(word: str) -> set[str]:
    """The word and its regular plurals (cat/cats, bus/buses, butterfly/butterflies)."""
    out = {word, word + "s", word + "es"}
    if len(word) > 2 and word.endswith("y") and word[-2] not in "aeiou":
        out.add(word[:-1] + "ies")
    return out


def _forms(key: str) -> set[str]:
    """Every word of a name, with its plurals."""
    return set().union(*map(_plurals, key.split())) if key else set()


def _key(text: str) -> str:
    """Normalised, article-free form used for matching names."""
    return _ARTICLE.sub("", _norm(text))


def matchable(text: str) -> bool:
    """Whether an answer can name ``text`` (a synonym): answers are matched by their
    letters and digits, so a word of emoji or punctuation only is matched by nothing.

    >>> matchable("puppy"), matchable("\N{CAT FACE}")
    (True, False)
    """
    return bool(_key(text))


def _variants(key: str) -> set[str]:
    """A name and its plural forms (the last word pluralised: "hot dog" -> "hot dogs")."""
    words = key.split()
    if not words:
        return set()
    return {" ".join([*words[:-1], w]) for w in _plurals(words[-1])}


def _strip_preamble(text: str) -> str:
    text = text.strip().strip("\"'`*").strip()
    for _ in range(3):  # "The answer is: it is a cat" has two
        new = _PREAMBLES.sub("", text, count=1).strip()
        # nothing left: the words were the answer (a class named "label" or "option")
        if new == text or not new.strip("\"'`*.!?"):
            break
        text = new
    return text.strip().strip("\"'`*").rstrip(".!?").strip()


def _named(text: str, keys: Mapping[str, int]) -> set[int] | None:
    """The options a normalised text names anywhere, longest name first ("hot dog" is not
    also "dog"); None when a negation ("not", "no", "isn't") stands beside them."""
    found: set[int] = set()
    rest = f" {text} "
    for key in sorted(keys, key=len, reverse=True):
        if key and f" {key} " in rest:
            found.add(keys[key])
            rest = rest.replace(f" {key} ", " | ")
    return None if found and _NEGATIONS & set(rest.split()) else found


def parse_answer(
    text: str | None,
    class_names: Sequence[str],
    *,
    order: Sequence[int] | None = None,
    synonyms: Mapping[str, str] | None = None,
) -> int | None:
    """The class index an answer names, or None when it names none or several.

    ``order`` is the option order the prompt showed (letters and numbers refer to it);
    ``synonyms`` maps other words to class names (``{"puppy": "dog"}``).

    >>> names = ["cat", "dog", "hot_dog"]
    >>> [parse_answer(a, names) for a in ["Dogs!", "(c)", "2)", "It is a hot dog.", "cat or dog"]]
    [1, 2, 1, 2, None]
    """
    if text is None:
        return None
    marks = list(_ANSWER_MARKER.finditer(text))
    if marks:  # what follows the last "answer:" is the answer, all of it
        text = text[marks[-1].end() :]
    shown = list(range(len(class_names))) if order is None else list(order)
    names = {_key(display_name(n)): i for i, n in enumerate(class_names)}
    for word, name in (synonyms or {}).items():
        if name in class_names:
            names.setdefault(_key(word), list(class_names).index(name))
    # every name as it is first: a class that is another's plural ("sunglasses" beside
    # "sunglass") is not that other's plural form
    keys = {name: i for name, i in names.items() if name}
    for name, i in names.items():
        for v in _variants(name):
            keys.setdefault(v, i)
    body = _strip_preamble(text)
    if not body:
        return None
    m = _LETTER.match(body)
    if m is not None:  # "B", "(b)", "B) dog"; a letter and a name that disagree: None
        k = LETTERS.index(m.group(1).upper())
        line, _, below = m.group(2).partition("\n")
        rest = _key(line)
        # an explanation below the letter may not name (or deny) any other option
        if k < len(shown) and (not rest or keys.get(rest) == shown[k]):
            others = _named(_key(below), keys)
            return shown[k] if others is not None and others <= {shown[k]} else None
        # a name that starts like a letter ("E. coli"), as it is: "A) cat" is no "a cat"
        return keys.get(_norm(body))
    whole = _key(body)
    if whole in keys:
        return keys[whole]
    m = _NUMBER.match(body)
    if m is not None:
        n, marker, rest = int(m.group(1)), m.group(2), _key(m.group(3))
        # "2)" or "option 2" is an option number; a bare "2" may be a class name's word
        named = keys.get(rest) if rest else None
        # A bare number may be a class name's own word (digits: "2 two"): prefer the name.
        bare = list({i for k, i in names.items() if m.group(1) in k.split()})
        if not rest and marker is None and len(bare) == 1:
            return bare[0]
        # words after the number must name its option ("3 or 5" is not option 3)
        if 1 <= n <= len(shown) and (not rest or named == shown[n - 1]):
            return shown[n - 1]
        if named is not None:
            return named
    # The answer names exactly one option somewhere ("I'd say dog, clearly"), and denies none.
    found = _named(whole, keys)
    if found is not None and len(found) == 1:
        return found.pop()
    # A distinctive word of exactly one option ("zero" for "0_zero").
    words = set(whole.split())
    hits = {i for k, i in names.items() if words and words <= _forms(k)}
    return hits.pop() if len(hits) == 1 else None


def before_the_cut(text: str) -> str:
    """An answer cut at the output-token limit without its last word, which may be cut
    ("cat" of "caterpillar"), and an article left before it (not option A).

    >>> before_the_cut("It is a cat"), before_the_cut("B) dog\\n\\nThe ears are flo")
    ('It is', 'B) dog\\n\\nThe ears are')
    """
    return re.sub(r"(?:\s+(?:a|an|the))?\s*\S*$", "", text, flags=re.IGNORECASE)


def sample_image(sample: Sample, hflip: bool) -> Image:
    """View 0 of ``sample`` (flipped if ``hflip``), as the teacher is sent it."""
    data, media_type = view_bytes(sample.path, sample.id, 0, hflip=hflip)
    return Image(data=data, media_type=media_type)


def shuffled_order(n: int, image_id: str, seed: int = 1) -> list[int]:
    """A per-image option order (deterministic), for the second, independent question."""
    rng = random.Random(f"{seed}\x00{image_id}")
    order = list(range(n))
    rng.shuffle(order)
    return order


@runtime_checkable
class LabelClient(Teacher, Protocol):
    """What labelling needs of its client (:class:`vlmclient.TeacherClient` is one): the
    Teacher calls, how many requests it runs at once, and how many items one may carry."""

    @property
    def concurrency(self) -> int: ...

    def batch_limit(self, kind: Kind) -> int: ...


async def answer_labels(
    dataset: Dataset,
    client: LabelClient,
    class_names: Sequence[str],
    *,
    samples: Sequence[Sample] | None = None,
    question: str = DEFAULT_QUESTION,
    shuffle_seed: int | None = None,
    synonyms: Mapping[str, str] | None = None,
    max_output_tokens: int = MAX_ANSWER_TOKENS,
    on_progress: Callable[[int], None] | None = None,
) -> list[Label]:
    """Ask the teacher a multiple-choice question per image; parse each reply.

    One Label per sample, in order. When the budget stops the run, the images not
    answered get ``answer=None`` (nothing is lost: what was bought is cached; run again
    with more budget). An image that cannot be read, or whose pixels do not decode (the
    teacher refuses it: 400), gets ``answer=""`` (no label; asking again cannot change
    it). A failed answer gets ``answer=None`` and its ``error``; after
    :data:`MAX_FAILURES_IN_A_ROW` of them nothing more is sent. Errors every request would
    hit (authentication, permission, unknown model, quota, configuration, a failed spend
    record) stop the run at once and are raised after the requests in flight end.
    ``shuffle_seed`` shows the options in a per-image shuffled order
    (a different question, so a different cache entry: the second sampled answer).
    """
    check_choices(class_names)
    # else every request failed validation, read below as an unreadable image: all ""
    limit = AnswerRequest.model_fields["max_output_tokens"].metadata
    most = next(m.le for m in limit if hasattr(m, "le"))
    if (
        isinstance(max_output_tokens, bool)
        or not isinstance(max_output_tokens, int)
        or not 1 <= max_output_tokens <= most
    ):
        raise ValueError(
            f"max_output_tokens must be a whole number from 1 to {most}, not "
            f"{max_output_tokens!r} (the default, {MAX_ANSWER_TOKENS}, fits an option name)"
        )
    todo = list(dataset.samples if samples is None else samples)
    out: dict[int, Label] = {}
    stop = asyncio.Event()
    gate = asyncio.Semaphore(max(1, client.concurrency * IN_FLIGHT_PER_SLOT))
    fatal: list[VLMError] = []
    in_a_row = 0

    async def ask(i: int, s: Sample) -> None:
        nonlocal in_a_row
        async with gate:
            if stop.is_set():
                return
            order = None if shuffle_seed is None else shuffled_order(
                len(class_names), s.id, shuffle_seed
            )
            # outside the try: a prompt that cannot be made is our error, not the image's
            prompt = choice_prompt(class_names, question, order)
            image: Image | None = None
            try:
                image = sample_image(s, dataset.hflip)
                req = AnswerRequest(image=image, prompt=prompt, max_output_tokens=max_output_tokens)
                [res] = await client.answer([req])
            except BudgetExceededError:
                stop.set()
                return
            except (InputError, OSError, ValueError):
                out[i] = Label(s.id, None, "", "answer")  # unreadable image: no label
                return
            except FATAL as exc:
                stop.set()
                fatal.append(exc)
                return
            except VLMError as exc:
                if isinstance(exc, BadRequestError) and not (
                    image is None or pixels_decode(image.data)
                ):  # refused for pixels that do not decode: as unreadable, not a failure
                    out[i] = Label(s.id, None, "", "answer")
                    return
                out[i] = Label(s.id, None, None, "answer", error=str(exc))  # a rerun retries
                in_a_row += 1
                if in_a_row >= MAX_FAILURES_IN_A_ROW:
                    stop.set()
                return
            in_a_row = 0
            text = before_the_cut(res.text) if res.truncated else res.text
            label = parse_answer(text, class_names, order=order, synonyms=synonyms)
            out[i] = Label(s.id, label, res.text, "answer", res.cached, res.cost_usd)
            if on_progress is not None:
                on_progress(len(out))

    # not a bare gather: one worker raising (a failing on_progress) left the others sending
    await all_or_none(ask(i, s) for i, s in enumerate(todo))
    if fatal:
        raise fatal[0]
    return [out.get(i, Label(s.id, None, None, "answer")) for i, s in enumerate(todo)]


async def embedding_labels(
    dataset: Dataset,
    client: LabelClient,
    class_names: Sequence[str],
    *,
    samples: Sequence[Sample] | None = None,
    prompt: str = "a photo of a {}",
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[Label], np.ndarray | None]:
    """Zero-shot labels from teacher embeddings (bought once, cached; usually cheaper).

    Returns the labels and the (N, C) teacher probabilities (softmax of 100 * cosine; None
    when the class prompts could not be bought). Unbought images get ``label=None``.
    Requests of up to the provider's batch size go out ``client.concurrency`` at a time;
    ``on_progress`` gets the number of images done after each.
    """
    todo = list(dataset.samples if samples is None else samples)
    try:
        texts = await client.embed_texts(
            [TextEmbeddingRequest(text=p) for p in class_prompts(class_names, prompt)]
        )
    except BudgetExceededError:
        return [Label(s.id, None, None, "zeroshot") for s in todo], None
    text = np.stack([t.vector for t in texts])
    vecs: dict[int, np.ndarray] = {}
    limit = client.batch_limit("image_embedding")
    stop = asyncio.Event()
    gate = asyncio.Semaphore(max(1, client.concurrency))
    done = 0
    unreadable: set[int] = set()  # asked, but the teacher cannot decode them: no label

    async def buy(start: int) -> None:
        try:
            await buy_chunk(start)
        except BaseException:
            # nothing more is sent (a failing on_progress too: it went on buying every
            # image); the error is raised when the requests in flight have ended
            stop.set()
            raise

    async def buy_chunk(start: int) -> None:
        nonlocal done
        async with gate:
            if stop.is_set():
                return
            chunk = [(start + k, s) for k, s in enumerate(todo[start : start + limit])]
            reqs = [ImageEmbeddingRequest(image=sample_image(s, dataset.hflip)) for _, s in chunk]
            try:
                try:
                    res = await client.embed_images(reqs)
                except (BadRequestError, InputError):
                    # a file whose pixels do not decode makes a provider refuse its whole
                    # request (or the client, when it must be downscaled before sending):
                    # it stays unlabelled, its batch-mates are asked again (cached if sent)
                    good = [k for k, r in enumerate(reqs) if pixels_decode(r.image.data)]
                    if len(good) == len(reqs):
                        raise
                    unreadable.update(i for k, (i, _) in enumerate(chunk) if k not in good)
                    chunk, reqs = [chunk[k] for k in good], [reqs[k] for k in good]
                    res = await client.embed_images(reqs) if reqs else []
            except BudgetExceededError:
                stop.set()
                return
            vecs.update({i: r.vector for (i, _), r in zip(chunk, res, strict=True)})
            done += len(chunk)
            if on_progress is not None:
                on_progress(done)

    ended = await asyncio.gather(
        *(buy(start) for start in range(0, len(todo), limit)), return_exceptions=True
    )
    for outcome in ended:
        if isinstance(outcome, BaseException):
            raise outcome
    probs = np.full((len(todo), len(class_names)), np.nan, dtype=np.float32)
    bought = sorted(vecs)
    if bought:
        image = np.stack([vecs[i] for i in bought])
        probs[bought] = zeroshot_probs(image, text)
        best = dict(zip(bought, zeroshot_labels(image, text).tolist(), strict=True))
    labels = []
    for i, s in enumerate(todo):
        if i not in vecs:  # unreadable: answered "" as an unreadable image's answer is
            labels.append(Label(s.id, None, "" if i in unreadable else None, "zeroshot"))
            continue
        c = best[i]
        labels.append(Label(s.id, c, class_names[c], "zeroshot"))
    return labels, probs
