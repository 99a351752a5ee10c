"""The population path (``engine.population``): a round as one tensor program, no ClientApp calls.

Where the UE state lives. On the per-UE path every UE keeps its model in its Flower
``Context.state`` and the round is one ClientApp call per UE. On the population path the round
loop runs the server side's round directly (:func:`strategies.population.population_round`):
local training through the workload's vectorised gradient, the UEs' injected faults, the
non-finite policy, the channel. For a server-free strategy the N UE models are the rows of one
tensor ``W [N, d]`` kept here (:class:`Population`); a server-based strategy's UEs keep nothing
between rounds. The ClientApps are still discovered at the start, but not called per round.
Flower's semantics are kept where they are observable:

- a UE whose round fails (``unavailable``, ``raise``; a straggler under a server-based strategy)
  keeps its model and its estimates, as a ClientApp that raised before saving its state would;
- checkpoints hold exactly the records the UEs' ``Context.state`` holds on the per-UE path
  (``fedsim.model``, ``fedsim.pending``, ``fedsim.sync`` per UE that has answered once), so a
  checkpoint of either path resumes on either path;
- the numbers equal the per-UE path to floating-point tolerance (the vectorised gradient sums in
  another order), which the tests check with faults, partial participation and resume.

The Ray engine never uses this path: there every UE is an actor of its own.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import torch

from fedsim.errors import FedsimError
from fedsim.runtime import faults
from fedsim.runtime.assemble import Experiment
from fedsim.runtime.checkpoint import TensorBag
from fedsim.runtime.transport import Transport
from strategies import RoundResult, ServerSide
from strategies.fedavg import GlobalModelServer
from strategies.medium import MODEL, PENDING, SYNC, Medium
from strategies.population import (
    PopulationExchange,
    Training,
    UEModels,
    index_on,
    population_round,
    sampled_ues,
)


class Population:
    """The population path of one run (see the module docstring): for a server-free strategy the
    UE models as the rows of ``W [N, d]``."""

    @classmethod
    def of(cls, experiment: Experiment, server: ServerSide) -> Population | None:
        """The run's population path, or None for the per-UE path: a server side of its own runs
        per UE under ``engine.population = "auto"``, and is an error under ``true``."""
        if not experiment.population:
            return None
        if isinstance(server, Medium | GlobalModelServer):
            return cls(experiment, server)
        if experiment.config.engine.population is True:
            raise FedsimError(f"strategy {experiment.config.strategy.name}: its server side "
                              f"{type(server).__name__} has no population round; set engine.population = false")
        return None

    def __init__(self, experiment: Experiment, server: Medium | GlobalModelServer) -> None:
        self.experiment, self.server = experiment, server
        wl = experiment.workload
        self.init = wl.init_params().to(wl.device)
        self.holds = isinstance(server, Medium)
        self.overlap = experiment.strategy.params.overlap
        self.held = self._fresh(wl.num_ues) if self.holds else None
        self.touched = torch.zeros(wl.num_ues, dtype=torch.bool)  # UEs that hold records (answered once)

    def _fresh(self, n: int) -> UEModels:
        """Every UE at the initial model (and, for the ``replace`` merge, its synchronised model)."""
        replace = self.overlap.enabled and self.overlap.merge == "replace"
        return UEModels(self.init.repeat(n, 1), sync=self.init.repeat(n, 1) if replace else None)

    @property
    def W(self) -> torch.Tensor | None:
        """The UE models ``[N, d]`` (None under a server-based strategy)."""
        return self.held.W if self.held is not None else None

    # ------------------------------------------------------------------ one exchange
    def exchange(self, server_round: int, *, report: bool, flush: bool,
                 transport: Transport) -> tuple[RoundResult, dict[int, str]]:
        """The exchange's result (as the server side's ``aggregate`` gives it) and its fault plan."""
        exp, n = self.experiment, len(self.touched)
        if torch.get_num_threads() != exp.config.engine.threads:  # a ClientApp (discovery) may have set one
            torch.set_num_threads(exp.config.engine.threads)
        sampled = sampled_ues(self.server, server_round, flush)
        receiving = set(range(n)) if self.holds else set(sampled)  # the medium writes to every UE
        plan = {} if flush else transport.plan(server_round, set(sampled), receiving)
        deadline = exp.config.faults.deadline
        failed = {u: "".join(traceback.format_exception_only(faults.injected_error(k, u, server_round, deadline)))
                  for u, k in plan.items() if k in ("unavailable", "raise") or (k == "straggler" and not self.holds)}
        ex = PopulationExchange(report=report, flush=flush, sampled=sampled, failed=failed,
                                transmit=exp.strategy.transmit, mode=getattr(exp.strategy.params, "mode", "accumulate"),
                                overlap=self.overlap)

        def compute(ues: list[int], produce: Callable[[Training], torch.Tensor]
                    ) -> tuple[list[int], torch.Tensor, list[int]]:
            return self._transmissions(ues, produce, plan)

        result = population_round(self.server, server_round, self.held, ex, compute)
        answered = torch.ones(n, dtype=torch.bool)
        answered[list(failed)] = False
        self.touched |= answered
        return result, plan

    def _transmissions(self, ues: list[int], produce: Callable[[Training], torch.Tensor],
                       plan: dict[int, str]) -> tuple[list[int], torch.Tensor, list[int]]:
        """What ``ues`` put on the air (``produce`` with the workload's training of ``ues``):
        (transmitting UEs, rows, non-finite UEs), after the stragglers' and NaN faults and
        ``faults.policy``."""
        exp, wl = self.experiment, self.experiment.workload
        training = Training(grad=lambda ws, s: wl.stochastic_grad_many(ws, ues, s),
                            train=lambda ws, first, k: wl.local_sgd_many(ws, ues, first, k, exp.ue.lr))
        with torch.no_grad():
            V = produce(training)
        keep = [i for i, u in enumerate(ues) if plan.get(u) != "straggler"]  # computed, missed the air
        ues, V = [ues[i] for i in keep], V[index_on(keep, V.device)]
        nan = [i for i, u in enumerate(ues) if plan.get(u) == "nan"]
        if nan:
            V[index_on(nan, V.device)] = float("nan")
        finite = torch.isfinite(V).all(1) if len(ues) else torch.ones(0, dtype=torch.bool)
        if bool(finite.all()):
            return ues, V, []
        policy = exp.config.faults.policy
        if policy == "zero":
            return ues, torch.nan_to_num(V, nan=0.0, posinf=0.0, neginf=0.0), []
        bad = [u for u, ok in zip(ues, finite.tolist(), strict=True) if not ok]
        if policy == "skip-round":
            return [], V[:0], bad
        good = finite.nonzero().flatten()
        return [ues[i] for i in good.tolist()], V[good], bad

    # ------------------------------------------------------------------ checkpoints
    def ue_state_rows(self, bag: TensorBag) -> list[list[Any]]:
        """The UEs' records as a per-UE checkpoint holds them (``messaging.snapshot_ue_states``):
        the model, the blocks in flight (an empty record when none) and the synchronised model."""
        rows: list[list[Any]] = []
        held = self.held
        if held is None:
            return rows
        init = bag.put(self.init) if bool(self.touched.any()) and held.sync is None else None
        for ue in self.touched.nonzero().flatten().tolist():
            rows.append([ue, MODEL, "0", bag.put(held.W[ue])])
            blocks = [b for b, (_, holds) in held.pending.items() if bool(holds[ue])]
            in_flight = [[ue, PENDING, str(b), bag.put(held.pending[b][0][ue])] for b in blocks]
            rows += in_flight or [[ue, PENDING, "", None]]
            rows.append([ue, SYNC, "0", bag.put(held.sync[ue]) if held.sync is not None else init])
        return rows

    def restore(self, rows: list[list[Any]], bag: TensorBag) -> None:
        """Load the UE-held state from a checkpoint's UE records (a UE without records starts from
        the initial model)."""
        n = len(self.touched)
        held = self.held = self._fresh(n)
        self.touched[:] = False
        for ue, name, key, tname in rows:
            ue = int(ue)
            if tname is None:
                continue
            t = bag.get(tname).to(held.W.device, held.W.dtype)
            if name == MODEL and key == "0":
                held.W[ue] = t
                self.touched[ue] = True
            elif name == PENDING:
                if int(key) not in held.pending:  # one [N, d] block per block in flight, not per record
                    held.pending[int(key)] = (torch.zeros_like(held.W), torch.zeros(n, dtype=torch.bool))
                updates, holds = held.pending[int(key)]
                updates[ue], holds[ue] = t, True
            elif name == SYNC and held.sync is not None:
                held.sync[ue] = t
