"""Use the teacher client directly: embeddings and answers, budget, cache, ledger.

Starts the bundled local teacher (hash backend: fast, no weights) on a free loopback
port, so it runs anywhere with no key; swap the teacher name and drop the server to use
a real provider.

    python examples/client_api.py
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import tempfile
from decimal import Decimal
from pathlib import Path

from PIL import Image as PILImage
from pydantic import SecretStr

from cache import ResponseCache, SpendLedger
from distill.server import HashBackend, ServerConfig, ServerThread, create_app
from vlmclient import (
    AnswerRequest,
    Budget,
    BudgetExceededError,
    Image,
    ImageEmbeddingRequest,
    TeacherClient,
    TextEmbeddingRequest,
)


def png(colour: tuple[int, int, int]) -> Image:
    buf = io.BytesIO()
    PILImage.new("RGB", (32, 32), colour).save(buf, "PNG")
    return Image.from_bytes(buf.getvalue())


async def main(workdir: Path, base_url: str) -> None:
    images = [ImageEmbeddingRequest(image=png((i * 40, 0, 0))) for i in range(5)]
    with (
        # the ledger first: a foreign ledger.jsonl is refused before responses/ is made
        SpendLedger(workdir / "ledger.jsonl") as ledger,
        ResponseCache(workdir / "responses") as cache,
    ):
        async with TeacherClient(
            "local:hash",
            base_url=base_url,
            budget=Budget(Decimal("0.01")),
            cache=cache,
            ledger=ledger,
        ) as teacher:
            vecs = await teacher.embed_images(images)
            again = await teacher.embed_images(images)  # served from the cache
            [cat] = await teacher.embed_texts([TextEmbeddingRequest(text="a photo of a cat")])
            [answer] = await teacher.answer(
                [
                    AnswerRequest(
                        image=images[0].image,
                        prompt="Options: red, green, blue",
                        max_output_tokens=4,
                    )
                ]
            )
            print(
                f"{len(vecs)} image vectors of dim {vecs[0].dim}; cached the second time: "
                f"{all(r.cached for r in again)}; text dim {cat.dim}; answer {answer.text!r}"
            )
            print(f"spent ${teacher.budget.spent} of $0.01")
            try:
                many = [
                    ImageEmbeddingRequest(image=png((0, i % 256, i // 256))) for i in range(500)
                ]
                await teacher.embed_images(many)
            except BudgetExceededError as exc:
                print(f"refused before sending: {exc}")


if __name__ == "__main__":
    # no options; --help says what the example does instead of running it
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    token = "example-token"
    os.environ["VLM_DISTILL_TEACHER_TOKEN"] = token
    with (
        tempfile.TemporaryDirectory() as tmp,
        ServerThread(create_app(ServerConfig(token=SecretStr(token)), HashBackend())) as server,
    ):
        asyncio.run(main(Path(tmp), server.base_url))
