"""How a candidate's reward reaches the UEs: the K scalars ``r_k`` (UE k's metric of the candidate)
are combined into ``R = Σ_k q_k r_k`` with weights ``q_k`` (the UEs' data shares).

``digital`` sends them exactly (a few bytes). ``analog`` sends them over the air through a
:class:`channels.Channel` with the ``server`` receiver, so ``R`` picks up the channel's noise
(interference, fading, drop-outs) exactly as a model update does; every UE hears the same
broadcast estimate, so the UEs still agree on ``R``. The noise is drawn from the channel's own
generators keyed by (search seed, evaluation number): the same search sees the same noise.
"""

from __future__ import annotations

import numpy as np
import torch

from channels import Channel, ChannelConfig

__all__ = ["RewardLink"]


class RewardLink:
    """Sum K weighted scalars digitally or over an analog channel."""

    def __init__(self, transport: str, channel: ChannelConfig | None = None) -> None:
        if transport not in ("digital", "analog"):
            raise ValueError(f"transport must be 'digital' or 'analog', got {transport!r}")
        self.transport = transport
        self.channel = Channel(channel or ChannelConfig(), "server") if transport == "analog" else None

    def combine(self, values: np.ndarray, q: np.ndarray | None, *, seed: int, round: int) -> float:
        """``Σ_k q_k r_k`` (q normalised to sum to one; None: uniform) as the UEs receive it."""
        v = np.asarray(values, dtype=np.float64)
        w = np.full(v.shape, 1.0 / v.size) if q is None else np.asarray(q, dtype=np.float64) / np.sum(q)
        if self.channel is None:
            return float(np.dot(w, v))
        out = self.channel.transmit(torch.as_tensor(v)[:, None], torch.as_tensor(w), seed=seed, round=round)
        return float(out.estimate.reshape(-1)[0])
