"""A new fading law in one file: Nakagami-m fading (m >= 1/2; m = 1 is Rayleigh).

|h|² ~ Gamma(m, 1/m) (unit mean power) with a uniform phase. The draw inverts the Gamma CDF on
uniforms from the channel's own generator, so the law is seeded like every other draw.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from scipy import special, stats

from channels import FADING, ComponentParams, FadingLaw


class NakagamiParams(ComponentParams):
    m: float = Field(1.0, ge=0.5, description="shape m (1 = Rayleigh; larger = milder fading)")


class Nakagami(FadingLaw):
    """Nakagami-m block fading with E|h|² = 1."""

    Params = NakagamiParams

    @property
    def m(self) -> float:
        return float(self.params.m)

    def sample(self, shape: tuple[int, ...], generator: torch.Generator,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        u = torch.rand((*shape, 2), generator=generator, dtype=torch.float64)
        power = torch.from_numpy(stats.gamma.ppf(u[..., 0].numpy(), self.m, scale=1.0 / self.m))
        h = torch.polar(power.sqrt(), 2 * math.pi * u[..., 1])
        return h.to(torch.complex128 if dtype == torch.float64 else torch.complex64)

    def mean_abs(self) -> float:
        return math.exp(special.gammaln(self.m + 0.5) - special.gammaln(self.m)) / math.sqrt(self.m)

    def mean_real(self) -> float:
        return 0.0  # uniform phase

    def dropout_probability(self, h_th: float) -> float:
        return float(special.gammainc(self.m, self.m * h_th**2))


FADING.register("nakagami", Nakagami)
