"""The fading-law interface, in the style of ``scipy.stats`` distributions: draws plus the
closed forms the receivers and the analytics need (mean gain, drop-out probability)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from channels.registry import ComponentParams


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """The complex dtype matching a real one (float64 -> complex128, else complex64)."""
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def complex_normal(shape: tuple[int, ...], generator: torch.Generator,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``CN(0, 1)`` samples of ``shape`` (real and imaginary parts ``N(0, ½)``), complex dtype."""
    z = torch.randn((*shape, 2), generator=generator, dtype=dtype).mul_(math.sqrt(0.5))
    return torch.view_as_complex(z)


def estimate_csi(h: torch.Tensor, csi_error: float, generator: torch.Generator) -> torch.Tensor:
    """Imperfect CSI ``ĥ = h + e``, ``e ~ CN(0, csi_error)`` (variance, linear); 0 returns h."""
    if csi_error == 0.0:
        return h
    real = torch.float64 if h.dtype == torch.complex128 else torch.float32
    return h + complex_normal(tuple(h.shape), generator, real).mul_(math.sqrt(csi_error))


class FadingLaw(ABC):
    """A block-fading law with unit mean power ``E|h|² = 1``.

    Subclasses set ``Params`` when they take parameters (a :class:`ComponentParams` subclass)
    and implement the draw and the closed forms."""

    Params: ClassVar[type[ComponentParams]] = ComponentParams

    def __init__(self, params: ComponentParams) -> None:
        self.params = params

    @abstractmethod
    def sample(self, shape: tuple[int, ...], generator: torch.Generator,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Complex coefficients of ``shape`` (``[N]`` uplink, ``[N, N]`` D2D with ``h[n, m] = h_{n→m}``)."""

    @abstractmethod
    def mean_abs(self) -> float:
        """``μ_h = E|h|``, the normaliser of phase-only power control."""

    @abstractmethod
    def mean_real(self) -> float:
        """``E[Re h]``, the gain a receiver sees when the transmitter has no CSI."""

    def var_abs(self) -> float:
        """``Var|h| = E|h|² − μ_h² = 1 − μ_h²``."""
        return 1.0 - self.mean_abs() ** 2

    @abstractmethod
    def dropout_probability(self, h_th: float) -> float:
        """``P(|h| < h_th)`` (perfect CSI): the share of UEs truncated channel inversion drops."""
