"""Gaussian interference: ``N(0, 2c²)`` per coordinate, the law of SαS(2, c)."""

from __future__ import annotations

import math

import torch

from channels.interference.base import InterferenceModel


class GaussianInterference(InterferenceModel):
    """i.i.d. ``N(0, 2c²)`` per coordinate (standard deviation ``√2·c``)."""

    @property
    def std(self) -> float:
        """Per-coordinate standard deviation ``√2·c``."""
        return math.sqrt(2.0) * self.scale

    def sample(self, shape: tuple[int, ...], generator: torch.Generator,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=dtype).mul_(self.std)
