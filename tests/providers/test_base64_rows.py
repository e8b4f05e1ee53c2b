"""base64_vectors: exact float32 rows, writable, one or many per answer, non-finite refused
wherever it sits."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from vlmclient import ResponseValidationError
from vlmclient.providers.vectors import base64_vectors


def _row(values: list[float]) -> str:
    return base64.b64encode(np.array(values, "<f4").tobytes()).decode()


@pytest.mark.parametrize("n", [1, 3])
def test_rows_decode_exactly_and_are_writable(n: int) -> None:
    values = [[i + 0.5, -2.0 * i, 1e30] for i in range(n)]
    got = base64_vectors([_row(v) for v in values], expected=n, request_id=None, provider="x")
    assert [v.tolist() for v in got] == [np.array(v, np.float32).tolist() for v in values]
    for v in got:
        assert v.shape == (3,) and v.dtype == np.float32 and v.flags.writeable
    got[0][0] = 7.0  # a row is the caller's to change
    assert got[0][0] == 7.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", [0, 2])
def test_a_non_finite_number_in_any_row_is_refused(bad: float, where: int) -> None:
    rows = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    rows[where][1] = bad
    with pytest.raises(ResponseValidationError, match="NaN or infinity"):
        base64_vectors([_row(r) for r in rows], expected=3, request_id=None, provider="x")
    with pytest.raises(ResponseValidationError, match="NaN or infinity"):
        base64_vectors([_row(rows[where])], expected=1, request_id=None, provider="x")
