"""Convolutions on small feature maps, computed cheaply.

At the small inputs a CPU student trains on (32 px), an EfficientNet's last stages run on
2x2 and 1x1 maps, where oneDNN's general convolution kernels spend far more than the
arithmetic needs: on this project's machine the backward of a 5x5 depthwise convolution on
a 1x1 map took 13 ms a call, a quarter of a whole training step of ``tf_efficientnet_lite0``
at 32 px (docs/benchmarks.md, "Convolutions on small maps"). Three shortcuts, each the same
function with the same gradients (to float rounding):

- **depthwise, "same" padding, stride 1, map smaller than the kernel**: every tap outside
  the map reads a zero, so on a map of h rows (h - 1 < the padding) only the kernel's
  2h - 1 central rows ever touch the map (the same for columns): a convolution with the
  cropped kernel (on a 1x1 map, the centre tap times the input: a per-channel scale);
- **depthwise, one output pixel** (a strided convolution on a map no larger than its
  stride, as timm's "same"-padded ``Conv2dSame`` gives on 2x2 maps): the output is the
  window of taps over the map times the map, summed per channel;
- **pointwise (1x1) on maps of at most** :data:`LINEAR_MAX_PIXELS` **pixels**: a matrix
  product over the channels (``F.linear``), which beats oneDNN's 1x1 convolution there
  (3x on a 1x1 map) and loses to it on larger maps.

:func:`use_small_map_convs` swaps the class of every eligible convolution in place
(parameters and state-dict keys unchanged), so weights saved from a model with or without
it load into the other; :func:`use_plain_convs` swaps them back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LINEAR_MAX_PIXELS", "SmallMapDepthwiseConv2d", "SmallMapDepthwiseConv2dSame",
    "SmallMapPointwiseConv2d", "use_plain_convs", "use_small_map_convs",
]

# Pointwise convolutions run as F.linear on maps of at most this many pixels (4x4):
# measured faster there, slower on 8x8 and larger (docs/benchmarks.md).
LINEAR_MAX_PIXELS = 16


def _one_output_pixel(x: torch.Tensor, conv: nn.Conv2d, top: int, left: int) -> torch.Tensor:
    """A depthwise convolution whose output is one pixel: its window starts ``top`` rows
    and ``left`` columns before the map (the padding), so tap (top + i, left + j) reads
    pixel (i, j) and taps past the map's edge read zeros."""
    kh, kw = conv.kernel_size
    rows, cols = min(x.shape[-2], kh - top), min(x.shape[-1], kw - left)
    taps = conv.weight[:, 0, top:top + rows, left:left + cols]
    out = (x[:, :, :rows, :cols] * taps).sum((2, 3), keepdim=True)
    return out if conv.bias is None else out + conv.bias.reshape(1, -1, 1, 1)


class SmallMapDepthwiseConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (depthwise, symmetric zero padding) that skips the taps a map
    smaller than its kernel never reaches.

    >>> conv = nn.Conv2d(4, 4, 5, padding=2, groups=4)
    >>> fast = nn.Conv2d(4, 4, 5, padding=2, groups=4)
    >>> fast.load_state_dict(conv.state_dict())
    <All keys matched successfully>
    >>> use_small_map_convs(fast)
    1
    >>> x = torch.randn(2, 4, 1, 1)
    >>> bool(torch.allclose(conv(x), fast(x), atol=1e-6))
    True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (int(p) for p in self.padding)  # ints: use_small_map_convs checked
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        if (h + 2 * ph - kh) // sh == 0 and (w + 2 * pw - kw) // sw == 0:
            return _one_output_pixel(x, self, ph, pw)
        if self.stride == (1, 1) and (h - 1 < ph or w - 1 < pw):
            ch, cw = min(ph, h - 1), min(pw, w - 1)
            weight = self.weight[:, :, ph - ch:ph + ch + 1, pw - cw:pw + cw + 1]
            return F.conv2d(x, weight, self.bias, 1, (ch, cw), 1, self.groups)
        return super().forward(x)


def _timm_conv2d_same() -> type[nn.Conv2d] | None:
    try:
        from timm.layers.conv2d_same import Conv2dSame
    except ImportError:  # pragma: no cover - timm is a dependency; be safe without it
        return None
    return Conv2dSame


_CONV2D_SAME = _timm_conv2d_same()


def _same_padding(size: int, kernel: int, stride: int) -> int:
    """The padding before the map that timm's dynamic "same" padding adds (TensorFlow's)."""
    return max((math.ceil(size / stride) - 1) * stride + kernel - size, 0) // 2


class SmallMapDepthwiseConv2dSame(_CONV2D_SAME or nn.Conv2d):  # type: ignore[misc]
    """timm's ``Conv2dSame`` (depthwise): a map no larger than the stride gives one output
    pixel, computed from the taps that reach the map; larger maps take timm's path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        if h <= sh and w <= sw:
            return _one_output_pixel(x, self, _same_padding(h, kh, sh), _same_padding(w, kw, sw))
        return super().forward(x)  # type: ignore[no-any-return]


class SmallMapPointwiseConv2d(nn.Conv2d):
    """A 1x1 ``nn.Conv2d`` that runs as ``F.linear`` over the channels on small maps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if h * w > LINEAR_MAX_PIXELS:
            return super().forward(x)
        rows = x.permute(0, 2, 3, 1).reshape(n * h * w, self.in_channels)
        out = F.linear(rows, self.weight.view(self.out_channels, self.in_channels), self.bias)
        return out.view(n, h, w, self.out_channels).permute(0, 3, 1, 2)


def _depthwise(module: nn.Conv2d) -> bool:
    kh, kw = module.kernel_size
    return (
        module.groups > 1
        and module.groups == module.in_channels == module.out_channels
        and module.dilation == (1, 1)
        and module.padding_mode == "zeros"
        and kh % 2 == 1 and kw % 2 == 1
    )


def _shortcut_class(module: nn.Module) -> type[nn.Conv2d] | None:
    if _CONV2D_SAME is not None and type(module) is _CONV2D_SAME:
        return SmallMapDepthwiseConv2dSame if _depthwise(module) else None
    if type(module) is not nn.Conv2d:  # other subclasses compute their own way
        return None
    kh, kw = module.kernel_size
    if _depthwise(module) and module.padding == (kh // 2, kw // 2):
        return SmallMapDepthwiseConv2d
    pointwise = (
        module.kernel_size == (1, 1) and module.stride == (1, 1) and module.padding == (0, 0)
        and module.dilation == (1, 1) and module.groups == 1
    )
    return SmallMapPointwiseConv2d if pointwise else None


_PLAIN: dict[type[nn.Module], type[nn.Module]] = {
    SmallMapDepthwiseConv2d: nn.Conv2d, SmallMapPointwiseConv2d: nn.Conv2d,
    SmallMapDepthwiseConv2dSame: _CONV2D_SAME or nn.Conv2d,
}


def _register_notrace() -> None:
    """The shortcuts branch on the map's size: timm's FX feature extraction must treat them
    as leaves (as it does its own Conv2dSame), or tracing a student fails."""
    try:
        from timm.layers import register_notrace_module
    except ImportError:  # pragma: no cover - timm is a dependency
        return
    for cls in (SmallMapDepthwiseConv2d, SmallMapDepthwiseConv2dSame, SmallMapPointwiseConv2d):
        register_notrace_module(cls)


_register_notrace()


def use_small_map_convs(model: nn.Module) -> int:
    """Give every eligible convolution of ``model`` its small-map shortcut, in place;
    returns how many it changed."""
    changed = 0
    for module in model.modules():
        cls = _shortcut_class(module)
        if cls is not None:
            module.__class__ = cls
            changed += 1
    return changed


def use_plain_convs(model: nn.Module) -> int:
    """Undo :func:`use_small_map_convs` in place; returns how many it changed back."""
    changed = 0
    for module in model.modules():
        plain = _PLAIN.get(type(module))
        if plain is not None:
            module.__class__ = plain
            changed += 1
    return changed
