"""Depthwise convolutions on feature maps smaller than their kernel, computed cheaply.

At the small inputs a CPU student trains on (32 px), an EfficientNet's last stages run on
2x2 and 1x1 maps, yet their depthwise 5x5 convolutions still cost a full 5x5 kernel: on
this project's machine oneDNN's backward of a 5x5 depthwise convolution on a 1x1 map took
13 ms a call, a quarter of a whole training step of ``tf_efficientnet_lite0`` at 32 px
(docs/benchmarks.md, "Depthwise convolutions on small maps"). With "same" zero padding,
every tap that falls outside the map reads a zero, so:

- on a 1x1 map the convolution is the kernel's centre tap times the input (a per-channel
  scale);
- on a map of h rows (h - 1 < the padding) only the kernel's 2h - 1 central rows ever touch
  the map (the same for columns), so the convolution equals one with the cropped kernel
  and padding h - 1.

Both are the same function with the same gradients (to float rounding); the taps left out
get a zero gradient either way. :func:`use_small_map_convs` swaps the class of every
eligible ``nn.Conv2d`` in place (parameters and state-dict keys unchanged), so weights saved
from a model with or without it load into the other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SmallMapDepthwiseConv2d", "use_small_map_convs"]


class SmallMapDepthwiseConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (depthwise, stride 1, "same" zero padding) that skips the taps a
    map smaller than its kernel never reaches.

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
        if h == 1 and w == 1:
            out = x * self.weight[:, :, ph, pw].reshape(1, -1, 1, 1)
            return out if self.bias is None else out + self.bias.reshape(1, -1, 1, 1)
        if h - 1 < ph or w - 1 < pw:
            ch, cw = min(ph, h - 1), min(pw, w - 1)
            weight = self.weight[:, :, ph - ch:ph + ch + 1, pw - cw:pw + cw + 1]
            return F.conv2d(x, weight, self.bias, 1, (ch, cw), 1, self.groups)
        return super().forward(x)


def _eligible(module: nn.Module) -> bool:
    if type(module) is not nn.Conv2d:  # subclasses (timm's Conv2dSame) pad their own way
        return False
    kh, kw = module.kernel_size
    return (
        module.groups > 1
        and module.groups == module.in_channels == module.out_channels
        and module.stride == (1, 1)
        and module.dilation == (1, 1)
        and module.padding_mode == "zeros"
        and kh % 2 == 1 and kw % 2 == 1
        and module.padding == (kh // 2, kw // 2)
    )


def use_small_map_convs(model: nn.Module) -> int:
    """Give every eligible depthwise convolution of ``model`` the small-map shortcut, in
    place; returns how many it changed."""
    changed = 0
    for module in model.modules():
        if _eligible(module):
            module.__class__ = SmallMapDepthwiseConv2d
            changed += 1
    return changed
