"""A round as tensor operations over all UEs at once (``engine.population``).

The server sides normally write one Flower message per UE and read one reply per UE. At
population scale the per-UE messages cost more than the maths, so the population path runs the
same round without them:

- **the medium** (:class:`~strategies.medium.Medium`, server-free strategies and every overlapped
  schedule) on the UE-held state (:class:`UEModels`: the stacked models ``W [N, d]``, and with
  ``strategy.overlap`` the blocks in flight and the synchronised models): every UE that answers
  merges the estimates due before step 0 into its row (in block order, by the rule of
  :func:`strategies.medium.ue_round`) and they leave its inbox, while a UE that fails keeps its
  row and its estimates, delivered again next exchange; the rows of the UEs asked to report are the
  held models; the sampled UEs train (with ``strategy.overlap``, step by step on their rows, the
  estimates due before step k merged before it), their transmissions go on the air and every UE's
  estimate is queued;
- **the global-model server** (:class:`~strategies.fedavg.GlobalModelServer`, server-based
  strategies): the sampled UEs that answer compute their transmissions from the global model, the
  server's receiver estimates the aggregate and the model takes the step.

In both, the caller supplies the workload's vectorised training and acts out the UEs' faults and
the non-finite policy (:data:`Compute`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from strategies.base import HeldModels, OverlapParams, RoundResult
from strategies.common import Failure, sample_ues
from strategies.fedavg import GlobalModelServer
from strategies.medium import Arrival, Medium, merge_estimate
from strategies.updates import apply_estimate, to_update_units, ue_transmit_many


@dataclass
class Training:
    """The workload's vectorised local training for the UEs of one :data:`Compute` call:
    ``grad(ws, s)`` every row's stochastic gradient at step ``s``, ``train(ws, first, k)`` every
    row's model after ``k`` local steps from step ``first``."""

    grad: Callable[[torch.Tensor, int], torch.Tensor]
    train: Callable[[torch.Tensor, int, int], torch.Tensor]


#: (UEs asked to transmit, produce) -> (UEs that transmit, their rows [M, d], UEs whose
#: transmission was non-finite); ``produce(training)`` gives every asked UE's transmission.
Compute = Callable[[list[int], Callable[[Training], torch.Tensor]], tuple[list[int], torch.Tensor, list[int]]]


@dataclass
class PopulationExchange:
    """One exchange of the population path.

    Attributes:
        report: the UEs report their models.  flush: the final exchange (deliver everything,
        nobody transmits).  sampled: the UEs asked to transmit (:func:`sampled_ues`).
        failed: UE -> reason, for the UEs that do not answer this exchange.
        transmit, mode, overlap: the strategy's transmitted quantity, merge mode and schedule.
    """

    report: bool
    flush: bool
    sampled: list[int]
    failed: dict[int, str]
    transmit: str
    mode: str
    overlap: OverlapParams = field(default_factory=OverlapParams)


@dataclass
class UEModels:
    """What the UEs of a medium hold, stacked: their models ``W [N, d]``; with ``strategy.overlap``
    every block still in flight as the update its UEs took (``pending[block] = (rows [N, d], which
    UEs hold one [N])``, zero rows elsewhere) and, for the ``replace`` merge, the synchronised
    models ``sync [N, d]`` (None: every UE's is the initial model)."""

    W: torch.Tensor
    pending: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    sync: torch.Tensor | None = None


#: One UE's due estimates: (local step before which it is merged, block, estimate).
Due = dict[int, list[tuple[int, int, torch.Tensor]]]


def sampled_ues(server: Medium | GlobalModelServer, server_round: int, flush: bool) -> list[int]:
    """The UEs asked to transmit: the same seeded sample as the server side's ``configure``."""
    s = server.setup
    return [] if flush else sample_ues(s.seed, server_round, len(s.node_of_ue), server.fraction_train)


def index_on(rows: list[int], device: torch.device) -> torch.Tensor:
    """Row indices on ``device`` (made on the CPU and moved: some devices build no tensor from a list)."""
    return torch.tensor(rows, dtype=torch.long).to(device)


def take_due(medium: Medium, server_round: int, ex: PopulationExchange) -> Due:
    """Every answering UE's estimates due this exchange, taken out of its inbox, with the local
    step before which each is merged (0 for a UE that does not train, and at the flush), exactly as
    the medium's ``configure`` tags them."""
    K = medium.setup.steps
    start, training = (server_round - 1) * K, set(ex.sampled)
    due: Due = {}
    for ue in range(medium.num_ues):
        if ue in ex.failed or not medium.inbox[ue]:
            continue
        mine = [a for a in medium.inbox[ue] if ex.flush or a[1] < start + K]
        if mine:
            late = ue in training and not ex.flush
            due[ue] = [(max(a[1] - start, 0) if late else 0, a[0], a[2]) for a in mine]
            kept = {id(a) for a in mine}
            medium.inbox[ue] = [a for a in medium.inbox[ue] if id(a) not in kept]
    return due


def merge_due(medium: Medium, held: UEModels, due: Due, index: int, ex: PopulationExchange) -> None:
    """Merge the estimates due before local step ``index`` into the UEs' rows (in place): one UE's
    in block order, one position of that order at a time over all UEs, by the rule of
    :func:`strategies.medium.ue_round`."""
    now = {u: sorted((a for a in v if a[0] == index), key=lambda a: a[1]) for u, v in due.items()}
    for j in range(max((len(v) for v in now.values()), default=0)):
        at_j = [(u, v[j][1], v[j][2]) for u, v in now.items() if len(v) > j]
        for block in sorted({b for _, b, _ in at_j}):
            ues = [u for u, b, _ in at_j if b == block]
            E = torch.stack([e for _, b, e in at_j if b == block]).to(held.W.device, held.W.dtype)
            _merge_block(medium, held, block, index_on(ues, held.W.device), E, ex)


def _merge_block(medium: Medium, held: UEModels, block: int, rows: torch.Tensor, E: torch.Tensor,
                 ex: PopulationExchange) -> None:
    """Merge the estimates ``E`` of one block into ``rows`` of ``held``: the per-UE rules
    (:func:`strategies.medium.merge_estimate`, and with overlap the swap and replace of
    :func:`strategies.overlap.merge_arrival`) on the stacked rows."""
    W, s = held.W, medium.setup
    if not ex.overlap.enabled or ex.mode == "reset":
        W[rows] = merge_estimate(W[rows], Arrival(block, 0, E), transmit=ex.transmit, mode=ex.mode, lr=s.lr,
                                 steps=s.steps)
        return
    eta = s.lr((block - 1) * s.steps) if ex.transmit == "gradient" else 1.0
    delta_hat = to_update_units(E, ex.transmit, eta)
    if ex.overlap.merge == "swap":  # own stale block out (a zero row where the UE has none), aggregate in
        own = held.pending.get(block)
        base = W[rows] if own is None else W[rows] - own[0][rows]
        W[rows] = base + delta_hat
        _pop_pending(held, block, rows)
    else:  # replace: the synchronised model takes the aggregate, the UE model becomes it
        if held.sync is None:
            raise ValueError("the replace merge needs the synchronised models (UEModels.sync)")
        held.sync[rows] = held.sync[rows] + delta_hat
        W[rows] = held.sync[rows]
        _pop_pending(held, block, rows)


def _pop_pending(held: UEModels, block: int, rows: torch.Tensor) -> None:
    """The UEs of ``rows`` no longer hold ``block`` in flight."""
    if block in held.pending:
        updates, holds = held.pending[block]
        updates[rows] = 0
        holds[rows.cpu()] = False
        if not bool(holds.any()):
            del held.pending[block]


def overlapped_training(medium: Medium, server_round: int, held: UEModels, ues: list[int], training: Training,
                        merge_before: Callable[[int], None], transmit: str) -> torch.Tensor:
    """The K local steps of ``ues`` on their rows of ``held`` with the estimates due before step
    k merged before it (``merge_before(k)``); the block's update is kept in flight. Returns the
    transmissions: the last gradient, or the block's update."""
    s0, K, lr = (server_round - 1) * medium.setup.steps, medium.setup.steps, medium.setup.lr
    rows, everyone = index_on(ues, held.W.device), ues == list(range(medium.num_ues))
    delta = torch.zeros(len(ues), held.W.shape[1], dtype=held.W.dtype, device=held.W.device)
    g = delta
    for k in range(K):
        if k:
            merge_before(k)
        w = held.W if everyone else held.W[rows]
        g = training.grad(w, s0 + k)
        step = g * (-lr(s0 + k))
        if everyone:
            held.W = w + step
        else:
            held.W[rows] = w + step
        delta += step
    updates = delta if everyone else torch.zeros_like(held.W).index_copy_(0, rows, delta)
    holds = torch.zeros(medium.num_ues, dtype=torch.bool)
    holds[ues] = True
    held.pending[server_round] = (updates, holds)
    return g if transmit == "gradient" else delta.clone()  # the caller may write into what is sent


def population_round(server: Medium | GlobalModelServer, server_round: int, held: UEModels | None,
                     ex: PopulationExchange, compute: Compute) -> RoundResult:
    """One exchange of ``server`` without messages; the result equals its ``aggregate`` of the
    per-UE replies. ``held`` is what the UEs of a medium hold (changed in place; None for a server)."""
    if isinstance(server, Medium):
        assert held is not None
        return medium_round(server, server_round, held, ex, compute)
    if isinstance(server, GlobalModelServer):
        return global_model_round(server, server_round, ex, compute)
    raise TypeError(f"{type(server).__name__} has no population round; set engine.population = false")


def _failures(server: Medium | GlobalModelServer, failed: dict[int, str], non_finite: list[int]) -> list[Failure]:
    """Failed replies, then non-finite transmissions, each by UE (the per-UE path's order)."""
    nodes = server.setup.node_of_ue
    return ([Failure(u, nodes[u], failed[u]) for u in sorted(failed)]
            + [Failure(u, nodes[u], "non-finite vector") for u in sorted(non_finite)])


def medium_round(medium: Medium, server_round: int, held: UEModels, ex: PopulationExchange,
                 compute: Compute) -> RoundResult:
    """The medium's exchange on the UE-held state ``held`` (changed in place)."""
    due = take_due(medium, server_round, ex)
    merge_due(medium, held, due, 0, ex)
    answering = [u for u in range(medium.num_ues) if u not in ex.failed]
    reported = None
    if ex.report and answering:
        reported = HeldModels(held.W[index_on(answering, held.W.device)].clone(), answering)
    train = [u for u in ex.sampled if u not in ex.failed]
    s = medium.setup

    def produce(training: Training) -> torch.Tensor:
        if ex.overlap.enabled:
            return overlapped_training(medium, server_round, held, train, training,
                                       lambda k: merge_due(medium, held, due, k, ex), ex.transmit)
        starts = held.W[index_on(train, held.W.device)]
        return ue_transmit_many(starts, training.grad, training.train, (server_round - 1) * s.steps, s.steps,
                                ex.transmit)

    tx, V, non_finite = compute(train, produce) if train else ([], held.W[:0], [])
    result = RoundResult(participants=list(tx), failures=_failures(medium, ex.failed, non_finite),
                         row={"delay_steps": s.delay or 0}, models=reported)
    if tx:
        result.channel = medium.superpose_rows(server_round, *_on_rows(medium, tx, V))
    return result


def _on_rows(medium: Medium, ues: list[int], V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The transmissions ``V`` of ``ues`` as the medium's ``[N, d]`` matrix (zero rows elsewhere)
    and the CPU mask of transmitting UEs; ``V`` itself when every UE transmitted in order."""
    available = torch.zeros(medium.num_ues, dtype=torch.bool)
    available[ues] = True
    like = medium.like
    V = V.to(like.device, like.dtype)
    if ues == list(range(medium.num_ues)):
        return V, available
    return torch.zeros(medium.num_ues, like.numel(), dtype=like.dtype, device=like.device).index_copy_(
        0, index_on(ues, like.device), V), available


def global_model_round(server: GlobalModelServer, server_round: int, ex: PopulationExchange,
                       compute: Compute) -> RoundResult:
    """The global-model server's round: the sampled UEs that answer transmit from the global
    model, the receiver estimates the aggregate and the model takes the step."""
    s = server.setup
    train = [u for u in ex.sampled if u not in ex.failed]
    start = server.model.unsqueeze(0).expand(len(train), -1)

    def produce(training: Training) -> torch.Tensor:
        return ue_transmit_many(start, training.grad, training.train, (server_round - 1) * s.steps, s.steps,
                                server.transmit)

    tx, V, non_finite = compute(train, produce) if train else ([], start, [])
    result = RoundResult(participants=list(tx), failures=_failures(server, ex.failed, non_finite))
    if tx:
        v_hat, result.channel = server.estimate(server_round, dict(zip(tx, V, strict=True)))
        if v_hat is not None:
            server.model = apply_estimate(server.model, v_hat, server.transmit, s.lr((server_round - 1) * s.steps))
    result.models = HeldModels(server.model.unsqueeze(0))
    return result
