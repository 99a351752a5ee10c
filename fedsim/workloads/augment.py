"""Batched, seeded, torch-native augmentation ops for small grayscale images in [0, 1].

Every op maps ``x [B, C, H, W]`` (values in [0, 1]) and per-sample magnitudes ``mag [B]`` in
[0, 1] to a tensor of the same shape, dtype and range; magnitude 0 returns the input rows
exactly, and ``identity`` returns them exactly at any magnitude. Randomness (direction, sign,
position, noise) comes only from the (CPU) ``torch.Generator`` passed in, and is moved to the
images' device; fedsim builds it from
stream ``"augment"`` keyed by (global step, UE), so the same seed gives the same batch.

Magnitude 1 means (ranges chosen for small grayscale digits): shift by 15%
of the side (±4 px on 28x28), rotate by 30°, shear by 0.3, cut out a square of half the side,
brightness ±0.4, contrast ×(1 ± 0.6), Gaussian noise of std 0.2. No flips (digits).

A sub-policy is a pair of stages ``(op, probability, magnitude)``, applied in order
(AutoAugment convention); :func:`apply_stages` applies per-sample sampled stages to a batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SHIFT_MAX = 0.15  # fraction of the side
ROTATE_MAX = math.radians(30.0)
SHEAR_MAX = 0.3
CUTOUT_MAX = 0.5  # fraction of the side
BRIGHTNESS_MAX = 0.4
CONTRAST_MAX = 0.6
NOISE_MAX = 0.2

OpFn = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def _sign(n: int, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """``[n]`` random ±1."""
    return torch.randint(0, 2, (n,), generator=gen).to(dtype) * 2 - 1


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warp ``x [B, C, H, W]`` by ``theta [B, 2, 3]`` (normalised coords), zero padding.

    Bilinear weights are a convex combination of pixels and zeros, so [0, 1] is preserved
    (the final clamp only removes rounding).
    """
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _eye(n: int, dtype: torch.dtype) -> torch.Tensor:
    """``[n, 2, 3]`` identity affine transforms."""
    return torch.eye(2, 3, dtype=dtype).expand(n, 2, 3).clone()


def identity(x: torch.Tensor, mag: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The input unchanged (any magnitude)."""
    return x


def shift_theta(mag: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``[n, 2, 3]``: translate by ``mag * SHIFT_MAX`` of the side in a uniformly random direction."""
    n, dt = mag.shape[0], mag.dtype
    phi = torch.rand(n, generator=gen, dtype=dt) * (2 * math.pi)
    d = 2 * SHIFT_MAX * mag  # normalised coords span 2 per side
    theta = _eye(n, dt)
    theta[:, 0, 2] = d * torch.cos(phi)
    theta[:, 1, 2] = d * torch.sin(phi)
    return theta


def rotate_theta(mag: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``[n, 2, 3]``: rotate about the centre by ±``mag * 30°``."""
    n, dt = mag.shape[0], mag.dtype
    a = _sign(n, gen, dt) * mag * ROTATE_MAX
    c, s = torch.cos(a), torch.sin(a)
    theta = torch.zeros(n, 2, 3, dtype=dt)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = c, -s, s, c
    return theta


def shear_theta(mag: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``[n, 2, 3]``: shear along a random axis (x or y) by ±``mag * 0.3``."""
    n, dt = mag.shape[0], mag.dtype
    k = _sign(n, gen, dt) * mag * SHEAR_MAX
    along_x = torch.rand(n, generator=gen) < 0.5
    theta = _eye(n, dt)
    theta[:, 0, 1] = torch.where(along_x, k, torch.zeros_like(k))
    theta[:, 1, 0] = torch.where(along_x, torch.zeros_like(k), k)
    return theta


#: Geometric ops as affine-transform makers; they share one ``grid_sample`` per stage.
GEOMETRIC: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "shift": shift_theta,
    "rotate": rotate_theta,
    "shear": shear_theta,
}


def shift(x: torch.Tensor, mag: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Translate by ``mag * 15%`` of the side in a uniformly random direction."""
    return _affine(x, shift_theta(mag, gen))


def rotate(x: torch.Tensor, mag: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rotate about the centre by ±``mag * 30°``."""
    return _affine(x, rotate_theta(mag, gen))


def shear(x: torch.Tensor, mag: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shear along a random axis (x or y) by ±``mag * 0.3``."""
    return _affine(x, shear_theta(mag, gen))


def cutout(x: torch.Tensor, mag: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Zero a square of side ``ceil(mag * 0.5 * min(H, W))`` px at a uniform random centre."""
    n, _, h, w = x.shape
    side = torch.ceil(mag * CUTOUT_MAX * min(h, w))  # [n]; 0 when mag = 0
    cy = torch.randint(0, h, (n,), generator=gen)
    cx = torch.randint(0, w, (n,), generator=gen)
    ys = torch.arange(h).view(1, h, 1)
    xs = torch.arange(w).view(1, 1, w)
    y0 = (cy - torch.floor(side / 2)).view(n, 1, 1)
    x0 = (cx - torch.floor(side / 2)).view(n, 1, 1)
    s = side.view(n, 1, 1)
    hole = (ys >= y0) & (ys < y0 + s) & (xs >= x0) & (xs < x0 + s)  # [n, H, W]
    return x.masked_fill(hole.unsqueeze(1).to(x.device), 0.0)


def brightness(x: torch.Tensor, mag: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Add ±``mag * 0.4`` to every pixel."""
    delta = _sign(x.shape[0], gen, x.dtype) * mag * BRIGHTNESS_MAX
    return x + delta.view(-1, 1, 1, 1).to(x.device)


def contrast(x: torch.Tensor, mag: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Scale deviations from the per-image mean by ``1 ± mag * 0.6``."""
    f = 1 + _sign(x.shape[0], gen, x.dtype) * mag * CONTRAST_MAX
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return mean + (x - mean) * f.view(-1, 1, 1, 1).to(x.device)


def noise(x: torch.Tensor, mag: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Add Gaussian noise of std ``mag * 0.2``."""
    z = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
    return x + z * (mag * NOISE_MAX).view(-1, 1, 1, 1).to(x.device)


#: The op set, in a fixed order (indices are part of the policy layout).
OPS: dict[str, OpFn] = {
    "identity": identity,
    "shift": shift,
    "rotate": rotate,
    "shear": shear,
    "cutout": cutout,
    "brightness": brightness,
    "contrast": contrast,
    "noise": noise,
}
OP_NAMES: tuple[str, ...] = tuple(OPS)


def apply_op(name: str, x: torch.Tensor, mag: torch.Tensor | float, gen: torch.Generator) -> torch.Tensor:
    """Op ``name`` on ``x [B, C, H, W]`` in [0, 1] with magnitude ``mag`` (scalar or ``[B]``).

    Same shape and dtype, values in [0, 1]; rows with magnitude 0 are returned exactly.
    """
    if name not in OPS:
        raise ValueError(f"unknown augmentation op {name!r}; choose from {', '.join(OP_NAMES)}")
    m = torch.as_tensor(mag, dtype=x.dtype).cpu().expand(x.shape[0]).clone()
    if x.shape[0] == 0:
        return x.clone()
    y = OPS[name](x, m, gen).clamp(0.0, 1.0)
    return torch.where((m > 0).view(-1, 1, 1, 1).to(x.device), y, x)  # exact at magnitude 0


@dataclass(frozen=True)
class Stage:
    """One stage of a sub-policy: apply ``op`` with probability ``prob`` at ``magnitude`` in [0, 1]."""

    op: str
    prob: float
    magnitude: float


SubPolicy = tuple[Stage, Stage]


def apply_stages(
    x: torch.Tensor, ops: torch.Tensor, applied: torch.Tensor, mags: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """Per-sample stages on a batch: stage j of row i is op ``OP_NAMES[ops[i, j]]`` at
    magnitude ``mags[i, j]`` if ``applied[i, j]``.

    Shapes: ``x [B, C, H, W]``, ``ops [B, S]`` long, ``applied [B, S]`` bool, ``mags [B, S]``.
    Stages run in order. Within a stage the geometric rows share one warp (their transforms
    drawn per op in ``OP_NAMES`` order), then each other op runs once on its rows, so the
    generator is consumed deterministically. Row-wise equal to ``apply_op`` per row up to the
    order of draws.
    """
    out = x.clone()
    ops, applied = ops.cpu(), applied.cpu()  # draws and row selection on CPU; pixels on x's device
    for j in range(ops.shape[1]):
        mag = mags[:, j].to("cpu", x.dtype)
        live = applied[:, j] & (mag > 0)  # magnitude 0 rows stay exact
        rows_all, thetas = [], []
        for name, make in GEOMETRIC.items():
            rows = (live & (ops[:, j] == OP_NAMES.index(name))).nonzero().flatten()
            if rows.numel():
                rows_all.append(rows)
                thetas.append(make(mag[rows], gen))
        if rows_all:
            rows = torch.cat(rows_all)
            out[rows] = _affine(out[rows], torch.cat(thetas)).clamp(0.0, 1.0)
        for k, name in enumerate(OP_NAMES):
            if name == "identity" or name in GEOMETRIC:
                continue
            rows = (live & (ops[:, j] == k)).nonzero().flatten()
            if rows.numel():
                out[rows] = OPS[name](out[rows], mag[rows], gen).clamp(0.0, 1.0)
    return out


def apply_subpolicy(x: torch.Tensor, sub: SubPolicy, gen: torch.Generator) -> torch.Tensor:
    """One fixed sub-policy on every row of ``x [B, C, H, W]``; each stage fires per row with its prob."""
    b = x.shape[0]
    ops = torch.tensor([[OP_NAMES.index(s.op) for s in sub]] * b, dtype=torch.long).view(b, len(sub))
    probs = torch.tensor([s.prob for s in sub], dtype=torch.float64)
    applied = torch.rand(b, len(sub), generator=gen, dtype=torch.float64) < probs
    mags = torch.tensor([[s.magnitude for s in sub]] * b, dtype=x.dtype).view(b, len(sub))
    return apply_stages(x, ops, applied, mags, gen)
