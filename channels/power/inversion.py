"""Truncated channel inversion (BAA): ``p = √ρ·ĥ*/|ĥ|²`` if ``|ĥ| ≥ h_th``, else the UE drops out."""

from __future__ import annotations

import torch

from channels.fading.base import FadingLaw
from channels.power.base import PowerControl


class TruncatedInversion(PowerControl):
    """``a = Re(h ĥ*)/|ĥ|²`` (exactly 1 with perfect CSI); drop-out below ``h_th``."""

    single_link = True

    def decoding_gain(self, fading: FadingLaw) -> float:
        return 1.0

    def gains(self, h: torch.Tensor, h_est: torch.Tensor | None, *, h_th: float, mu: float,
              real_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        he = h if h_est is None else h_est
        mag = he.abs().to(real_dtype)
        ok = mag >= h_th
        a = ok.to(real_dtype) if h_est is None else (h * he.conj()).real.to(real_dtype) / mag.square()
        safe = torch.where(ok, mag, torch.ones_like(mag))
        amp2 = torch.where(ok, safe.square().reciprocal(), torch.zeros_like(mag))
        return torch.where(ok, a, torch.zeros_like(a)), ok, amp2
