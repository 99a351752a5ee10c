"""A round as tensor operations over all UEs at once (``engine.population``).

The server sides normally write one Flower message per UE and read one reply per UE. At
population scale the per-UE messages cost more than the maths, so the population path runs the
same round without them:

- **the medium** (:class:`~strategies.medium.Medium`, server-free strategies) on the stacked UE
  models ``W [N, d]``: every UE that answers merges the estimates due before step 0 into its row
  (in block order, by the rule of :func:`strategies.medium.merge_estimate`) and they leave its
  inbox, while a UE that fails keeps its row and its estimates, delivered again next exchange; the
  rows of the UEs asked to report are the held models; the sampled UEs' transmissions go on the
  air and every UE's estimate is queued;
- **the global-model server** (:class:`~strategies.fedavg.GlobalModelServer`, server-based
  strategies): the sampled UEs that answer compute their transmissions from the global model, the
  server's receiver estimates the aggregate and the model takes the step.

In both, the caller computes the transmissions (local training, the UEs' faults and the
non-finite policy: :data:`Compute`). Only the sequential schedule is served: with
``strategy.overlap`` estimates are merged between local steps, which a round-at-once program
cannot do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from strategies.base import HeldModels, RoundResult
from strategies.common import Failure, sample_ues
from strategies.fedavg import GlobalModelServer
from strategies.medium import Medium
from strategies.updates import apply_estimate

#: (UEs that transmit, their rows [M, d], UEs whose transmission was non-finite), from the UEs
#: asked to transmit and their start models.
Compute = Callable[[list[int], torch.Tensor], tuple[list[int], torch.Tensor, list[int]]]


@dataclass
class PopulationExchange:
    """One exchange of the population path.

    Attributes:
        report: the UEs report their models.  flush: the final exchange (deliver everything,
        nobody transmits).  sampled: the UEs asked to transmit (:func:`sampled_ues`).
        failed: UE -> reason, for the UEs that do not answer this exchange.
        transmit, mode: the strategy's transmitted quantity and merge mode.
    """

    report: bool
    flush: bool
    sampled: list[int]
    failed: dict[int, str]
    transmit: str
    mode: str


def sampled_ues(server: Medium | GlobalModelServer, server_round: int, flush: bool) -> list[int]:
    """The UEs asked to transmit: the same seeded sample as the server side's ``configure``."""
    s = server.setup
    return [] if flush else sample_ues(s.seed, server_round, len(s.node_of_ue), server.fraction_train)


def index_on(rows: list[int], device: torch.device) -> torch.Tensor:
    """Row indices on ``device`` (made on the CPU and moved: some devices build no tensor from a list)."""
    return torch.tensor(rows, dtype=torch.long).to(device)


def deliver(medium: Medium, server_round: int, W: torch.Tensor, ex: PopulationExchange) -> None:
    """Merge every answering UE's due estimates into its row of ``W`` (in place); they leave the
    inbox. Estimates of one UE are merged in block order, one position of the order at a time
    over all UEs."""
    K, mode, transmit, failed, flush = medium.setup.steps, ex.mode, ex.transmit, ex.failed, ex.flush
    start = (server_round - 1) * K
    due: dict[int, list[tuple[int, int, torch.Tensor]]] = {}
    for ue in range(medium.num_ues):
        if ue in failed or not medium.inbox[ue]:
            continue
        mine = [a for a in medium.inbox[ue] if flush or a[1] < start + K]
        if any(max(a[1] - start, 0) != 0 for a in mine) and not flush:
            raise RuntimeError("the population path merges estimates before step 0 only (no overlap)")
        if mine:
            due[ue] = sorted(mine, key=lambda a: a[0])
            kept = {id(a) for a in mine}
            medium.inbox[ue] = [a for a in medium.inbox[ue] if id(a) not in kept]
    depth = max((len(v) for v in due.values()), default=0)
    for j in range(depth):
        ues = [u for u, v in due.items() if len(v) > j]
        rows = index_on(ues, W.device)
        E = torch.stack([due[u][j][2] for u in ues]).to(W.device, W.dtype)
        if mode == "reset":
            W[rows] = E
            continue
        if transmit == "gradient":
            eta = torch.tensor([-medium.setup.lr((due[u][j][0] - 1) * K) for u in ues], dtype=W.dtype).to(W.device)
            E = eta.unsqueeze(1) * E
        W[rows] = W[rows] + E


def population_round(server: Medium | GlobalModelServer, server_round: int, W: torch.Tensor | None,
                     ex: PopulationExchange, compute: Compute) -> RoundResult:
    """One exchange of ``server`` without messages; the result equals its ``aggregate`` of the
    per-UE replies. ``W`` holds the UE models of a medium (changed in place; None for a server)."""
    if isinstance(server, Medium):
        assert W is not None
        return medium_round(server, server_round, W, ex, compute)
    if isinstance(server, GlobalModelServer):
        return global_model_round(server, server_round, ex, compute)
    raise TypeError(f"{type(server).__name__} has no population round; set engine.population = false")


def _failures(server: Medium | GlobalModelServer, failed: dict[int, str], non_finite: list[int]) -> list[Failure]:
    """Failed replies, then non-finite transmissions, each by UE (the per-UE path's order)."""
    nodes = server.setup.node_of_ue
    return ([Failure(u, nodes[u], failed[u]) for u in sorted(failed)]
            + [Failure(u, nodes[u], "non-finite vector") for u in sorted(non_finite)])


def medium_round(medium: Medium, server_round: int, W: torch.Tensor, ex: PopulationExchange,
                 compute: Compute) -> RoundResult:
    """The medium's exchange on the stacked UE models ``W`` (changed in place)."""
    deliver(medium, server_round, W, ex)
    answering = [u for u in range(medium.num_ues) if u not in ex.failed]
    held = None
    if ex.report and answering:
        held = HeldModels(W[index_on(answering, W.device)].clone(), answering)
    train = [u for u in ex.sampled if u not in ex.failed]
    tx, V, non_finite = compute(train, W[index_on(train, W.device)]) if train else ([], W[:0], [])
    result = RoundResult(participants=list(tx), failures=_failures(medium, ex.failed, non_finite),
                         row={"delay_steps": medium.setup.delay or 0}, models=held)
    if tx:
        result.channel = medium.superpose(server_round, dict(zip(tx, V, strict=True)))
    return result


def global_model_round(server: GlobalModelServer, server_round: int, ex: PopulationExchange,
                       compute: Compute) -> RoundResult:
    """The global-model server's round: the sampled UEs that answer transmit from the global
    model, the receiver estimates the aggregate and the model takes the step."""
    s = server.setup
    train = [u for u in ex.sampled if u not in ex.failed]
    start = server.model.unsqueeze(0).expand(len(train), -1)
    tx, V, non_finite = compute(train, start) if train else ([], start, [])
    result = RoundResult(participants=list(tx), failures=_failures(server, ex.failed, non_finite))
    if tx:
        v_hat, result.channel = server.estimate(server_round, dict(zip(tx, V, strict=True)))
        if v_hat is not None:
            server.model = apply_estimate(server.model, v_hat, server.transmit, s.lr((server_round - 1) * s.steps))
    result.models = HeldModels(server.model.unsqueeze(0))
    return result
