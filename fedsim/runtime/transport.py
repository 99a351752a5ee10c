"""One exchange's messages on the way out and back: the round's fault plan, sending with retries,
the non-finite policy, and the row fields that say what happened."""

from __future__ import annotations

from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

from fedsim.config import ExperimentConfig
from fedsim.runtime import faults
from fedsim.runtime.messaging import send
from strategies.common import Failure


class Transport:
    """Faults, retries and screening for the exchanges of one run.

    Args:
        grid: the engine's Grid.  cfg: the config.  node_of_ue: partition id -> node id.
        tau_cp: per-UE compute time of one step ``[N]`` (for stragglers).  steps: local steps per round.
    """

    def __init__(self, grid: Grid, cfg: ExperimentConfig, node_of_ue: dict[int, int], tau_cp: Any, steps: int):
        self.grid, self.cfg, self.tau_cp, self.steps = grid, cfg, tau_cp, steps
        self.num_ues = len(node_of_ue)
        self.ue_of_node = {v: k for k, v in node_of_ue.items()}

    def plan(self, server_round: int, transmitting: set[int], receiving: set[int]) -> dict[int, str]:
        """This round's faults among the UEs that get a message (``receiving``); NaN and
        straggler faults only matter for UEs that transmit."""
        out = {}
        for ue, kind in faults.plan(self.cfg, server_round, self.num_ues, self.tau_cp, self.steps).items():
            if ue in receiving and (kind in ("unavailable", "raise") or ue in transmitting):
                out[ue] = kind
        return out

    def waited(self, plan: dict[int, str]) -> float | None:
        """The deadline the round waited out, when a straggler missed it."""
        return self.cfg.faults.deadline if "straggler" in plan.values() else None

    def send(self, msgs: list[Message]) -> tuple[list[Message], dict[str, Any]]:
        """The replies (screened by ``faults.policy``) and the row field naming re-sent UEs."""
        retried: list[int] = []
        replies = faults.screen_replies(send(self.grid, msgs, retried), self.cfg.faults.policy)
        extra = {"retried_ues": sorted(self.ue_of_node.get(n, -1) for n in retried)} if retried else {}
        return replies, extra


def fault_fields(plan: dict[int, str]) -> dict[str, Any]:
    inj = faults.injected(plan)
    return {"injected": inj} if inj else {}


def failure_fields(failures: list[Failure]) -> dict[str, Any]:
    if not failures:
        return {"failures": 0}
    return {
        "failures": len(failures),
        "failed_ues": [f.ue for f in failures],
        "failure_reasons": [(f.reason.strip().splitlines() or [""])[-1][:200] for f in failures],
    }


def channel_fields(res: Any) -> dict[str, Any]:
    """The round's channel in the row; analog receivers add the budget and SNR, a faded relay
    downlink the UEs that missed their estimate."""
    if res is None:
        return {}
    out = {"noise_scale": res.noise_scale, "dropouts": res.dropouts, "n_active": res.n_active,
           "tx_energy": res.tx_energy}
    if res.tx_energy_max is not None:
        out.update(tx_energy_max=res.tx_energy_max, snr_db=res.snr_db)
    if res.delivered is not None:
        out["downlink_dropouts"] = int((~res.delivered).sum())
    return out
