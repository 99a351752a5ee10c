"""Interference/noise models after the matched filter (reference §2.4).

Each model samples a tensor of any shape (typically ``[d]`` or ``[N, d]``) from an explicit
``torch.Generator``. Levels are per-coordinate **scales** ``c`` in the SαS sense
(``E e^{iuξ} = exp(-c^α|u|^α)``), so ``GaussianInterference(scale=c)`` has the law of
``SaSInterference(alpha=2, scale=c)``: variance ``2c²``, std ``√2·c``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from channels.stable import sample_sas, sample_sas_isotropic
from channels.stats import C_G


class InterferenceModel(Protocol):
    """What a receiver needs from an interference model."""

    alpha: float  # tail index (2 for Gaussian/none)
    scale: float  # per-coordinate SαS scale c

    def sample(
        self, shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype = ...
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class NoInterference:
    """No interference: ``sample`` returns zeros and draws nothing from the generator."""

    alpha: float = 2.0
    scale: float = 0.0

    def sample(
        self, shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        return torch.zeros(shape, dtype=dtype)


@dataclass(frozen=True)
class GaussianInterference:
    """Gaussian interference ``N(0, 2c²)`` per coordinate, i.e. ``SαS(2, c)``.

    Build from a plain standard deviation with :meth:`from_std` (``c = std/√2``).
    """

    scale: float
    alpha: float = 2.0

    def __post_init__(self) -> None:
        if self.scale < 0 or not math.isfinite(self.scale):
            raise ValueError(f"Gaussian scale must be finite and >= 0, got {self.scale}")

    @classmethod
    def from_std(cls, std: float) -> GaussianInterference:
        """Gaussian with per-coordinate standard deviation ``std`` (scale ``std/√2``)."""
        return cls(scale=float(std) / math.sqrt(2.0))

    @property
    def std(self) -> float:
        """Per-coordinate standard deviation ``√2·c``."""
        return math.sqrt(2.0) * self.scale

    def sample(
        self, shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=dtype).mul_(self.std)


@dataclass(frozen=True)
class SaSInterference:
    """Symmetric α-stable interference ``SαS(α, c)``, 0 < α ≤ 2.

    ``vector="iid"``: every coordinate independent. ``vector="isotropic"``: sub-Gaussian vectors
    ``√A·G`` along the last dimension (each row shares one ``A``); same marginals, different
    ``‖ξ‖`` statistics.
    """

    alpha: float
    scale: float
    vector: Literal["iid", "isotropic"] = "iid"

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha <= 2.0:
            raise ValueError(f"SαS alpha must be in (0, 2], got {self.alpha}")
        if self.scale < 0 or not math.isfinite(self.scale):
            raise ValueError(f"SαS scale must be finite and >= 0, got {self.scale}")
        if self.vector not in ("iid", "isotropic"):
            raise ValueError(f"sas_vector must be 'iid' or 'isotropic', got {self.vector!r}")

    @property
    def dispersion(self) -> float:
        """``γ = c^α`` (the 'gamma' of some SαS codes, e.g. salphas.py)."""
        return self.scale**self.alpha

    def sample(
        self, shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        fn = sample_sas if self.vector == "iid" else sample_sas_isotropic
        return fn(shape, self.alpha, self.scale, generator=generator, dtype=dtype)


def interference_scale(
    alpha: float,
    *,
    scale: float | None = None,
    dispersion: float | None = None,
    gsnr_db: float | None = None,
    power: float = 1.0,
) -> float:
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
    given = [v is not None for v in (scale, dispersion, gsnr_db)]
    if sum(given) != 1:
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


def make_interference(
    kind: str, *, alpha: float = 2.0, scale: float = 0.0, vector: str = "iid"
) -> InterferenceModel:
    """Factory: ``kind`` in {"none", "gaussian", "sas"}; ``scale`` is c (per coordinate)."""
    if kind not in ("none", "gaussian", "sas"):
        raise ValueError(f"interference must be 'none', 'gaussian' or 'sas', got {kind!r}")
    if kind == "none" or scale == 0.0:
        return NoInterference()
    if kind == "gaussian":
        return GaussianInterference(scale=scale)
    return SaSInterference(alpha=alpha, scale=scale, vector=vector)  # type: ignore[arg-type]
