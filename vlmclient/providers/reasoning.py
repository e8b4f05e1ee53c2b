"""The reasoning ("thinking") setting of answer teachers, and the empty-answer error.

Reasoning models spend hidden tokens before they answer, and those tokens count against
the same output limit as the answer (OpenAI ``max_completion_tokens``, Gemini
``maxOutputTokens``, Anthropic ``max_tokens``). Pseudo-labelling asks for 16-64 tokens,
so a model that thinks by default can use the whole allowance and return no text. Each
answer adapter therefore sends an explicit setting, ``off`` unless the caller asks for
another level with the ``reasoning`` param (``vlm-distill pseudolabel --reasoning``).
Each adapter maps the level onto its own wire field; ``default`` sends no field at all
and leaves the provider's default in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigurationError, TruncatedAnswerError
from ..models import AnswerRequest, Usage
from .base import CallSpec

__all__ = [
    "DEFAULT_REASONING",
    "REASONING_LEVELS",
    "REASONING_PARAM",
    "reasoning_level",
    "truncated_answer",
    "without_reasoning",
]

REASONING_PARAM = "reasoning"
REASONING_LEVELS = ("off", "minimal", "low", "medium", "high", "default")
DEFAULT_REASONING = "off"


def reasoning_level(params: Mapping[str, Any]) -> str:
    """The requested level (``off`` when unset); ConfigurationError for anything else."""
    level = params.get(REASONING_PARAM, DEFAULT_REASONING)
    if level not in REASONING_LEVELS:
        raise ConfigurationError(
            f"reasoning must be one of {', '.join(REASONING_LEVELS)}, not {level!r}"
        )
    return str(level)


def without_reasoning(params: Mapping[str, Any]) -> dict[str, Any]:
    """The params to put on the wire: ours (``reasoning``) removed."""
    return {k: v for k, v in params.items() if k != REASONING_PARAM}


def truncated_answer(
    spec: CallSpec,
    *,
    provider: str,
    usage: Usage,
    request_id: str | None,
    reported: object | None = None,
    limit: int | None = None,
) -> TruncatedAnswerError:
    """The error for a billed answer with no text that stopped at the output-token limit.

    ``reported`` is the provider's own usage block: with it the answer is charged what
    the provider says it billed; without it, the reservation. ``limit`` defaults to the
    answer request's ``max_output_tokens``."""
    model, level = spec.model, reasoning_level(spec.params)
    if limit is None:
        (item,) = spec.items
        assert isinstance(item, AnswerRequest)
        limit = item.max_output_tokens
    if level == "off":
        fix = (
            f"raise the answer's max_output_tokens above {limit} (this model reasons even "
            "with reasoning off)"
        )
    else:
        fix = f"run with --reasoning off, or raise max_output_tokens above {limit}"
    err = TruncatedAnswerError(
        f"{model} returned no answer text: it stopped at the {limit}-token output limit "
        f"(reasoning {level!r}; {usage.output_tokens} output tokens billed). Not retried, "
        f"not cached: {fix}",
        provider=provider,
        request_id=request_id,
    )
    err.usage = usage
    err.reported = reported
    return err
