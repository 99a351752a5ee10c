"""Step-size schedules eta_s over the global step s = r*K + k."""

from __future__ import annotations

import math
from collections.abc import Callable

from fedsim.config import LrConfig


def make_lr(cfg: LrConfig, total_steps: int) -> Callable[[int], float]:
    """The schedule as a function of the global step (0-based)."""
    if cfg.schedule == "constant":
        eta = cfg.eta
        return lambda s: eta
    if cfg.schedule == "inverse":
        theta, gamma = cfg.theta, cfg.gamma
        return lambda s: theta / (s + gamma)
    eta, eta_min, span = cfg.eta, cfg.eta_min, max(total_steps - 1, 1)
    return lambda s: eta_min + 0.5 * (eta - eta_min) * (1 + math.cos(math.pi * min(s, span) / span))
