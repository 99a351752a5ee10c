"""The interference-model interface and the level conventions shared by every model."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from channels.registry import ComponentParams
from channels.stats import C_G, geometric_power, sas_median_abs


class InterferenceModel(ABC):
    """Interference of per-coordinate SαS scale ``c`` with tail index ``alpha``.

    Args:
        params: the model's parameters (its ``Params``).
        scale: ``c`` (per coordinate, at a receiver, before the receiver's normalisation).
    """

    Params: ClassVar[type[ComponentParams]] = ComponentParams

    def __init__(self, params: ComponentParams, scale: float) -> None:
        if not (math.isfinite(scale) and scale >= 0):
            raise ValueError(f"interference scale must be finite and >= 0, got {scale!r}")
        self.params = params
        self.scale = float(scale)

    @property
    def alpha(self) -> float:
        """Tail index (2 for Gaussian and for no interference)."""
        return 2.0

    @property
    def stream(self) -> str:
        """The random stream the receivers draw this model's noise from."""
        return "interference"

    @abstractmethod
    def sample(self, shape: tuple[int, ...], generator: torch.Generator,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Draws of ``shape`` (typically ``[d]`` or ``[N, d]``) from ``generator``."""

    def median_abs(self) -> float:
        """``median|ξ|`` per coordinate."""
        return sas_median_abs(self.alpha) * self.scale

    def geometric_power(self) -> float:
        """``S0 = exp(E ln|ξ|)``, the level that compares tail indices fairly."""
        return geometric_power(self.alpha, self.scale)


def interference_scale(alpha: float, *, scale: float | None = None, dispersion: float | None = None,
                       gsnr_db: float | None = None, power: float = 1.0) -> float:
    """The per-coordinate SαS scale ``c`` from exactly one level specification.

    - ``scale``: ``c`` itself.
    - ``dispersion``: ``γ = c^α`` → ``c = γ^{1/α}``.
    - ``gsnr_db``: geometric SNR in dB, ``GSNR = P / S0²`` with the geometric power
      ``S0 = exp(E ln|ξ|) = C_g^{1/α−1}·c`` (``C_g = e^γ_Euler ≈ 1.781``), so
      ``S0 = √(P / 10^{gsnr_db/10})`` and ``c = S0·C_g^{1−1/α}``; ``power`` is P (linear).

    Use the GSNR form to compare different α at a "fair" level: the variance is infinite for
    α < 2, so a Gaussian SNR is meaningless. At α = 2, ``c = S0·√C_g``.
    """
    alpha = float(alpha)
    if not 0.0 < alpha <= 2.0:
        raise ValueError(f"alpha must be in (0, 2], got {alpha}")
    if sum(v is not None for v in (scale, dispersion, gsnr_db)) != 1:
        raise ValueError("give exactly one of scale=, dispersion=, gsnr_db=")
    if scale is not None:
        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}")
        return float(scale)
    if dispersion is not None:
        if dispersion < 0:
            raise ValueError(f"dispersion must be >= 0, got {dispersion}")
        return float(dispersion) ** (1.0 / alpha)
    if power <= 0:
        raise ValueError(f"power must be > 0 (linear), got {power}")
    s0 = math.sqrt(power / 10.0 ** (float(gsnr_db) / 10.0))
    return s0 * C_G ** (1.0 - 1.0 / alpha)
