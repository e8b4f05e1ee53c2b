"""The small-map shortcuts compute the same function, with the same gradients, as the
convolutions they replace, and leave the model's parameters and state-dict keys alone."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from distill.train.small_maps import (
    LINEAR_MAX_PIXELS,
    SmallMapDepthwiseConv2d,
    SmallMapDepthwiseConv2dSame,
    SmallMapPointwiseConv2d,
    use_plain_convs,
    use_small_map_convs,
)
from distill.train.student import create_backbone


def _pair(conv: nn.Module) -> tuple[nn.Module, nn.Module]:
    fast = copy.deepcopy(conv)
    assert use_small_map_convs(fast) == 1
    return conv, fast


SHORTCUTS = (SmallMapDepthwiseConv2d, SmallMapDepthwiseConv2dSame, SmallMapPointwiseConv2d)


def _shortcut(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, SHORTCUTS)]


def _assert_same(plain: nn.Module, fast: nn.Module, x: torch.Tensor, n_grads: int) -> None:
    want, got = _outputs_and_grads(plain, x), _outputs_and_grads(fast, x)
    assert len(want) == len(got) == n_grads
    for a, b in zip(want, got, strict=True):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def _outputs_and_grads(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    x = x.detach().requires_grad_(True)
    out = model(x)
    (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    assert x.grad is not None
    return [out.detach(), x.grad] + [p.grad for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("kernel", [3, 5, 7])
@pytest.mark.parametrize("size", [(1, 1), (1, 3), (2, 2), (3, 2), (4, 4), (9, 9)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_same_outputs_and_gradients_as_the_plain_convolution(
    kernel: int, size: tuple[int, int], channels_last: bool
) -> None:
    torch.manual_seed(kernel)
    plain, fast = _pair(nn.Conv2d(6, 6, kernel, padding=kernel // 2, groups=6))
    x = torch.randn(3, 6, *size)
    if channels_last:
        plain, fast = (m.to(memory_format=torch.channels_last) for m in (plain, fast))
        x = x.contiguous(memory_format=torch.channels_last)
    _assert_same(plain, fast, x, 4)  # output, input grad, weight grad, bias grad


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("size", [(1, 1), (2, 2), (1, 2), (3, 3), (4, 5)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_strided_depthwise_one_output_pixel(
    kernel: int, size: tuple[int, int], channels_last: bool
) -> None:
    """Stride 2 with symmetric padding: maps that give one output pixel take the shortcut,
    the others the plain path; both equal the plain convolution."""
    torch.manual_seed(kernel)
    plain, fast = _pair(nn.Conv2d(6, 6, kernel, stride=2, padding=kernel // 2, groups=6))
    x = torch.randn(3, 6, *size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    _assert_same(plain, fast, x, 4)


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("size", [(1, 1), (2, 2), (2, 1), (3, 3), (4, 4), (5, 3)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_timm_same_padding_depthwise(
    kernel: int, size: tuple[int, int], channels_last: bool
) -> None:
    """timm's dynamic "same" padding (TensorFlow's: more padding after the map than
    before) on the maps of a 32 px EfficientNet's last strided stages."""
    timm_layers = pytest.importorskip("timm.layers")
    torch.manual_seed(kernel)
    conv = timm_layers.create_conv2d(6, 6, kernel, stride=2, padding="same", depthwise=True)
    plain, fast = _pair(conv)
    assert type(fast) is SmallMapDepthwiseConv2dSame
    x = torch.randn(3, 6, *size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    _assert_same(plain, fast, x, 3)  # timm's depthwise convolutions have no bias


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("size", [(1, 1), (2, 2), (4, 4), (1, 16), (5, 5)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_pointwise_as_a_matrix_product(
    bias: bool, size: tuple[int, int], channels_last: bool
) -> None:
    """1x1 convolutions run as F.linear on maps of at most LINEAR_MAX_PIXELS pixels and as
    convolutions on larger ones (5x5); the same function either way."""
    torch.manual_seed(int(bias))
    plain, fast = _pair(nn.Conv2d(8, 12, 1, bias=bias))
    assert type(fast) is SmallMapPointwiseConv2d
    x = torch.randn(3, 8, *size)
    if channels_last:
        plain, fast = (m.to(memory_format=torch.channels_last) for m in (plain, fast))
        x = x.contiguous(memory_format=torch.channels_last)
    assert (size[0] * size[1] <= LINEAR_MAX_PIXELS) == (size != (5, 5))
    _assert_same(plain, fast, x, 4 if bias else 3)


@pytest.mark.parametrize("conv", [
    nn.Conv2d(6, 6, 3, padding=1),  # neither depthwise nor pointwise
    nn.Conv2d(6, 6, 1, stride=2),  # strided 1x1
    nn.Conv2d(6, 6, 1, groups=2),  # grouped 1x1
    nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=6),
    nn.Conv2d(6, 6, 3, padding=0, groups=6),  # "valid": the map shrinks
    nn.Conv2d(6, 6, 4, padding=2, groups=6),  # even kernel
    nn.Conv2d(6, 6, 3, padding=1, groups=6, padding_mode="reflect"),
    nn.Conv2d(6, 12, 3, padding=1, groups=6),  # channel multiplier 2
])
def test_convolutions_it_cannot_shortcut_are_left_alone(conv: nn.Conv2d) -> None:
    assert use_small_map_convs(conv) == 0
    assert type(conv) is nn.Conv2d


def test_timm_same_padding_dense_convolutions_are_left_alone() -> None:
    timm_layers = pytest.importorskip("timm.layers")
    conv = timm_layers.create_conv2d(3, 8, 3, stride=2, padding="same")  # a stem
    assert type(conv) is not nn.Conv2d  # timm's dynamic-padding Conv2dSame
    assert use_small_map_convs(conv) == 0


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "mobilenetv3_small_100"])
def test_backbones_compute_the_same_features_and_gradients(name: str, weights_dir: Path) -> None:
    """create_backbone gives the shortcuts to the default students; at 32 px (their last
    stages on 1x1 and 2x2 maps) and 64 px they compute what the plain timm model does."""
    fast = create_backbone(name, pretrained=True, weights_dir=weights_dir)
    kinds = {type(m) for m in _shortcut(fast)}
    assert {SmallMapDepthwiseConv2d, SmallMapPointwiseConv2d} <= kinds
    plain = copy.deepcopy(fast)
    assert use_plain_convs(plain) == len(_shortcut(fast))
    assert not _shortcut(plain)
    assert list(plain.state_dict()) == list(fast.state_dict())
    plain.eval()
    fast.eval()  # BatchNorm frozen, as the trainer runs these students
    for size in (32, 64):
        x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(size))
        want, got = _outputs_and_grads(plain, x), _outputs_and_grads(fast, x)
        assert len(want) == len(got)
        for a, b in zip(want, got, strict=True):
            scale = a.abs().max().clamp_min(1e-6)
            assert ((a - b).abs().max() / scale) < 1e-4


def test_weights_move_between_shortcut_and_plain_models() -> None:
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(4, 4, 5, padding=2, groups=4), nn.Conv2d(4, 4, 1))
    fast = copy.deepcopy(plain)
    assert use_small_map_convs(fast) == 2
    with torch.no_grad():
        for p in fast.parameters():
            p.add_(1.0)
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(2, 4, 2, 2)
    assert torch.allclose(plain(x), fast(x), atol=1e-5)


def test_timm_fx_feature_extraction_traces_a_student() -> None:
    """The shortcuts branch on the map's size; timm's FX tracer must keep them as leaves
    (before: TraceError, 'symbolically traced variables cannot be used as inputs to
    control flow')."""
    fx = pytest.importorskip("timm.models._features_fx")
    model = create_backbone("tf_efficientnet_lite0", pretrained=False).eval()
    extractor = fx.create_feature_extractor(model, return_nodes=["conv_head"]).eval()
    seen: list[torch.Tensor] = []
    head = model.get_submodule("conv_head")
    head.register_forward_hook(lambda m, i, out: seen.append(out))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = extractor(x)["conv_head"]
        model(x)
    assert torch.equal(got, seen[0])
