"""Best-ID model selection restores the weights that scored best, not a mix.

The kept "best" weights used to be views of the live tensors (``.cpu()`` and
``.contiguous()`` return the tensor itself on the CPU), so the optimizer kept updating them;
only channels_last conv weights were real copies. A run's final model was then the best
step's convolutions with the last step's biases, BatchNorm and head: on MNIST -> digits one
ERM run scored 98.5 % ID at its best evaluation and ended at 90.0 %.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distill.cli import main
from distill.train.checkpoints import RunState, state_dict

from .conftest import TEACHER


def test_a_kept_state_does_not_move_with_training() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.Flatten(), torch.nn.LazyLinear(2))
    model(torch.zeros(1, 3, 5, 5))
    model = model.to(memory_format=torch.channels_last)
    run = RunState()
    run.keep_if_best(0.9, model)  # type: ignore[arg-type]
    kept = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.ones(2, 3, 5, 5)).sum().backward()
    opt.step()  # in place, as every optimizer step
    assert run.best_state is not None
    for name, value in kept.items():
        assert torch.equal(run.best_state[name], value), name
    assert state_dict(model)["3.weight"].data_ptr() != model[3].weight.data_ptr()


def test_the_final_model_is_the_best_evaluated_one(tiny_data: Path, tiny_cache: Path,
                                                   tmp_path: Path) -> None:
    # The check needs a run that ends below its best evaluation; which seed does depends on
    # the machine's float rounding, so the first of a few seeds that does is used.
    for seed in range(6):
        out = tmp_path / f"run-{seed}"
        code = main(["train", str(tiny_data), "--cache", str(tiny_cache), "--teacher", TEACHER,
                     "--out", str(out), "--method", "erm", "--steps", "12", "--eval-every", "1",
                     "--lr", "3e-2", "--warmup", "0", "--student", "mobilenetv3_small_050",
                     "--no-pretrained", "--freeze-bn", "--image-size", "32",
                     "--batch-per-domain", "4", "--test-domains", "dom3", "--threads", "1",
                     "--seed", str(seed)])
        assert code == 0  # --freeze-bn: the setup in which such runs end below their best
        metrics = json.loads((out / "metrics.json").read_text())
        history = [h for h in metrics["history"] if h["stage"] == "erm"]
        best = max(history, key=lambda h: h["mean_id"])  # the first of equals, as kept
        if history[-1]["mean_id"] < best["mean_id"]:
            break
    else:
        pytest.fail("no seed ended below its best evaluation: the check cannot fail")
    assert metrics["stages"][0]["selected"] == "best_id"
    assert metrics["mean_id"] == best["mean_id"] == metrics["stages"][0]["best_id"]
    assert metrics["mean_ood"] == best["mean_ood"]
