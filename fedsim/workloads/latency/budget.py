"""Per-UE latency budgets: UE n runs on device profile ``profiles[n]`` and allows at most
``limits[n]`` ms per forward of one batch of its profile. A network fits when it meets *every* UE's
limit, so the UE with the least slack binds. Latencies come from the per-op cost model
(:func:`~fedsim.workloads.latency.costmodel.predict_ms`) applied to the network's op summary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fedsim.workloads.latency.costmodel import OpSummary, cost_model, features, mlp_features
from fedsim.workloads.latency.space import PROFILES


@dataclass(frozen=True)
class LatencyBudget:
    """``profiles[n]`` and ``limits[n]`` (ms) of every participating UE n."""

    profiles: tuple[str, ...]
    limits: tuple[float, ...]

    @classmethod
    def per_ue(cls, max_latency_ms: float | Sequence[float], profiles: Sequence[str] | None,
               num_ues: int) -> LatencyBudget:
        """UE n gets ``profiles[n % len(profiles)]`` (default: the shipped profiles in order) and
        ``max_latency_ms`` (one number for all, or one per UE)."""
        names = list(profiles) if profiles else [p.name for p in PROFILES]
        limits = [float(max_latency_ms)] * num_ues if isinstance(max_latency_ms, int | float) else list(max_latency_ms)
        if len(limits) != num_ues:
            raise ValueError(f"max_latency_ms has {len(limits)} entries for {num_ues} UEs: give one or one per UE")
        known = [p.name for p in PROFILES]
        if bad := [n for n in names if n not in known]:
            raise ValueError(f"unknown device profile(s) {bad}; known: {', '.join(known)}")
        return cls(tuple(names[n % len(names)] for n in range(num_ues)), tuple(limits))

    def pairs(self) -> list[tuple[str, float]]:
        """The distinct (profile, tightest limit) pairs: UEs sharing a profile bind at their minimum."""
        best: dict[str, float] = {}
        for p, lim in zip(self.profiles, self.limits, strict=True):
            best[p] = min(lim, best.get(p, lim))
        return list(best.items())

    def latencies(self, summary: OpSummary) -> list[float]:
        """Predicted ms of the network on every UE's profile, ``[N]``."""
        model = cost_model()
        cache = {p: model.predict_ms(summary, p) for p in set(self.profiles)}
        return [cache[p] for p in self.profiles]

    def cost_of(self, summary: OpSummary, profile: str) -> float:
        """Predicted ms of a network with op ``summary`` on ``profile``."""
        return cost_model().predict_ms(summary, profile)

    def slack(self, summary: OpSummary) -> list[float]:
        """``limits[n] - latency[n]`` per UE (negative: over budget)."""
        return [lim - t for lim, t in zip(self.limits, self.latencies(summary), strict=True)]

    def fits(self, summary: OpSummary) -> bool:
        return min(self.slack(summary)) >= 0.0

    def mlp_fits(self, widths: torch.Tensor, d_in: int, classes: int) -> torch.Tensor:
        """``[M]`` bool: MLPs with hidden ``widths [M, L]`` meet every UE's limit (vectorised)."""
        ok = torch.ones(widths.shape[0], dtype=torch.bool)
        model = cost_model()
        for name, lim in self.pairs():
            p, coef = model.profile(name)
            ok &= mlp_features(widths, d_in, classes, p) @ torch.as_tensor(coef) <= lim
        return ok

    def text(self) -> str:
        return "max_latency_ms " + ", ".join(f"{lim:g} on {p}" for p, lim in self.pairs())


def summary_features(summary: OpSummary, profile: str) -> torch.Tensor:
    """``[3]`` cost-model features of a summary on a named profile (for reports and tests)."""
    return torch.as_tensor(features(summary, cost_model().profile(profile)[0]))
