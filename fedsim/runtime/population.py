"""The population path (``engine.population = true``): a server-free round as one tensor program.

Where the UE state lives. On the per-UE path every UE keeps its model in its Flower
``Context.state`` and the round is N ClientApp calls. On the population path the round loop keeps
the N UE models as the rows of one tensor ``W [N, d]`` (this module's :class:`Population`) and
runs the medium's round on it (:func:`strategies.population.population_round`): merging, local
training through the workload's vectorised gradient, the UEs' injected faults, the non-finite
policy, the channel. The ClientApps are still discovered, and a resumed run still restores their
records, but they are not called per round. Flower's semantics are kept where they are observable:

- a UE whose round fails (``unavailable``, ``raise``) keeps its model and its estimates, as a
  ClientApp that raised before saving its state would;
- checkpoints hold exactly the records the UEs' ``Context.state`` holds on the per-UE path
  (``fedsim.model``, ``fedsim.pending``, ``fedsim.sync`` per UE), so a checkpoint of either path
  resumes on either path;
- the numbers equal the per-UE path to floating-point tolerance (the vectorised gradient sums in
  another order), which the tests check with faults, partial participation and resume.

The Ray engine never uses this path: there every UE is an actor of its own.
"""

from __future__ import annotations

import traceback
from typing import Any

import torch

from fedsim.runtime import faults
from fedsim.runtime.assemble import Experiment
from fedsim.runtime.checkpoint import TensorBag
from fedsim.runtime.transport import Transport
from strategies import RoundResult
from strategies.medium import MODEL, PENDING, SYNC, Medium
from strategies.population import PopulationExchange, population_round, sampled_ues


def injected_reason(kind: str, ue: int, server_round: int) -> str:
    """The error text a ClientApp's reply carries for an injected ``unavailable``/``raise``."""
    exc = faults.InjectedFault(f"injected fault: UE {ue} unavailable in round {server_round}" if kind == "unavailable"
                               else f"injected fault: UE {ue} raised mid-training in round {server_round}")
    return "".join(traceback.format_exception_only(exc))


class Population:
    """The UE models of a server-free run as the rows of ``W [N, d]`` (see the module docstring)."""

    def __init__(self, experiment: Experiment, server: Medium) -> None:
        self.experiment, self.server = experiment, server
        wl = experiment.workload
        self.init = wl.init_params().to(wl.device)
        self.W = self.init.repeat(wl.num_ues, 1)
        self.touched = torch.zeros(wl.num_ues, dtype=torch.bool)  # UEs that hold records (answered once)

    # ------------------------------------------------------------------ one exchange
    def exchange(self, server_round: int, *, report: bool, flush: bool,
                 transport: Transport) -> tuple[RoundResult, dict[int, str]]:
        """The exchange's result (as :meth:`Medium.aggregate` gives it) and its fault plan."""
        strategy = self.experiment.strategy
        transmitting = set(sampled_ues(self.server, server_round, flush))
        plan = {} if flush else transport.plan(server_round, transmitting, set(range(len(self.touched))))
        failed = {u: injected_reason(k, u, server_round) for u, k in plan.items() if k in ("unavailable", "raise")}
        ex = PopulationExchange(report=report, flush=flush, failed=failed, transmit=strategy.transmit,
                                mode=strategy.params.mode)

        def compute(ues: list[int], starts: torch.Tensor) -> tuple[list[int], torch.Tensor, list[int]]:
            return self._transmissions(server_round, ues, starts, plan)

        result = population_round(self.server, server_round, self.W, ex, compute)
        answered = torch.ones(len(self.touched), dtype=torch.bool)
        answered[list(failed)] = False
        self.touched |= answered
        return result, plan

    def _transmissions(self, server_round: int, ues: list[int], starts: torch.Tensor,
                       plan: dict[int, str]) -> tuple[list[int], torch.Tensor, list[int]]:
        """What ``ues`` put on the air from ``starts``: (transmitting UEs, rows, non-finite UEs),
        after the stragglers' and NaN faults and ``faults.policy``."""
        exp = self.experiment
        first, K = (server_round - 1) * exp.steps, exp.steps
        with torch.no_grad():
            if exp.strategy.transmit == "gradient":
                V = exp.workload.stochastic_grad_many(starts, ues, first)
            else:
                V = exp.workload.local_sgd_many(starts, ues, first, K, exp.ue.lr)
                if exp.strategy.transmit == "update":
                    V = V - starts
        keep = [i for i, u in enumerate(ues) if plan.get(u) != "straggler"]  # computed, missed the air
        ues, V = [ues[i] for i in keep], V[keep]
        nan = [i for i, u in enumerate(ues) if plan.get(u) == "nan"]
        if nan:
            V[nan] = float("nan")
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
        """The UEs' records as a per-UE checkpoint holds them (``messaging.snapshot_ue_states``)."""
        rows: list[list[Any]] = []
        sync = bag.put(self.init) if bool(self.touched.any()) else None
        for ue in self.touched.nonzero().flatten().tolist():
            rows += [[ue, MODEL, "0", bag.put(self.W[ue])], [ue, PENDING, "", None], [ue, SYNC, "0", sync]]
        return rows

    def restore(self, rows: list[list[Any]], bag: TensorBag) -> None:
        """Load ``W`` from a checkpoint's UE records (a UE without a model starts from the initial one)."""
        self.W = self.init.repeat(len(self.touched), 1)
        self.touched[:] = False
        for ue, name, key, tname in rows:
            if name == MODEL and key == "0":
                self.W[int(ue)] = bag.get(tname).to(self.W.device, self.W.dtype)
                self.touched[int(ue)] = True
            elif name == PENDING and key and tname is not None:
                raise ValueError("the checkpoint holds overlap blocks in flight; resume it on the per-UE path")
