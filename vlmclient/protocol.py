"""The Teacher protocol: what everything in ``distill`` depends on, not a provider.

:class:`Embedder` is the embedding half (what a harvest needs); :class:`Teacher` adds
answers. :class:`vlmclient.TeacherClient` is both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .models import (
    AnswerRequest,
    AnswerResult,
    EmbeddingResult,
    ImageEmbeddingRequest,
    TextEmbeddingRequest,
)

__all__ = ["Embedder", "Teacher"]


@runtime_checkable
class Embedder(Protocol):
    """A teacher of embeddings: images and texts into one space."""

    async def embed_images(
        self, requests: Sequence[ImageEmbeddingRequest]
    ) -> list[EmbeddingResult]: ...

    async def embed_texts(
        self, requests: Sequence[TextEmbeddingRequest]
    ) -> list[EmbeddingResult]: ...


@runtime_checkable
class Teacher(Embedder, Protocol):
    """A vision-language teacher: image embeddings, text embeddings and answers."""

    async def answer(self, requests: Sequence[AnswerRequest]) -> list[AnswerResult]: ...
