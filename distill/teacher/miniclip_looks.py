"""The looks a mini-clip teacher learns and is scored in: ink maps drawn on a 32 px canvas,
then rotated, scaled, shifted, coloured, down-sampled, blurred and noised (:func:`augment`,
random, for fitting) or rendered in each of :data:`LOOKS` (fixed, for held-out scoring).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from distill.teacher.miniclip_model import IMAGE_SIZE

__all__ = ["LOOKS", "augment", "ink_canvas", "render_looks"]

# The looks a held-out pool image is scored in when fitting ends (the manifest's per-domain
# zero-shot accuracy): the demo digits' domains plus those of the other benchmarks.
LOOKS: tuple[str, ...] = (
    "upright", "rotated", "colour", "inverted", "noisy", "rot75", "low_res",
)  # fmt: skip


def ink_canvas(ink: np.ndarray) -> np.ndarray:
    """One raw ink map to a 32x32 canvas: small sources (8x8) drawn in a 24 px box as the
    digits builders do, 28 px sources resized to fill the canvas as the server will."""
    t = torch.from_numpy(np.ascontiguousarray(ink, dtype=np.float32))[None, None]
    h = ink.shape[0]
    inner = IMAGE_SIZE * 3 // 4 if h <= 16 else IMAGE_SIZE
    up = F.interpolate(t, size=(inner, inner), mode="bilinear", align_corners=False,
                       antialias=h > inner)
    off = (IMAGE_SIZE - inner) // 2
    out = torch.zeros(IMAGE_SIZE, IMAGE_SIZE)
    out[off : off + inner, off : off + inner] = up[0, 0]
    return out.clamp(0, 1).numpy()


def _affine(ink: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor,
            shift: torch.Tensor) -> torch.Tensor:
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(ink.shape), align_corners=False)
    return F.grid_sample(ink, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = torch.arange(-2, 3, dtype=torch.float32)
    k = torch.exp(-(r**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), k.view(1, 1, 1, 5).repeat(c, 1, 1, 1),
                 groups=c)
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"),
                    k.view(1, 1, 5, 1).repeat(c, 1, 1, 1), groups=c)


def _colourise(ink: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(N,1,H,W) ink to RGB: a third dark-on-light, a third light-on-dark, a third colours."""
    n = ink.shape[0]
    mode = torch.randint(0, 3, (n,), generator=g)
    grey_fg = torch.rand(n, 1, generator=g) * 0.25
    grey_bg = 1 - torch.rand(n, 1, generator=g) * 0.25
    fg = torch.where(mode[:, None] == 0, grey_fg, grey_bg).repeat(1, 3)
    bg = torch.where(mode[:, None] == 0, grey_bg, grey_fg).repeat(1, 3)
    cf, cb = torch.rand(n, 3, generator=g), torch.rand(n, 3, generator=g)
    luma = torch.tensor([0.299, 0.587, 0.114])
    # Keep the digit readable: push the two colours apart in luma (the builder keeps >= 0.35).
    gap = (cf @ luma - cb @ luma)[:, None]
    sign = torch.where(gap >= 0, 1.0, -1.0)
    need = (0.35 - gap.abs()).clamp(min=0)
    cf = (cf + sign * need / 2).clamp(0, 1)
    cb = (cb - sign * need / 2).clamp(0, 1)
    colour = mode[:, None] == 2
    fg, bg = torch.where(colour, cf, fg), torch.where(colour, cb, bg)
    return bg[:, :, None, None] + (fg - bg)[:, :, None, None] * ink


def augment(canvas: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A batch of 32 px ink canvases (N,1,32,32) in random looks, RGB in [0, 1]."""
    n = canvas.shape[0]
    u = torch.rand(n, generator=g)
    # Half any angle, half within 60 degrees either way (the benchmarks' rotations).
    angle = torch.where(u < 0.5, (torch.rand(n, generator=g) * 2 - 1) * math.pi,
                        (torch.rand(n, generator=g) * 2 - 1) * math.pi / 3)
    scale = 0.75 + 0.45 * torch.rand(n, generator=g)
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * 0.12
    ink = _affine(canvas, angle, scale, shift)
    low = torch.rand(n, generator=g) < 0.2  # the sklearn digits' 8x8 look
    if bool(low.any()):
        side = int(torch.randint(7, 15, (1,), generator=g))
        small = F.interpolate(ink[low], size=(side, side), mode="area")
        ink[low] = F.interpolate(small, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                                 align_corners=False)
    rgb = _colourise(ink.clamp(0, 1), g)
    blur = torch.rand(n, generator=g) < 0.2
    if bool(blur.any()):
        rgb[blur] = _blur(rgb[blur], 0.5 + float(torch.rand(1, generator=g)))
    noisy = torch.rand(n, generator=g) < 0.3
    sigma = torch.rand(n, 1, 1, 1, generator=g) * 0.3 * noisy[:, None, None, None]
    rgb = rgb + sigma * torch.randn(rgb.shape, generator=g)
    return rgb.clamp(0, 1)


def render_looks(canvas: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """Fixed renderings of ink canvases in each of :data:`LOOKS` (held-out scoring)."""
    g = torch.Generator().manual_seed(seed)
    n = canvas.shape[0]
    zero, one = torch.zeros(n), torch.ones(n)
    no_shift = torch.zeros(n, 2)
    grey = canvas.repeat(1, 3, 1, 1)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, 1.0, -1.0)
    turned = _affine(canvas, sign * math.radians(30) * (1 + torch.rand(n, generator=g)), one,
                     no_shift)
    rot75 = _affine(canvas, torch.full((n,), math.radians(75)), one, no_shift)
    small = F.interpolate(canvas, size=(8, 8), mode="area")
    low = F.interpolate(small, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                        align_corners=False)
    cf, cb = torch.rand(n, 3, generator=g), torch.rand(n, 3, generator=g)
    _ = zero
    return {
        "upright": 1 - grey,
        "rotated": 1 - turned.repeat(1, 3, 1, 1),
        "colour": cb[:, :, None, None] + (cf - cb)[:, :, None, None] * canvas,
        "inverted": grey,
        "noisy": (1 - grey + 0.25 * torch.randn(grey.shape, generator=g)).clamp(0, 1),
        "rot75": rot75.repeat(1, 3, 1, 1),
        "low_res": low.repeat(1, 3, 1, 1),
    }
