"""The medium: the air between UEs that keep their own models (server-free FL, and any
overlapped schedule).

There is no global model. The server side is only the air (or a non-computing relay AP): it
superposes what the UEs transmit through a ``channels`` receiver and sends every UE its **own**
matched-filter output (``digital``/``server`` receivers give one estimate, broadcast to every
UE). Each UE keeps its model in its private state and merges the estimate in mode
``accumulate`` (gradients/updates) or ``reset`` (models).

An estimate is delivered with the next message to the UE, tagged with the local step before
which it must be merged, and re-delivered if that UE's reply fails, so a UE never silently misses
an aggregate.

Timing of observations: a UE applies the estimates of round r at the start of round r+1 and then
reports its model, so the model "at the end of round r" reaches the server one message later
(``lag = 1``); a final flush message after the last round delivers what is left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp.strategy import FedAvg

from channels import ChannelResult
from strategies.base import (
    Exchange,
    HeldModels,
    LrFn,
    OverlapParams,
    RoundResult,
    ServerSetup,
    UEContext,
    UEOutput,
)
from strategies.common import (
    ARRAYS,
    CONFIG,
    TRANSMITTED,
    Failure,
    sample_ues,
    split_finite,
    split_replies,
    to_record,
)
from strategies.overlap import OverlapState, arrival_step, merge_arrival
from strategies.updates import noise_factor_of, stack_rows, to_update_units, transmit_scaled, ue_transmit

MODES = ("accumulate", "reset")
#: A UE's private records: its model, its blocks in flight and its synchronised model.
MODEL, PENDING, SYNC = "fedsim.model", "fedsim.pending", "fedsim.sync"


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


def load_state(ctx: UEContext) -> UEState:
    """The UE's model and overlap buffers (the common initial model on first use)."""
    if MODEL not in ctx.state:
        w0 = ctx.init()
        return UEState(w0.clone(), OverlapState(pending={}, sync=w0.clone()))
    pending = {int(k): v for k, v in ctx.state[PENDING].items()}
    return UEState(ctx.state[MODEL]["0"], OverlapState(pending=pending, sync=ctx.state[SYNC]["0"]))


def arrivals_of(received: list[torch.Tensor], config: ConfigRecord) -> list[Arrival]:
    """The estimates a message delivers, with their blocks and merge steps."""
    return [Arrival(int(b), int(i), e) for b, i, e in
            zip(config["arrival-blocks"], config["arrival-index"], received, strict=True)]


def merge_estimate(w: torch.Tensor, a: Arrival, *, transmit: str, mode: str, lr: LrFn, steps: int) -> torch.Tensor:
    """``w`` after merging one estimate without overlap: replaced by it (``reset``) or plus the
    update it stands for (``accumulate``; a gradient estimate is scaled by its block's step size)."""
    if mode == "reset":
        return a.estimate.clone()
    eta = lr((a.block - 1) * steps) if transmit == "gradient" else 1.0
    return w + to_update_units(a.estimate, transmit, eta)


def training_start(records: dict[str, dict[str, torch.Tensor]], received: list[torch.Tensor],
                   config: ConfigRecord, init: Callable[[], torch.Tensor], *, transmit: str, mode: str,
                   lr: LrFn) -> torch.Tensor | None:
    """The model a UE's local training starts from this round without overlap (None: the UE is
    not sampled): its private model (``records``, its Flower ``Context.state``) after the
    estimates due before step 0, merged in block order, exactly as :func:`ue_round` merges them.
    Pure: ``records`` and ``received`` are not changed (the batched engine path calls it)."""
    if not bool(config["participate"]):
        return None
    w = records[MODEL]["0"] if MODEL in records else init()
    steps = int(config["steps"])
    for a in sorted((a for a in arrivals_of(received, config) if a.index == 0), key=lambda a: a.block):
        w = merge_estimate(w, a, transmit=transmit, mode=mode, lr=lr, steps=steps)
    return w


def save_state(ctx: UEContext, state: UEState) -> None:
    ctx.state[MODEL] = {"0": state.w}
    ctx.state[PENDING] = {str(k): v for k, v in state.overlap.pending.items()}
    ctx.state[SYNC] = {"0": state.overlap.sync}


def ue_round(state: UEState, arrivals: list[Arrival], *, ctx: UEContext, transmit: str, mode: str,
             overlap: OverlapParams, participate: bool, report: bool
             ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """One round of a UE that keeps its own model. Returns (reported model, transmitted v)."""
    steps, lr = ctx.steps, ctx.lr
    by_index: dict[int, list[Arrival]] = {}
    for a in arrivals:
        by_index.setdefault(a.index if participate else 0, []).append(a)

    def merge_all(index: int) -> None:
        for a in sorted(by_index.pop(index, []), key=lambda a: a.block):
            if overlap.enabled and mode != "reset":
                eta = lr((a.block - 1) * steps) if transmit == "gradient" else 1.0
                delta_hat = to_update_units(a.estimate, transmit, eta)
                state.w = merge_arrival(state.w, state.overlap, a.block, delta_hat, overlap.merge)
            else:
                state.w = merge_estimate(state.w, a, transmit=transmit, mode=mode, lr=lr, steps=steps)

    merge_all(0)
    reported = state.w.clone() if report else None
    if not participate:
        for index in sorted(by_index):
            merge_all(index)
        return reported, None
    if not overlap.enabled:
        return reported, ue_transmit(state.w, ctx.grad, ctx.first_step, steps, lr, transmit, ctx.train)
    delta = torch.zeros_like(state.w)
    g = delta
    for k in range(steps):
        if k:
            merge_all(k)
        s = ctx.first_step + k
        g = ctx.grad(state.w, s)
        step = g * (-lr(s))
        state.w = state.w + step
        delta += step
    block = ctx.first_step // steps + 1
    state.overlap.pending[block] = delta
    return reported, (g if transmit == "gradient" else delta)


def medium_ue_round(ctx: UEContext, received: list[torch.Tensor], config: ConfigRecord, *, transmit: str,
                    mode: str, overlap: OverlapParams) -> UEOutput:
    """The UE rule on the medium: merge due estimates, report the model when asked, train and
    transmit when sampled."""
    state = load_state(ctx)
    arrivals = arrivals_of(received, config)
    reported, v = ue_round(state, arrivals, ctx=ctx, transmit=transmit, mode=mode, overlap=overlap,
                           participate=bool(config["participate"]), report=bool(config["report"]))
    save_state(ctx, state)
    return UEOutput(v, [reported] if reported is not None else [])


# ----------------------------------------------------------------------------- medium side


class Medium(FedAvg):
    """The air between UE-held models: superposition, channel and per-UE delivery, no model.

    Every UE receives a message each round (with its due estimates); a seeded sample of
    ``fraction·N`` UEs (stream "sampling") is asked to compute and transmit."""

    lag = 1

    def __init__(self, setup: ServerSetup, *, fraction: float) -> None:
        n = len(setup.node_of_ue)
        super().__init__(fraction_train=fraction, fraction_evaluate=1.0, min_train_nodes=1, min_available_nodes=n)
        self.setup = setup
        self.weights = setup.weights.to(torch.float64)
        self.ue_of_node = {v: k for k, v in setup.node_of_ue.items()}
        self.like = torch.zeros(setup.init.numel(), dtype=setup.init.dtype, device=setup.device)
        self.inbox: dict[int, list[tuple[int, int, torch.Tensor]]] = {u: [] for u in setup.node_of_ue}
        self._sent: dict[int, list[tuple[int, int, torch.Tensor]]] = {}

    @property
    def num_ues(self) -> int:
        return len(self.setup.node_of_ue)

    def initial_models(self) -> HeldModels | None:
        return None  # the UEs report their initial models with the first exchange

    def configure(self, server_round: int, config: ConfigRecord, *, report: bool, flush: bool) -> Exchange:
        """Every UE gets its due estimates; sampled UEs are asked to compute and transmit."""
        K = self.setup.steps
        start = (server_round - 1) * K
        sampled = set() if flush else set(sample_ues(self.setup.seed, server_round, self.num_ues, self.fraction_train))
        msgs, self._sent = [], {}
        for ue in range(self.num_ues):
            due = [a for a in self.inbox[ue] if flush or a[1] < start + K]
            self._sent[ue] = due
            cfg = ConfigRecord(dict(config))
            cfg.update({
                "server-round": server_round,
                "first-step": start,
                "steps": K,
                "participate": ue in sampled,
                "report": report,
                "arrival-blocks": [a[0] for a in due],
                "arrival-index": [0 if flush else max(a[1] - start, 0) for a in due],
            })
            arrays = to_record(*[a[2] for a in due]) if due else ArrayRecord()
            msgs.append(Message(RecordDict({ARRAYS: arrays, CONFIG: cfg}), self.setup.node_of_ue[ue],
                                MessageType.TRAIN))
        return Exchange(msgs, sampled)

    def aggregate(self, server_round: int, replies: Iterable[Message]) -> RoundResult:
        """Collect reports and transmissions, run the channel, queue every UE's estimate."""
        s = self.setup
        good, bad = split_replies(replies, self.ue_of_node)
        for r in good:  # delivered: remove from the inbox (failed UEs get them again)
            sent = {id(a) for a in self._sent.get(r.ue, [])}
            self.inbox[r.ue] = [a for a in self.inbox[r.ue] if id(a) not in sent]
        # reply vectors: [v] + [reported model] when the UE transmitted, else [reported model]
        tx = [r for r in good if r.metrics.get(TRANSMITTED) == 1.0]
        reports = {r.ue: r.vectors[-1] for r in good
                   if len(r.vectors) == (2 if r.metrics.get(TRANSMITTED) == 1.0 else 1)}
        tx, non_finite = split_finite(tx, first_only=True)
        bad += [Failure(r.ue, s.node_of_ue[r.ue], "non-finite vector") for r in non_finite]
        result = RoundResult(participants=[r.ue for r in tx], failures=bad, row={"delay_steps": s.delay or 0})
        if reports:
            ues = sorted(reports)
            result.models = HeldModels(torch.stack([reports[u] for u in ues]), ues)
        if tx:
            result.channel = self.superpose(server_round, {r.ue: r.vectors[0] for r in tx})
        return result

    def superpose(self, server_round: int, transmitted: dict[int, torch.Tensor]) -> ChannelResult:
        """Run the channel on what the UEs transmitted (``{ue: v_n}``) and queue every UE's estimate."""
        return self.superpose_rows(server_round, *stack_rows(transmitted, self.num_ues, self.like))

    def superpose_rows(self, server_round: int, V: torch.Tensor, available: torch.Tensor) -> ChannelResult:
        """:meth:`superpose` of the rows ``V [N, d]`` (zero where a UE did not transmit) of the UEs
        in the CPU mask ``available``."""
        s = self.setup
        res = transmit_scaled(s.channel, V, self.weights, s.seed, server_round, available,
                              noise_factor_of(s.noise_factor, server_round))
        if res.n_active > 0:
            self.queue(server_round, res)
        return res

    def queue(self, server_round: int, res: ChannelResult) -> None:
        """Queue every UE's estimate for delivery; a UE the channel did not reach (a relay downlink
        below its threshold) misses this round's."""
        step = arrival_step(server_round, self.setup.steps, self.setup.delay or 0)
        rows = res.estimate.unbind(0) if res.estimate.dim() == 2 else [res.estimate] * self.num_ues
        reached = range(self.num_ues) if res.delivered is None else res.delivered.nonzero().flatten().tolist()
        for ue in reached:
            self.inbox[ue].append((server_round, step, rows[ue]))

    def state_dict(self) -> dict[str, Any]:
        """The inbox as ``[[ue, block, step, estimate], ...]`` (order kept)."""
        return {"inbox": [[ue, b, s, t] for ue in sorted(self.inbox) for b, s, t in self.inbox[ue]]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inbox = {u: [] for u in range(self.num_ues)}
        for ue, b, s, t in state["inbox"]:
            self.inbox[int(ue)].append((int(b), int(s), t.to(self.setup.device)))
