"""Rician fading: a line-of-sight component plus Rayleigh scatter, K-factor ``k`` (linear)."""

from __future__ import annotations

import math

import torch
from pydantic import Field
from scipy.stats import rice

from channels.fading.base import FadingLaw, complex_normal
from channels.registry import ComponentParams
from channels.stats import rician_mean_abs


class RicianParams(ComponentParams):
    k: float = Field(1.0, ge=0, description="K-factor (linear, not dB): LOS power / scattered power")


class Rician(FadingLaw):
    """``h = √(K/(K+1)) + √(1/(K+1))·CN(0, 1)`` (LOS phase 0); K = 0 is Rayleigh."""

    Params = RicianParams

    @property
    def k(self) -> float:
        return float(self.params.k)

    def sample(self, shape: tuple[int, ...], generator: torch.Generator,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        los = math.sqrt(self.k / (self.k + 1.0))
        return complex_normal(shape, generator, dtype).mul_(math.sqrt(1.0 / (self.k + 1.0))).add_(los)

    def mean_abs(self) -> float:
        return rician_mean_abs(self.k)

    def mean_real(self) -> float:
        return math.sqrt(self.k / (self.k + 1.0))

    def dropout_probability(self, h_th: float) -> float:
        """The Rice CDF at ``h_th`` (a Marcum Q function)."""
        sigma = math.sqrt(1.0 / (2.0 * (self.k + 1.0)))
        nu = math.sqrt(self.k / (self.k + 1.0))
        return float(rice.cdf(h_th / sigma, nu / sigma))
