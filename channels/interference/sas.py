"""Symmetric α-stable interference SαS(α, c), 0 < α ≤ 2 (α = 2 is Gaussian with variance 2c²)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from channels.interference.base import InterferenceModel
from channels.registry import ComponentParams
from channels.stable import sample_sas, sample_sas_isotropic


class SaSParams(ComponentParams):
    alpha: float = Field(2.0, gt=0, le=2, description="tail index α (smaller: heavier tail); 2 is Gaussian")
    vector: Literal["iid", "isotropic"] = Field(
        "iid", description="'iid': independent coordinates; 'isotropic': sub-Gaussian SαS vectors √A·G "
                           "(same marginals, other ‖ξ‖ statistics)")
    draws: Literal["common", "independent"] = Field(
        "common", description="'common': every α transforms the same uniform and exponential draws (common "
                              "random numbers: runs at different α differ only by α); 'independent': each α "
                              "draws from its own stream")


class SaSInterference(InterferenceModel):
    """SαS(α, c) per coordinate; ``vector = "isotropic"`` draws sub-Gaussian vectors along the last
    dimension (each row shares one ``A``)."""

    Params = SaSParams

    @property
    def alpha(self) -> float:
        return float(self.params.alpha)

    @property
    def stream(self) -> str:
        if self.params.draws == "common":
            return "interference"
        return f"interference/sas-alpha={self.alpha!r}"

    @property
    def dispersion(self) -> float:
        """``γ = c^α``."""
        return self.scale**self.alpha

    def sample(self, shape: tuple[int, ...], generator: torch.Generator,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        fn = sample_sas if self.params.vector == "iid" else sample_sas_isotropic
        return fn(shape, self.alpha, self.scale, generator=generator, dtype=dtype)
