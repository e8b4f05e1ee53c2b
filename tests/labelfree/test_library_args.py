"""The labelling library calls refuse arguments that cannot work before anything is sent,
rather than labelling every image as unreadable. Against the real local server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from distill.data import scan
from distill.labelfree.pseudolabel import answer_labels
from tests.e2e.conftest import TOKEN, local_teacher
from vlmclient import Budget, TeacherClient


@pytest.mark.parametrize("tokens", [0, -1, 10**6, 2.5, True, "16"])
async def test_answer_labels_refuses_an_output_limit_no_request_can_carry(
    monkeypatch: pytest.MonkeyPatch, digits_data: Path, tokens: object
) -> None:
    """``max_output_tokens=0`` (or 10**6, over what a request takes) made every
    AnswerRequest fail validation, which was read as an unreadable image: every image got
    ``answer=""`` ("asking again cannot change it"), nothing sent, no error."""
    ds = scan(digits_data)
    with local_teacher(monkeypatch) as teacher:
        async with TeacherClient(
            "local:hash", api_key=TOKEN, base_url=teacher.url, budget=Budget("1.00")
        ) as client:
            with pytest.raises(ValueError, match=re.escape("max_output_tokens must be")):
                await answer_labels(ds, client, ds.class_names, max_output_tokens=tokens)  # type: ignore[arg-type]
        assert teacher.billing()["requests"] == 0
