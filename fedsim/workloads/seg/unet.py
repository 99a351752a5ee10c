"""A small U-Net as a pure function of one flat parameter vector.

Levels l = 0..L-1 (L = ``len(filters)``), level l at resolution ``S / 2^l``:

- encoder block l: two ``k_l x k_l`` convolutions (``"same"`` zero padding), each followed by ReLU,
  to ``filters[l]`` channels; between level l-1 and level l a 2x2 pooling of type ``pooling[l-1]``
  (``"max"`` or ``"avg"``); the deepest block is the bottleneck;
- decoder block l (l = L-2..0): nearest-neighbour 2x upsampling of the level below, concatenated with
  the encoder's level-l output (the skip), then two ``k_l x k_l`` convolutions + ReLU to
  ``filters[l]`` channels;
- head: a 1x1 convolution to the class logits.

No normalisation layers (nothing batch-dependent), so the model is the flat vector and nothing else.
Parameters are laid out in :func:`layout` order, each convolution's weight then its bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class UNetArch:
    """Per-level ``filters`` and odd ``kernels`` (length L), ``pooling`` (length L-1)."""

    filters: tuple[int, ...]
    kernels: tuple[int, ...]
    pooling: tuple[str, ...]
    in_channels: int = 1
    classes: int = 4

    def __post_init__(self) -> None:
        L = len(self.filters)
        if L < 1 or any(f < 1 for f in self.filters):
            raise ValueError(f"filters must be one or more positive channel counts, got {list(self.filters)}")
        if len(self.kernels) != L:
            raise ValueError(f"kernels has {len(self.kernels)} entries but filters has {L} levels: give one odd "
                             f"kernel side per level, or a single number for all")
        if len(self.pooling) != L - 1:
            raise ValueError(f"pooling has {len(self.pooling)} entries but {L} levels need {L - 1} (one per "
                             f"downsampling), or a single 'max'/'avg' for all")
        if any(k % 2 == 0 or k < 1 for k in self.kernels):
            raise ValueError(f"kernels must be odd and positive, got {list(self.kernels)}")
        if any(p not in ("max", "avg") for p in self.pooling):
            raise ValueError(f"pooling must be 'max' or 'avg', got {list(self.pooling)}")


def layout(arch: UNetArch) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, shape)`` of every parameter, in the flat vector's order."""
    f, k = arch.filters, arch.kernels
    out: list[tuple[str, tuple[int, ...]]] = []

    def conv(name: str, cin: int, cout: int, ks: int) -> None:
        out.extend([(f"{name}.weight", (cout, cin, ks, ks)), (f"{name}.bias", (cout,))])

    for level in range(len(f)):
        conv(f"enc{level}.conv1", arch.in_channels if level == 0 else f[level - 1], f[level], k[level])
        conv(f"enc{level}.conv2", f[level], f[level], k[level])
    for level in reversed(range(len(f) - 1)):
        conv(f"dec{level}.conv1", f[level + 1] + f[level], f[level], k[level])
        conv(f"dec{level}.conv2", f[level], f[level], k[level])
    conv("head", f[0], arch.classes, 1)
    return out


def num_params(arch: UNetArch) -> int:
    """d, the length of the flat parameter vector."""
    return sum(math.prod(s) for _, s in layout(arch))


def unflatten(arch: UNetArch, w: torch.Tensor) -> dict[str, torch.Tensor]:
    """Name -> view of ``w [d]`` with that parameter's shape (no copy)."""
    names, shapes = zip(*layout(arch), strict=True)
    chunks = w.split([math.prod(s) for s in shapes])
    return {n: c.view(s) for n, c, s in zip(names, chunks, shapes, strict=True)}


def init_flat(arch: UNetArch, g: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """He-uniform weights, U(-sqrt(6/fan_in), sqrt(6/fan_in)) with fan_in = c_in k^2, and zero
    biases (the head: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), no ReLU follows it); ``[d]`` from ``g``."""
    out = []
    for name, shape in layout(arch):
        if name.endswith("bias"):
            out.append(torch.zeros(math.prod(shape), dtype=dtype))
            continue
        fan_in = math.prod(shape[1:])
        bound = math.sqrt((1.0 if name.startswith("head") else 6.0) / fan_in)
        out.append((2 * torch.rand(math.prod(shape), generator=g, dtype=dtype) - 1) * bound)
    return torch.cat(out)


def _block(p: dict[str, torch.Tensor], name: str, h: torch.Tensor, k: int) -> torch.Tensor:
    for conv in ("conv1", "conv2"):
        h = F.relu(F.conv2d(h, p[f"{name}.{conv}.weight"], p[f"{name}.{conv}.bias"], padding=k // 2))
    return h


def forward(arch: UNetArch, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Logits ``[B, classes, S, S]`` of images ``x [B, in_channels, S, S]`` (S divisible by 2^(L-1))."""
    skips, h = [], x
    for level, k in enumerate(arch.kernels):
        if level > 0:
            pool = F.max_pool2d if arch.pooling[level - 1] == "max" else F.avg_pool2d
            h = pool(h, 2)
        h = _block(p, f"enc{level}", h, k)
        skips.append(h)
    for level in reversed(range(len(arch.filters) - 1)):
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = _block(p, f"dec{level}", torch.cat([h, skips[level]], 1), arch.kernels[level])
    return F.conv2d(h, p["head.weight"], p["head.bias"])
