"""SWAD's running average and the LossValley rule on scripted losses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distill.train.swad import Average, LossValley, update_bn


def _seg(value: float, step: int) -> Average:
    a = Average()
    a.update({"w": torch.tensor([value])}, step=step)
    return a


def test_average_is_a_running_mean_and_first_update_replaces() -> None:
    a = Average({"w": torch.tensor([100.0])})
    for i, v in enumerate([1.0, 2.0, 6.0]):
        a.update({"w": torch.tensor([v])}, step=i)
    assert a.params["w"].item() == pytest.approx(3.0)
    assert (a.n, a.start_step, a.end_step) == (3, 0, 2)


def test_loss_valley_converges_averages_and_dies() -> None:
    lv = LossValley(n_converge=3, n_tolerance=6, tolerance_ratio=0.3)
    losses = [5.0, 4.0, 3.0, 1.0, 1.1, 1.05, 1.0, 1.2, 1.1, 1.2, 1.1, 1.2] + [9.0] * 6
    for i, loss in enumerate(losses):
        lv.update_and_evaluate(_seg(float(i), i), loss)
    # Converged when the oldest of three segments had the lowest loss: segment 3 (loss 1.0).
    assert lv.converge_step == 3
    assert lv.threshold == pytest.approx((1.0 + 1.1 + 1.05) / 3 * 1.3)
    assert lv.dead_valley  # six losses of 9 in a row exceed the threshold
    params = lv.final_params()
    assert params is not None
    info = lv.describe()
    # Segments 3 (the minimum) to 11 are averaged, none of the 9.0 ones (12..).
    assert info["start_step"] == 3 and info["end_step"] == 11
    # It died when six 9.0s filled the tolerance window: at segment 17, the trainer's cue
    # to end the stage.
    assert info["dead_at_step"] == 17
    assert params["w"].item() == pytest.approx(sum(range(3, 12)) / 9)


def test_loss_valley_without_convergence_returns_last_segment() -> None:
    lv = LossValley()
    for i, loss in enumerate([5.0, 4.0, 3.0, 2.0]):
        lv.update_and_evaluate(_seg(float(i), i), loss)
    assert not lv.is_converged
    assert lv.final_params()["w"].item() == 3.0


def test_update_bn_recomputes_statistics() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    batches = [torch.randn(8, 3, 4, 4) + 5 for _ in range(3)]
    used = update_bn(net, iter(batches), 2)
    assert used == 2
    with torch.no_grad():
        feats = torch.cat([net[0](b) for b in batches[:2]])
    want = feats.mean(dim=(0, 2, 3))
    assert torch.allclose(net[1].running_mean, want, atol=1e-4)


def test_update_bn_stops_at_n_steps_and_counts_short_loaders() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    batches = iter([torch.randn(2, 3, 4, 4) for _ in range(5)])
    assert update_bn(net, batches, 3) == 3
    assert len(list(batches)) == 2  # the rest of the loader is left unread
    assert update_bn(net, iter([torch.randn(2, 3, 4, 4)]), 4) == 1


def test_update_bn_with_no_steps_or_no_batchnorm_changes_nothing() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    net(torch.randn(8, 3, 4, 4) + 5)  # training mode: running stats move off their reset
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert update_bn(net, iter([torch.randn(2, 3, 4, 4)]), 0) == 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert update_bn(nn.Linear(3, 2), iter([torch.randn(2, 3)]), 5) == 0


@pytest.mark.parametrize("cut", [2, 5, 9])
def test_loss_valley_continues_from_its_saved_state(cut: int) -> None:
    """to_state/from_state (what a checkpoint keeps) in the middle of the scripted run
    above, before, at and after convergence: the restored rule decides and averages as the
    one never saved."""
    from safetensors.torch import load_file, save_file

    losses = [5.0, 4.0, 3.0, 1.0, 1.1, 1.05, 1.0, 1.2, 1.1, 1.2, 1.1, 1.2] + [9.0] * 6
    whole = LossValley(n_converge=3, n_tolerance=6, tolerance_ratio=0.3)
    for i, loss in enumerate(losses):
        whole.update_and_evaluate(_seg(float(i), i), loss)
    first = LossValley(n_converge=3, n_tolerance=6, tolerance_ratio=0.3)
    for i, loss in enumerate(losses[:cut]):
        first.update_and_evaluate(_seg(float(i), i), loss)
    meta, tensors = first.to_state()
    assert len(tensors) <= 7  # the queues share their segments: each stored once
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as d:  # through the files a checkpoint writes
        save_file(tensors, d + "/s.safetensors")
        meta = json.loads(json.dumps(meta))
        resumed = LossValley.from_state(meta, load_file(d + "/s.safetensors"), 3, 6, 0.3)
    for i, loss in enumerate(losses[cut:], start=cut):
        resumed.update_and_evaluate(_seg(float(i), i), loss)
    assert resumed.describe() == whole.describe()
    a, b = resumed.final_params(), whole.final_params()
    assert a is not None and b is not None
    assert a["w"].item() == pytest.approx(b["w"].item())
