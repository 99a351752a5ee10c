"""No power control (equal gain, no CSI at the transmitter): ``p = √ρ``."""

from __future__ import annotations

import torch

from channels.fading.base import FadingLaw
from channels.power.base import PowerControl


class NoPowerControl(PowerControl):
    """``a = Re(h)/E[Re h]``: needs ``E[Re h] ≠ 0`` (no fading, or Rician with K > 0)."""

    def decoding_gain(self, fading: FadingLaw) -> float:
        return fading.mean_real()

    def check(self, fading: FadingLaw) -> None:
        if fading.mean_real() == 0.0:
            raise ValueError("channel.power_control='none' with Rayleigh fading has zero mean gain "
                             "(E[Re h] = 0); use 'phase' or 'inversion', or Rician fading with K > 0")

    def gains(self, h: torch.Tensor, h_est: torch.Tensor | None, *, h_th: float, mu: float,
              real_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if mu == 0.0:
            raise ValueError("power_control='none' needs E[Re h] != 0 (no Rayleigh fading)")
        ones = torch.ones(h.shape, dtype=real_dtype)
        return h.real.to(real_dtype) / mu, torch.ones(h.shape, dtype=torch.bool), ones
