"""What one teacher server owns (config, backend, bill, limiter, batchers) and the compute
every wire format shares: embedding inputs and answering a chat."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable

import numpy as np
from starlette.requests import Request

from .answers import MAX_OPTIONS, option_prompt, parse_options, pick_option
from .backend_base import Backend, ImageDecodeError, ImageOut, ImageTask
from .batching import MicroBatcher
from .billing import Billing
from .config import ServerConfig
from .faults import FaultPlan
from .ratelimit import SlidingWindowLimiter
from .wire import ChatRequest, EmbedInput, ImagePart, WireError, check_pixels

__all__ = ["NO_IMAGE_ANSWER", "TeacherState"]

NO_IMAGE_ANSWER = "No image was given."


class TeacherState:
    """Everything one server instance owns: config, backend, bill, limiter, batchers."""

    def __init__(
        self, config: ServerConfig, backend: Backend, clock: Callable[[], float]
    ) -> None:
        self.config = config
        self.backend = backend
        self.billing = Billing()
        self.plan = FaultPlan(config.faults)
        self.limiter = SlidingWindowLimiter(config.rpm, clock=clock) if config.rpm else None
        self.images: MicroBatcher[ImageTask, ImageOut] = MicroBatcher(
            backend.embed_images, max_batch=backend.max_batch, executor=backend.executor
        )
        self.texts: MicroBatcher[str, np.ndarray] = MicroBatcher(
            backend.embed_texts, max_batch=backend.max_text_batch, executor=backend.executor
        )
        self._token = config.token.get_secret_value().encode("utf-8")

    def authorised(self, request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Constant-time compare: the token is the only thing between a caller and the bill.
        return hmac.compare_digest(value.strip().encode("utf-8"), self._token)

    async def aclose(self) -> None:
        await self.images.aclose()
        await self.texts.aclose()

    # ------------------------------------------------------------- shared compute

    def bound_pixels(self, images: Iterable[ImagePart]) -> None:
        """400 before decoding when the images have more pixels than this server takes."""
        check_pixels(
            images,
            per_image=self.config.max_image_pixels,
            per_request=self.config.max_request_pixels,
        )

    async def embed_inputs(self, inputs: list[EmbedInput]) -> np.ndarray:
        """One unit vector per input; text+image inputs are the mean of their parts."""
        self.bound_pixels(img for inp in inputs for img in inp.images)
        texts = [inp.text for inp in inputs if inp.text is not None]
        tasks = [ImageTask(img.data) for inp in inputs for img in inp.images]
        try:
            text_vecs = iter(await self.texts.submit_many(texts) if texts else [])
            image_outs = iter(await self.images.submit_many(tasks) if tasks else [])
        except ImageDecodeError as exc:
            raise WireError(400, str(exc)) from exc
        rows = []
        for inp in inputs:
            parts = [next(text_vecs)] if inp.text is not None else []
            parts += [next(image_outs).vector for _ in inp.images]
            v = np.mean(np.stack(parts), axis=0)
            rows.append(v / max(float(np.linalg.norm(v)), 1e-12))
        return np.stack(rows).astype(np.float32)

    async def answer(self, chat: ChatRequest) -> str:
        """The answer to a chat: an option picked by similarity, or the image's label."""
        options = parse_options(chat.prompt)
        if len(options) > MAX_OPTIONS:
            raise WireError(
                400,
                f"the prompt lists {len(options):,} options; this server picks among at most "
                f"{MAX_OPTIONS:,} options per answer",
            )
        self.bound_pixels(chat.images)
        if chat.images:
            try:
                outs = await self.images.submit_many(
                    [ImageTask(img.data, want_label=not options) for img in chat.images]
                )
            except ImageDecodeError as exc:
                raise WireError(400, str(exc)) from exc
            if not options:
                return outs[0].label or "unknown"
            query = np.mean(np.stack([o.vector for o in outs]), axis=0)
        elif options:
            query = (await self.texts.submit_many([chat.prompt]))[0]
        else:
            return NO_IMAGE_ANSWER
        option_vecs = await self.texts.submit_many([option_prompt(o) for o in options])
        return pick_option(query, options, option_vecs)
