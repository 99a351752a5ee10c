"""No fading: ``h = 1`` on every link."""

from __future__ import annotations

import torch

from channels.fading.base import FadingLaw, complex_dtype


class NoFading(FadingLaw):
    """``h = 1``; draws nothing from the generator."""

    def sample(self, shape: tuple[int, ...], generator: torch.Generator,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.ones(shape, dtype=complex_dtype(dtype))

    def mean_abs(self) -> float:
        return 1.0

    def mean_real(self) -> float:
        return 1.0

    def dropout_probability(self, h_th: float) -> float:
        return 1.0 if h_th > 1.0 else 0.0
