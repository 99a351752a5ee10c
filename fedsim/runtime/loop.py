"""The one round loop, for server-based and server-free strategies alike.

Each exchange: the strategy's server side writes the messages (:meth:`configure`), the transport
sends them (fault plan, retries, non-finite policy), the server side turns the replies into a
:class:`~strategies.RoundResult`, and the loop builds the round's metrics row: what happened
(participants, failures, faults, channel), the simulated clock, and the metrics of the models
someone holds. Hooks then enrich, record, checkpoint or stop (see :mod:`fedsim.runtime.hooks`).

A strategy whose UEs keep their own models reports them one exchange later (``lag = 1``): the row
of round r is completed by exchange r + 1, and a final flush exchange delivers the last estimates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from flwr.app import ConfigRecord
from flwr.serverapp import Grid

from channels import ChannelResult
from fedsim.runtime import checkpoint as ck
from fedsim.runtime.assemble import Experiment
from fedsim.runtime.evaluation import evaluate_held
from fedsim.runtime.messaging import discover_nodes, restore_ue_states, snapshot_ue_states
from fedsim.runtime.population import Population
from fedsim.runtime.transport import Transport, channel_fields, failure_fields, fault_fields
from strategies import HeldModels, RoundResult, ServerSide


@dataclass
class RoundRecord:
    """One round, as the hooks see it.

    Attributes:
        round: the round the row describes.  exchange: the exchange that completed it.
        row: the metrics row (hooks may add to it).  held: the models reported for the round
        (None: not reported).  evaluated: ``row`` holds their metrics.  channel: the round's
        channel result.  last: the run's last round.  status: set by a hook that stops the run.
    """

    round: int
    exchange: int
    row: dict[str, Any]
    held: HeldModels | None
    evaluated: bool
    channel: ChannelResult | None
    last: bool
    status: str | None = None


class Hook(Protocol):
    """A cross-cutting concern of the round loop (see :mod:`fedsim.runtime.hooks`)."""

    name: str

    def on_start(self, loop: RoundLoop) -> None: ...

    def after_round(self, loop: RoundLoop, record: RoundRecord) -> str | None: ...

    def on_end(self, loop: RoundLoop, status: str) -> None: ...

    def state_dict(self, bag: ck.TensorBag) -> dict[str, Any] | None: ...

    def load_state_dict(self, state: dict[str, Any], bag: ck.TensorBag) -> None: ...


@dataclass
class Outcome:
    """How the loop ended: ``status`` ("completed", "diverged", "interrupted"), the last round
    logged, and the last models reported (the global model or the UE-held ones)."""

    status: str
    rounds: int
    final: HeldModels | None


def _finite(models: torch.Tensor) -> bool:
    return bool(torch.isfinite(models).all())


class RoundLoop:
    """Runs the rounds of one assembled experiment on a Grid.

    Args:
        experiment: the assembled experiment.  hooks: called in order after every round.
        resume: a checkpoint to continue from (None: a fresh run).
    """

    def __init__(self, experiment: Experiment, hooks: list[Hook], resume: ck.Checkpoint | None = None) -> None:
        self.experiment, self.hooks, self.resume = experiment, hooks, resume
        self.final: HeldModels | None = None

    # ------------------------------------------------------------------ the run
    def run(self, grid: Grid) -> Outcome:
        exp, cfg = self.experiment, self.experiment.config
        if hasattr(grid, "pull_interval"):
            grid.pull_interval = 0.005  # Flower polls every 0.1 s by default: a floor on round time
        self.grid = grid
        self.node_of_ue = discover_nodes(grid, exp.num_ues)
        self.server: ServerSide = exp.strategy.server(exp.server_setup(self.node_of_ue))
        self.transport = Transport(grid, cfg, self.node_of_ue, exp.ue.tau_cp, exp.steps)
        self.population = Population.of(exp, self.server)
        self.clock = exp.clock()
        # lag 1: the row of the last exchange, completed by the next one (round 0 by the first)
        self.pending: tuple[dict[str, Any], ChannelResult | None] | None = (
            ({"round": 0, "sim_time": 0.0}, None) if self.server.lag else None)
        first = self._restore(self.resume) if self.resume is not None else 1
        for hook in self.hooks:
            hook.on_start(self)
        outcome = self._rounds(first)
        for hook in self.hooks:
            hook.on_end(self, outcome.status)
        return outcome

    def _rounds(self, first: int) -> Outcome:
        R, lag = self.experiment.config.rounds, self.server.lag
        if lag == 0 and self.resume is None:
            initial = self.server.initial_models()
            status = self._close(RoundRecord(0, 0, {"round": 0, "sim_time": 0.0}, initial, False, None, False))
            if status:
                return Outcome(status, 0, self.final)
        for e in range(first, R + 1 + lag):
            record = self._exchange(e)
            if record.status:
                return Outcome(record.status, record.round, self.final)
        return Outcome("completed", R, self.final)

    def _exchange(self, e: int) -> RoundRecord:
        cfg, exp = self.experiment.config, self.experiment
        lag = self.server.lag
        flush, k = e > cfg.rounds, e - lag
        due = k % cfg.eval_every == 0 or k == cfg.rounds
        if self.population is not None:  # engine.population: the round as one tensor program
            result, plan = self.population.exchange(e, report=due, flush=flush, transport=self.transport)
            retry_row: dict[str, Any] = {}
        else:
            config = ConfigRecord({"exp": exp.config_json, "first-step": (e - 1) * exp.steps, "steps": exp.steps})
            exchange = self.server.configure(e, config, report=due, flush=flush)
            receiving = {self.transport.ue_of_node[m.metadata.dst_node_id] for m in exchange.messages}
            plan = {} if flush else self.transport.plan(e, exchange.transmitting, receiving)
            replies, retry_row = self.transport.send(exchange.messages)
            result = self.server.aggregate(e, replies)
        current = None if flush else (self._stats_row(e, result, plan, retry_row), result.channel)
        if lag:
            (row, channel), self.pending = self.pending, current
        else:
            row, channel = current
        if flush:
            row["sim_time"] = self.clock.drain()
            if result.failures:
                row["flush_failures"] = len(result.failures)
            row.update({f"flush_{key}": v for key, v in retry_row.items()})
        record = RoundRecord(k, e, row, result.models, False, channel, k == cfg.rounds)
        self._close(record, due)
        return record

    def _close(self, record: RoundRecord, due: bool = True) -> str | None:
        """Evaluate the round's models, then run the hooks; the first stop status wins."""
        cfg, held = self.experiment.config, record.held
        record.evaluated = held is not None and (due or not _finite(held.models))
        if record.evaluated:
            record.row.update(evaluate_held(self.experiment.workload, held, sample=cfg.eval_ue_sample,
                                            seed=cfg.seed, round=record.round))
        for hook in self.hooks:
            status = hook.after_round(self, record)
            if status and record.status is None:
                record.status = status
        if record.status is None and held is not None:
            self.final = held
        return record.status

    def _stats_row(self, e: int, result: RoundResult, plan: dict[int, str], retry_row: dict[str, Any]) -> dict:
        return {"round": e, "sim_time": self.clock.advance(result.participants, self.transport.waited(plan)),
                "participants": len(result.participants), **result.row, **failure_fields(result.failures),
                **fault_fields(plan), **retry_row, **channel_fields(result.channel)}

    # ------------------------------------------------------------------ checkpoints
    @property
    def needs_ue_states(self) -> bool:
        """UEs keep state a checkpoint must hold (their models, or a workload's UE-local state)."""
        return self.experiment.strategy.holds_ue_models or self.experiment.workload.custom_local_train

    def last_exchange(self) -> int:
        return self.experiment.config.rounds + self.server.lag

    def checkpoint_state(self, record: RoundRecord, bag: ck.TensorBag) -> dict[str, Any] | None:
        """The loop's resumable state after ``record``'s exchange (None: a UE did not answer)."""
        meta: dict[str, Any] = {}
        if self.needs_ue_states:
            rows = (self.population.ue_state_rows(bag) if self.population is not None
                    else snapshot_ue_states(self.grid, self.node_of_ue, bag))
            if rows is None:
                return None
            meta["ue_states"] = rows
        row, channel = self.pending if self.pending is not None else (None, None)
        meta.update(next_round=record.exchange + 1, clock=self.clock.now, pending=row,
                    pending_channel=ck.channel_to(channel, bag), strategy=ck.pack(self.server.state_dict(), bag),
                    hooks={h.name: s for h in self.hooks if (s := h.state_dict(bag)) is not None})
        return meta

    def _restore(self, checkpoint: ck.Checkpoint) -> int:
        meta, bag = checkpoint.meta, ck.TensorBag(checkpoint.tensors)
        if meta.get("ue_states"):
            if self.population is not None:
                self.population.restore(meta["ue_states"], bag)
            else:
                restore_ue_states(self.grid, self.node_of_ue, meta["ue_states"], bag)
        self.server.load_state_dict(ck.unpack(meta["strategy"], bag))
        self.clock.now = float(meta["clock"])
        if meta["pending"] is not None:
            self.pending = (dict(meta["pending"]), ck.channel_from(meta["pending_channel"], bag))
        for hook in self.hooks:
            if hook.name in meta["hooks"]:
                hook.load_state_dict(meta["hooks"][hook.name], bag)
        return int(meta["next_round"])
