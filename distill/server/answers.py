"""Answers from embeddings: pick the listed option nearest the image, else name the class."""

from __future__ import annotations

import re

import numpy as np

__all__ = ["MAX_OPTIONS", "option_prompt", "parse_options", "pick_option"]

# Every listed option is embedded for one answer: without a cap, a prompt of 200,000
# options (1.7 MB) took 1.1 GB and 12 s. ImageNet's 1000 classes fit; the client's
# multiple-choice prompts list at most 26.
MAX_OPTIONS = 1000

_HEADER = re.compile(
    r"\b(?:options|choices|candidates|classes|labels|categories|one of|choose from)\s*:\s*(.*)$",
    re.IGNORECASE,
)
_BULLET = re.compile(r"^\s*[-*•]\s+(.+?)\s*$")
_LETTERED = re.compile(r"^\s*\(?(?:[A-Za-z]|\d{1,2})[).:]\s+(.+?)\s*$")
_SPLIT = re.compile(r"\s*(?:,|;|\||/|\bor\b)\s*", re.IGNORECASE)


def _clean(option: str) -> str:
    return option.strip().strip("\"'`").rstrip(".?!").strip()


def _unique(options: list[str]) -> list[str]:
    out = [o for o in (_clean(x) for x in options) if o]
    return list(dict.fromkeys(out))


def parse_options(prompt: str) -> list[str]:
    """Options listed in a prompt, in order; [] when it lists none.

    Understands ``Options: a, b or c`` (also Choices/Classes/Labels/"one of"), an
    ``Options:`` line followed by bullets, ``- a`` / ``* a`` bullets and ``A) a`` /
    ``1. a`` enumerations. Two or more options are needed to count as a list.

    >>> parse_options("What is in the image? Options: cat, dog or car.")
    ['cat', 'dog', 'car']
    >>> parse_options("Which one?\\nA) a cat\\nB) a dog")
    ['a cat', 'a dog']
    """
    lines = prompt.splitlines()
    for i, line in enumerate(lines):
        m = _HEADER.search(line)
        if m is None:
            continue
        rest = m.group(1).strip()
        if rest:
            found = _unique(_SPLIT.split(rest))
        else:
            found = []
            for follow in lines[i + 1 :]:
                b = _BULLET.match(follow) or _LETTERED.match(follow)
                if b is None:
                    if follow.strip():
                        break
                    continue
                found.append(b.group(1))
            found = _unique(found)
        if len(found) >= 2:
            return found
    for pattern in (_BULLET, _LETTERED):
        found = _unique([m.group(1) for line in lines if (m := pattern.match(line))])
        if len(found) >= 2:
            return found
    return []


def option_prompt(option: str) -> str:
    """The text embedded for an option, phrased like the class bank's prompts.

    >>> option_prompt("cat"), option_prompt("an apple")
    ('a photo of a cat', 'a photo of an apple')
    """
    lowered = option.lower()
    if lowered.startswith(("a photo", "an image", "a picture")):
        return option
    if lowered.startswith(("a ", "an ", "the ")):
        return f"a photo of {option}"
    return f"a photo of a {option}"


def pick_option(query: np.ndarray, options: list[str], option_vecs: list[np.ndarray]) -> str:
    """The option whose vector has the highest cosine with ``query`` (ties: first listed)."""
    mat = np.stack(option_vecs).astype(np.float32)
    mat /= np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
    q = query.astype(np.float32) / max(float(np.linalg.norm(query)), 1e-12)
    return options[int(np.argmax(mat @ q))]
