"""Phase-only correction (GBMA): ``p = √ρ·e^{−j∠ĥ}``."""

from __future__ import annotations

import torch

from channels.fading.base import FadingLaw
from channels.power.base import PowerControl


class PhaseOnly(PowerControl):
    """``a = Re(h ĥ*)/(|ĥ| μ_h)`` (``|h|/μ_h`` with perfect CSI, unbiased since ``E|h| = μ_h``)."""

    def decoding_gain(self, fading: FadingLaw) -> float:
        return fading.mean_abs()

    def gains(self, h: torch.Tensor, h_est: torch.Tensor | None, *, h_th: float, mu: float,
              real_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if h_est is None:
            a = h.abs().to(real_dtype) / mu
        else:
            mag = h_est.abs().to(real_dtype)
            a = (h * h_est.conj()).real.to(real_dtype) / (mag.clamp_min(1e-30) * mu)
        return a, torch.ones(h.shape, dtype=torch.bool), torch.ones(h.shape, dtype=real_dtype)
