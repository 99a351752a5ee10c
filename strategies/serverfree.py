"""(c) Server-free analog FL, and the medium for overlapped schedules. Reference: §3(c), §2.5, §3(d).

There is no global model. The ServerApp is only the air (or a non-computing relay AP): it
superposes what the UEs transmit through a ``channels`` receiver and sends every UE its **own**
matched-filter output. Each UE keeps its model in its Flower ``Context.state`` and merges the
estimate in mode ``accumulate`` (gradients/updates) or ``reset`` (models).

The same medium also runs the overlapped schedule (d) for any receiver (``digital``/``server``
estimates are broadcast to every UE). An estimate is delivered with the next message to the
UE, tagged with the local step before which it must be merged, and re-delivered if that UE's
reply fails, so a UE never silently misses an aggregate.

Timing of observations: a UE applies the estimates of round r at the start of round r+1 and
then reports its model, so the model "at the end of round r" reaches the server one message
later; a final flush message after the last round delivers what is left.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from channels import Channel, ChannelResult
from strategies.common import ARRAYS, CONFIG, Failure, sample_ues, split_finite, split_replies, to_record
from strategies.fedavg import GradFn, LrFn
from strategies.overlap import OverlapState, arrival_step, merge_arrival
from strategies.server_ota import NoiseFactor, TrainFn, stack_rows, transmit_scaled, ue_transmit

MODES = ("accumulate", "reset")
TRANSMITTED = "transmitted"  # reply metric: 1.0 if the first vector is a transmission


# ----------------------------------------------------------------------------- UE side


@dataclass
class UEState:
    """What a UE keeps between rounds: its model and (overlap) its blocks in flight."""

    w: torch.Tensor
    overlap: OverlapState


@dataclass
class Arrival:
    """An estimate for one UE: from ``block``, merged before local step ``index`` of the round."""

    block: int
    index: int
    estimate: torch.Tensor


def to_update_units(estimate: torch.Tensor, transmit: str, eta_of_block: float) -> torch.Tensor:
    """An estimate of sum q g (gradient) becomes the update -eta g; updates pass through."""
    return -eta_of_block * estimate if transmit == "gradient" else estimate


def ue_round(state: UEState, arrivals: list[Arrival], *, grad: GradFn, first_step: int, steps: int,
             lr: LrFn, transmit: str, mode: str, overlap: bool, merge: str, participate: bool,
             block_len: int, report: bool, train: TrainFn | None = None
             ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """One round of a server-free (or overlapped) UE. Returns (reported model, transmitted v).

    ``block_len`` maps a block id to the global step its gradient was taken at
    (only used for gradient transmission, K = 1): pass ``steps`` as the block length.
    """
    by_index: dict[int, list[Arrival]] = {}
    for a in arrivals:
        by_index.setdefault(a.index if participate else 0, []).append(a)

    def merge_all(index: int) -> None:
        for a in sorted(by_index.pop(index, []), key=lambda a: a.block):
            if mode == "reset":
                state.w = a.estimate.clone()
                continue
            eta = lr((a.block - 1) * block_len) if transmit == "gradient" else 1.0
            delta_hat = to_update_units(a.estimate, transmit, eta)
            if overlap:
                state.w = merge_arrival(state.w, state.overlap, a.block, delta_hat, merge)
            else:
                state.w = state.w + delta_hat

    merge_all(0)
    reported = state.w.clone() if report else None
    if not participate:
        for index in sorted(by_index):
            merge_all(index)
        return reported, None
    if not overlap:
        return reported, ue_transmit(state.w, grad, first_step, steps, lr, transmit, train)
    delta = torch.zeros_like(state.w)
    g = delta
    for k in range(steps):
        if k:
            merge_all(k)
        s = first_step + k
        g = grad(state.w, s)
        step = g * (-lr(s))
        state.w = state.w + step
        delta += step
    block = first_step // steps + 1
    state.overlap.pending[block] = delta
    return reported, (g if transmit == "gradient" else delta)


# ----------------------------------------------------------------------------- medium side


class ServerFreeMedium(FedAvg):
    """The air between UEs: no model, only superposition, channel and per-UE delivery.

    Args:
        channel: a ``channels.Channel`` (relay/d2d give ``[N, d]``; server/digital ``[d]``,
            broadcast to every UE).
        weights: q_n, ``[N]``.  node_of_ue: partition id -> node id.  seed: experiment seed.
        fraction: share of UEs that transmit each round (all UEs always receive).
        steps_per_round: local steps per round (block length).
        delay: D in local steps (overlap), or None for the sequential schedule.
        dim, dtype: the model vector's length and dtype.
        noise_factor: optional round -> factor scaling the channel noise (rho_t growth).
        device: where the ``[N, d]`` channel work and the queued estimates live (None: CPU).
    """

    def __init__(self, *, channel: Channel, weights: torch.Tensor, node_of_ue: dict[int, int], seed: int,
                 fraction: float, steps_per_round: int, delay: int | None, dim: int, dtype: torch.dtype,
                 noise_factor: NoiseFactor | None = None, device: torch.device | None = None):
        super().__init__(fraction_train=fraction, fraction_evaluate=1.0, min_train_nodes=1,
                         min_available_nodes=len(node_of_ue))
        self.channel = channel
        self.weights = weights.to(torch.float64)
        self.node_of_ue = dict(node_of_ue)
        self.ue_of_node = {v: k for k, v in node_of_ue.items()}
        self.seed = seed
        self.K = steps_per_round
        self.delay = delay
        self.dim, self.dtype = dim, dtype
        self.device = device if device is not None else torch.device("cpu")
        self.noise_factor = noise_factor
        self.inbox: dict[int, list[tuple[int, int, torch.Tensor]]] = {u: [] for u in node_of_ue}
        self._sent: dict[int, list[tuple[int, int, torch.Tensor]]] = {}
        self.last_failures: list[Failure] = []
        self.last_participants: list[int] = []
        self.last_reports: dict[int, torch.Tensor] = {}
        self.last_channel: ChannelResult | None = None

    @property
    def num_ues(self) -> int:
        return len(self.node_of_ue)

    def configure_round(self, server_round: int, config: ConfigRecord, *, report: bool,
                        flush: bool = False) -> list[Message]:
        """Messages for round ``server_round`` (or the final flush): every UE gets its due
        estimates; sampled UEs are asked to compute and transmit."""
        start = (server_round - 1) * self.K
        sampled = set() if flush else set(sample_ues(self.seed, server_round, self.num_ues, self.fraction_train))
        msgs = []
        self._sent = {}
        for ue in range(self.num_ues):
            due = [a for a in self.inbox[ue] if flush or a[1] < start + self.K]
            self._sent[ue] = due
            cfg = ConfigRecord(dict(config))
            cfg.update({
                "server-round": server_round,
                "first-step": start,
                "steps": self.K,
                "participate": ue in sampled,
                "report": report,
                "arrival-blocks": [a[0] for a in due],
                "arrival-index": [0 if flush else max(a[1] - start, 0) for a in due],
            })
            arrays = to_record(*[a[2] for a in due]) if due else ArrayRecord()
            msgs.append(Message(RecordDict({ARRAYS: arrays, CONFIG: cfg}), self.node_of_ue[ue], MessageType.TRAIN))
        return msgs

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Collect reports and transmissions, run the channel, queue every UE's estimate."""
        good, bad = split_replies(replies, self.ue_of_node)
        for r in good:  # delivered: remove from the inbox (failed UEs get them again)
            sent = {id(a) for a in self._sent.get(r.ue, [])}
            self.inbox[r.ue] = [a for a in self.inbox[r.ue] if id(a) not in sent]
        # reply vectors: [v] + [reported model] when the UE transmitted, else [reported model]
        tx = [r for r in good if r.metrics.get(TRANSMITTED) == 1.0]
        self.last_reports = {r.ue: r.vectors[-1] for r in good
                             if len(r.vectors) == (2 if r.metrics.get(TRANSMITTED) == 1.0 else 1)}
        tx, non_finite = split_finite(tx, first_only=True)
        bad += [Failure(r.ue, self.node_of_ue[r.ue], "non-finite vector") for r in non_finite]
        self.last_failures, self.last_participants = bad, [r.ue for r in tx]
        self.last_channel = None
        if not tx:
            return None, None
        V, available = stack_rows({r.ue: r.vectors[0] for r in tx}, self.num_ues,
                                  torch.zeros(self.dim, dtype=self.dtype, device=self.device))
        res = transmit_scaled(self.channel, V, self.weights, self.seed, server_round, available,
                              self.noise_factor(server_round) if self.noise_factor else 1.0)
        self.last_channel = res
        if res.n_active == 0:
            return None, None
        step = arrival_step(server_round, self.K, self.delay or 0)
        per_ue = res.estimate.dim() == 2
        for ue in range(self.num_ues):
            self.inbox[ue].append((server_round, step, res.estimate[ue] if per_ue else res.estimate))
        return None, None


__all__ = ["MODES", "TRANSMITTED", "Arrival", "ServerFreeMedium", "UEState", "ue_round"]
