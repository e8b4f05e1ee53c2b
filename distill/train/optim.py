"""The students' optimizer: Adam, fused into one kernel where this torch can.

torch's default Adam on the CPU updates tensor by tensor: for ``tf_efficientnet_lite0``
that took 21 ms of CPU a step on this project's machine, against 5 ms fused
(docs/benchmarks.md, "Trainer speed"); the fused step computes the same update (to float
rounding).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["adam"]


def adam(params: Iterable[Any], *, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """``torch.optim.Adam`` with ``fused=True``, or the default one where this torch has no
    fused Adam for these parameters (torch < 2.4 on the CPU).

    >>> p = torch.nn.Parameter(torch.ones(3))
    >>> opt = adam([p], lr=0.1)
    >>> p.grad = torch.ones(3)
    >>> opt.step()
    >>> [round(v, 3) for v in p.tolist()]
    [0.9, 0.9, 0.9]
    """
    groups = list(params)
    try:
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay, fused=True)
    except RuntimeError:  # "fused=True requires all the params to be ... supported devices"
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
