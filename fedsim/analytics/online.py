"""Analytics computed alongside a run: one call per logged round (see OnlineAnalytics)."""

from __future__ import annotations

from typing import Any

import torch


class OnlineAnalytics:
    """Per-round theory values and channel statistics for ``metrics.jsonl``.

    Args:
        cfg: the ExperimentConfig. workload: the Workload (for its TheoryConstants).
        tau_cm: communication latency [s]. delay_steps: D. steps_per_round: local steps per round.
    """

    def __init__(self, cfg: Any, workload: Any, *, tau_cm: float, delay_steps: int, steps_per_round: int):
        self.cfg, self.workload = cfg, workload

    def row(self, r: int, row: dict[str, Any], channel: Any | None, models: torch.Tensor | None) -> dict[str, Any]:
        """Extra keys for the row of round ``r`` (0 = initial model). ``channel`` is that round's
        ``channels.ChannelResult`` (None for round 0 or when nobody transmitted); ``models`` is
        the evaluated model ``[1, d]`` (server strategies) or the UE models ``[M, d]``
        (server-free/overlap), or None when the round was not evaluated."""
        return {}
