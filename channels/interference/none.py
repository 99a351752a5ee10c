"""No interference."""

from __future__ import annotations

import torch

from channels.interference.base import InterferenceModel


class NoInterference(InterferenceModel):
    """Zeros; draws nothing from the generator."""

    def __init__(self, params=None, scale: float = 0.0) -> None:  # noqa: ARG002 - the scale is always 0
        super().__init__(params, 0.0)

    def sample(self, shape: tuple[int, ...], generator: torch.Generator,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.zeros(shape, dtype=dtype)
