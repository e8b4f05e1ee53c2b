"""The Teacher protocol: what everything in ``distill`` depends on, not a provider."""

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

__all__ = ["Teacher"]


@runtime_checkable
class Teacher(Protocol):
    """A vision-language teacher: image embeddings, text embeddings and answers."""

    async def embed_images(
        self, requests: Sequence[ImageEmbeddingRequest]
    ) -> list[EmbeddingResult]: ...

    async def embed_texts(
        self, requests: Sequence[TextEmbeddingRequest]
    ) -> list[EmbeddingResult]: ...

    async def answer(self, requests: Sequence[AnswerRequest]) -> list[AnswerResult]: ...
