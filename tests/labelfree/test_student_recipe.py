"""The label-free student is trained as the trainer trains: BatchNorm frozen (a pretrained
student's), each batch augmented by the views' recipe (no flip)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.labelfree.rounds import jitter, train_student


def _batchnorm_stats(model: torch.nn.Module) -> list[torch.Tensor]:
    return [
        t.clone()
        for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        for t in (m.running_mean, m.running_var)
        if t is not None
    ]


@pytest.mark.parametrize(("freeze_bn", "frozen"), [(True, True), (False, False), (None, False)])
def test_batchnorm_frozen_when_asked(freeze_bn: bool | None, frozen: bool) -> None:
    """Frozen when asked; by default only a pretrained student's (this one is random:
    its initial statistics are nothing to keep)."""
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=gen)
    targets = np.eye(10, dtype=np.float32)[np.arange(8) % 10]
    model = train_student(pixels, targets, steps=2, batch_size=4, freeze_bn=freeze_bn)
    stats = _batchnorm_stats(model)
    assert stats  # the default student has BatchNorm layers
    # a fresh (not pretrained) BatchNorm starts at mean 0, variance 1
    untouched = all(
        torch.equal(t, torch.zeros_like(t)) or torch.equal(t, torch.ones_like(t)) for t in stats
    )
    assert untouched == frozen


def test_jitter_is_seeded_and_keeps_a_flat_image_flat() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=gen)
    a = jitter(x, torch.Generator().manual_seed(7))
    b = jitter(x, torch.Generator().manual_seed(7))
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, b)  # the generator decides everything
    assert not torch.equal(a, jitter(x, torch.Generator().manual_seed(8)))
    assert (a != x).any(dim=(1, 2, 3)).all()  # every image changed
    flat = torch.full((4, 3, 16, 16), 120, dtype=torch.uint8)
    out = jitter(flat, torch.Generator().manual_seed(0))
    # a crop of a flat image is flat; brightness scales it by 0.7-1.3; contrast keeps it
    for img in out:
        assert int(img.min()) == int(img.max())
        assert 0.7 * 120 - 1 <= int(img[0, 0, 0]) <= 1.3 * 120 + 1


def test_jitter_crop_keeps_most_of_the_image() -> None:
    """The crop covers 70-100 % of the area: a bright square in the middle stays inside."""
    x = torch.zeros((32, 3, 32, 32), dtype=torch.uint8)
    x[:, :, 12:20, 12:20] = 200
    out = jitter(x, torch.Generator().manual_seed(3)).float()
    centre = out[:, :, 14:18, 14:18].mean(dim=(1, 2, 3))
    border = torch.cat([out[:, :, :2].flatten(1), out[:, :, -2:].flatten(1)], 1).mean(1)
    assert (centre > 100).all() and (border < 20).all()


def test_a_pretrained_student_keeps_its_imagenet_statistics_by_default() -> None:
    from distill.train.student import build_student

    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=gen)
    targets = np.eye(10, dtype=np.float32)[np.arange(4)]
    fresh = build_student("tf_efficientnet_lite0", method="kd", num_classes=10, pretrained=True)
    model = train_student(pixels, targets, steps=1, batch_size=4,
                          student="tf_efficientnet_lite0", pretrained=True)
    before, after = _batchnorm_stats(fresh), _batchnorm_stats(model)
    assert before and all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_the_learning_rate_warms_up_over_a_tenth_of_the_steps(adam_lrs: list[float]) -> None:
    """Adam's first step moves every weight by about the full lr; with frozen BatchNorm
    that step could leave the budget curve's student dead (loss stuck at ln 10), so the
    lr rises linearly over the first tenth of the steps."""
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=gen)
    targets = np.eye(10, dtype=np.float32)[np.arange(4)]
    train_student(pixels, targets, steps=40, batch_size=4, lr=4e-4)
    assert adam_lrs[:5] == pytest.approx([1e-4, 2e-4, 3e-4, 4e-4, 4e-4])
    assert len(adam_lrs) == 40 and adam_lrs[-1] == pytest.approx(4e-4)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_average_is_the_mean_of_the_last_steps_weights() -> None:
    """``average=0.5`` over 4 steps returns the mean of the weights after steps 3 and 4 of
    the very run that ``average=0`` follows step by step (same seed, same batches)."""
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=gen)
    targets = np.eye(10, dtype=np.float32)[np.arange(8) % 10]
    kw = {"batch_size": 4, "freeze_bn": True, "warmup": 1, "lr": 1e-2}
    after3 = _weights(train_student(pixels, targets, steps=3, **kw))
    after4 = _weights(train_student(pixels, targets, steps=4, **kw))
    averaged = _weights(train_student(pixels, targets, steps=4, average=0.5, **kw))
    moved = [k for k in after3 if not torch.equal(after3[k], after4[k])]
    assert moved  # the last step changed weights, so the mean is not either end
    for k in averaged:
        assert torch.allclose(averaged[k], (after3[k] + after4[k]) / 2, atol=1e-6), k


def test_average_re_estimates_trained_batchnorm_for_the_mean_weights() -> None:
    """A student whose BatchNorm trains gets statistics measured under the averaged
    weights: the first BatchNorm's running mean is its input's mean over every image."""
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=gen)
    targets = np.eye(10, dtype=np.float32)[np.arange(8) % 10]
    model = train_student(
        pixels, targets, steps=4, batch_size=4, freeze_bn=False, warmup=1, lr=1e-2, average=0.5
    )
    from distill.train.evaluate import to_input
    from distill.train.student import norm_stats

    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen: list[torch.Tensor] = []
    hook = bn.register_forward_hook(lambda _m, inp, _out: seen.append(inp[0].detach()))
    with torch.no_grad():
        model(to_input(pixels, *norm_stats(model.backbone)))
    hook.remove()
    assert bn.running_mean is not None
    assert torch.allclose(bn.running_mean, seen[0].mean(dim=(0, 2, 3)), atol=1e-4)


def test_average_outside_zero_to_one_is_refused() -> None:
    pixels = torch.zeros((2, 3, 8, 8), dtype=torch.uint8)
    with pytest.raises(ValueError, match="average must be in"):
        train_student(pixels, np.eye(10, dtype=np.float32)[:2], steps=1, average=1.5)
