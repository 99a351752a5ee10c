"""Rayleigh fading: ``h ~ CN(0, 1)`` (no line of sight)."""

from __future__ import annotations

import math

import torch

from channels.fading.base import FadingLaw, complex_normal
from channels.stats import rayleigh_mean_abs


class Rayleigh(FadingLaw):
    """``h ~ CN(0, 1)``: ``|h|`` is Rayleigh with ``E|h| = √π/2``, ``E[Re h] = 0``."""

    def sample(self, shape: tuple[int, ...], generator: torch.Generator,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return complex_normal(shape, generator, dtype)

    def mean_abs(self) -> float:
        return rayleigh_mean_abs()

    def mean_real(self) -> float:
        return 0.0

    def dropout_probability(self, h_th: float) -> float:
        return 1.0 - math.exp(-float(h_th) ** 2)
