"""The Flower ServerApp: drives the rounds, evaluates, and records metrics.

It runs unchanged on both engines. It first asks every node for its partition id (which also
waits out Flower's start-up race where only some nodes are registered), then loops over rounds
with the configured strategy, always in partition-id order.
"""

from __future__ import annotations

import math
import time

import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedsim.errors import FedsimError
from fedsim.session import Session, get_session
from fedsim.workloads import build_workload
from strategies.common import METRICS, PARTITION_ID, from_record, to_record
from strategies.fedavg import DigitalFedAvg

server_app = ServerApp()

NODE_DISCOVERY_TIMEOUT_S = 300.0


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    run_rounds(grid, get_session())


def discover_nodes(grid: Grid, num_ues: int, timeout: float = NODE_DISCOVERY_TIMEOUT_S) -> dict[int, int]:
    """Map partition id -> node id for all ``num_ues`` nodes."""
    deadline = time.monotonic() + timeout
    while len(list(grid.get_node_ids())) < num_ues:
        if time.monotonic() > deadline:
            raise FedsimError(f"only {len(list(grid.get_node_ids()))} of {num_ues} UEs came up in {timeout:.0f} s")
        time.sleep(0.01)
    node_ids = sorted(grid.get_node_ids())
    msgs = [Message(RecordDict(), n, MessageType.QUERY) for n in node_ids]
    replies = list(grid.send_and_receive(msgs, timeout=timeout))
    mapping: dict[int, int] = {}
    for rep in replies:
        if rep.has_error():
            raise FedsimError(f"UE on node {rep.metadata.src_node_id} failed to start: {rep.error.reason}")
        mapping[int(rep.content[METRICS][PARTITION_ID])] = rep.metadata.src_node_id
    if sorted(mapping) != list(range(num_ues)):
        raise FedsimError(f"expected partitions 0..{num_ues - 1}, got {sorted(mapping)}")
    return mapping


def _finite(w: torch.Tensor) -> bool:
    return bool(torch.isfinite(w).all())


def run_rounds(grid: Grid, session: Session) -> None:
    cfg = session.config
    rec = session.recorder
    if hasattr(grid, "pull_interval"):
        grid.pull_interval = 0.005  # Flower polls every 0.1 s by default: a floor on round time
    workload = build_workload(cfg.workload, cfg.seed)
    node_of_ue = discover_nodes(grid, workload.num_ues)
    strategy = DigitalFedAvg(
        weights=workload.ue_weights(), node_of_ue=node_of_ue, seed=cfg.seed, fraction=cfg.strategy.fraction
    )
    K = cfg.train.local_steps
    round_time = K * cfg.timing.tau_cp + cfg.timing.tau_cm

    w = workload.init_params()
    rec.log({"round": 0, "sim_time": 0.0, **workload.evaluate(w)})
    status, last = "completed", 0
    for r in range(1, cfg.rounds + 1):
        config = ConfigRecord({"exp": session.config_json})
        replies = grid.send_and_receive(strategy.configure_train(r, to_record(w), config, grid))
        new, _ = strategy.aggregate_train(r, replies)
        if new is not None:
            (w,) = from_record(new)
        row: dict = {
            "round": r,
            "sim_time": r * round_time,
            "participants": len(strategy.last_participants),
            "failures": len(strategy.last_failures),
        }
        if strategy.last_failures:
            row["failed_ues"] = [f.ue for f in strategy.last_failures]
            row["failure_reasons"] = [f.reason.splitlines()[-1][:200] if f.reason else "" for f in strategy.last_failures]
        if r % cfg.eval_every == 0 or r == cfg.rounds or not _finite(w):
            row.update(workload.evaluate(w))
        last = r
        if not _finite(w) or not all(math.isfinite(v) for v in row.values() if isinstance(v, float)):
            row["diverged"] = True
            rec.log(row)
            status = "diverged"
            break
        rec.log(row)
    session.result.update(status=status, rounds=last)
