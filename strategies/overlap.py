"""(d) Computation overlapped with the exchange, DGA-style (model §3(d), §5; § numbers: docs/explanation/model.md).

UEs never pause. Block r (the K steps of round r, 1-based, global steps [(r-1)K, rK)) is sent
when it ends; its aggregate arrives D = ceil(tau_cm / tau_cp) steps later, at global step
rK + D, and is merged before the gradient of that step:

    swap:     w_m <- w_m - Delta_{m,r} + Delta_hat_{m,r}     (own stale block out, aggregate in)
    replace:  w_sync <- w_sync + Delta_hat_{m,r};  w_m <- w_sync   (local progress dropped)

Delta = sum of the block's own steps (-eta_s g_s), i.e. the model update of the block. With
D = 0 the swap gives the sequential algorithm (c)/(a); with K = 1 and no noise it is DGA's
w <- w - eta_s grad^s - eta_{s-D} (gbar^{s-D} - grad^{s-D}).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

MERGES = ("swap", "replace")
IN_FLIGHT = ("pipelined", "single")


def delay_in_steps(tau_cm: float, tau_cp: float) -> int:
    """D = ceil(tau_cm / tau_cp) (0 when there is no latency)."""
    if tau_cm <= 0:
        return 0
    return max(1, math.ceil(tau_cm / tau_cp - 1e-12))


def steps_per_block(K: int, D: int, in_flight: str) -> int:
    """Pipelined blocks last K steps; with one block in flight a block lasts max(K, D)."""
    if in_flight not in IN_FLIGHT:
        raise ValueError(f"in_flight must be one of {IN_FLIGHT}, got {in_flight!r}")
    return K if in_flight == "pipelined" else max(K, D)


def arrival_step(block: int, K: int, D: int) -> int:
    """Global step before which the aggregate of ``block`` (1-based) is merged."""
    return block * K + D


@dataclass
class OverlapState:
    """A UE's overlap buffers: its own blocks still in flight, and the synchronised model
    (used by the ``replace`` merge)."""

    pending: dict[int, torch.Tensor] = field(default_factory=dict)
    sync: torch.Tensor | None = None


def merge_arrival(w: torch.Tensor, state: OverlapState, block: int, delta_hat: torch.Tensor,
                  merge: str) -> torch.Tensor:
    """Merge the aggregate of ``block`` (in update units) into the UE model ``w``."""
    own = state.pending.pop(block, None)
    if merge == "swap":
        return w + delta_hat if own is None else w - own + delta_hat
    if merge == "replace":
        state.sync = (state.sync if state.sync is not None else w) + delta_hat
        return state.sync.clone()
    raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
