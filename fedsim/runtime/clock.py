"""The simulated wall clock: per-UE compute times, the communication latency τ_cm, and rounds that
wait for the slowest participating UE (all in seconds)."""

from __future__ import annotations

import torch

from channels import Channel
from channels.rng import torch_generator
from fedsim.config import ExperimentConfig


def compute_times(cfg: ExperimentConfig, num_ues: int) -> torch.Tensor:
    """Per-UE time of one local step, ``[N]`` seconds: tau_cp * (1 + spread * U(0, 1)),
    fixed for the whole run (stream "timing")."""
    t = cfg.timing
    u = torch.rand(num_ues, generator=torch_generator(cfg.seed, "timing"), dtype=torch.float64)
    return t.tau_cp * (1.0 + t.tau_cp_spread * u)


def communication_time(cfg: ExperimentConfig, channel: Channel, dim: int, num_ues: int) -> float:
    """tau_cm [s] of one exchange: explicit, as a ratio of tau_cp, or the receiver's latency model."""
    t = cfg.timing
    if t.latency_ratio is not None:
        return t.latency_ratio * t.tau_cp
    if t.tau_cm is not None:
        return t.tau_cm
    return channel.latency(dim, num_ues)


class Clock:
    """Simulated wall clock: rounds wait for the slowest participating UE; overlapped UEs never
    wait for the exchange, sequential ones idle tau_cm per round.

    Args:
        tau_cp: per-UE time of one local step ``[N]`` (slow-downs included).
        tau_cm: communication latency of one exchange.  steps: local steps per round.
        overlap: the schedule overlaps computation with the exchange.
    """

    def __init__(self, tau_cp: torch.Tensor, tau_cm: float, steps: int, overlap: bool) -> None:
        self.tau_cp, self.tau_cm, self.steps, self.overlap = tau_cp, tau_cm, steps, overlap
        self.now = 0.0

    def advance(self, participants: list[int], waited: float | None = None) -> float:
        """Advance by one round; ``waited``: a deadline [s] the round waited out (stragglers)."""
        compute = self.steps * float(self.tau_cp[participants].max()) if participants else 0.0
        if waited is not None:
            compute = max(compute, waited)
        self.now += compute if self.overlap else compute + self.tau_cm
        return self.now

    def drain(self) -> float:
        """The last aggregate of an overlapped run lands tau_cm after the last step."""
        if self.overlap:
            self.now += self.tau_cm
        return self.now
