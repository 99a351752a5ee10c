"""The Flower ServerApp: drives the rounds, evaluates, and records metrics.

It runs unchanged on both engines. It first asks every node for its partition id (which also
waits out Flower's start-up race where only some nodes are registered), then loops over rounds
with the configured strategy, always in partition-id order.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from channels import ChannelResult
from fedsim.analytics.online import OnlineAnalytics
from fedsim.client import resolved_transmit, uses_medium
from fedsim.config import ExperimentConfig
from fedsim.errors import ConfigError, FedsimError
from fedsim.physical import build_channel, communication_time, compute_times
from fedsim.schedule import make_lr
from fedsim.session import Session, get_session
from fedsim.workloads import build_workload
from strategies.common import METRICS, PARTITION_ID, from_record, to_record
from strategies.overlap import delay_in_steps, steps_per_block
from strategies.server_ota import ServerOTA
from strategies.serverfree import ServerFreeMedium

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


class Clock:
    """Simulated wall clock (§5): rounds wait for the slowest participating UE."""

    def __init__(self, cfg: ExperimentConfig, tau_cp: torch.Tensor, tau_cm: float, steps: int):
        self.tau_cp, self.tau_cm, self.steps = tau_cp, tau_cm, steps
        self.overlap = cfg.strategy.overlap.enabled
        self.now = 0.0

    def advance(self, participants: list[int]) -> float:
        if participants:
            compute = self.steps * float(self.tau_cp[participants].max())
        else:
            compute = 0.0
        # overlapped UEs never wait for the exchange; sequential ones idle tau_cm per round
        self.now += compute if self.overlap else compute + self.tau_cm
        return self.now

    def drain(self) -> float:
        """The last aggregate of an overlapped run lands tau_cm after the last step."""
        if self.overlap:
            self.now += self.tau_cm
        return self.now


def channel_stats(res: ChannelResult | None) -> dict[str, Any]:
    if res is None:
        return {}
    return {"noise_scale": res.noise_scale, "dropouts": res.dropouts, "n_active": res.n_active,
            "tx_energy": res.tx_energy}


def failure_fields(failures: list) -> dict[str, Any]:
    if not failures:
        return {"failures": 0}
    return {
        "failures": len(failures),
        "failed_ues": [f.ue for f in failures],
        "failure_reasons": [(f.reason.strip().splitlines() or [""])[-1][:200] for f in failures],
    }


def evaluate_population(workload: Any, models: dict[int, torch.Tensor], weights: torch.Tensor) -> dict[str, Any]:
    """Metrics of the virtual average w_bar = sum q_m w_m / sum q_m (the headline numbers),
    the spread of the UE models' own metrics, and the consensus distance mean ||w_m - w_bar||."""
    ues = sorted(models)
    W = torch.stack([models[u] for u in ues])
    q = weights[ues].to(torch.float64)
    w_bar = ((q / q.sum()).to(W.dtype) @ W)
    row = dict(workload.evaluate(w_bar))
    row["consensus"] = float(torch.linalg.vector_norm(W - w_bar, dim=1).mean())
    per_ue = workload.evaluate_many(W)
    for key in ("loss", "accuracy", "gap"):
        vals = torch.tensor([m[key] for m in per_ue if key in m], dtype=torch.float64)
        if vals.numel():
            row[f"ue_{key}_mean"] = float(vals.mean())
            row[f"ue_{key}_min"] = float(vals.min())
            row[f"ue_{key}_max"] = float(vals.max())
    row["reported_ues"] = len(ues)
    return row


def run_rounds(grid: Grid, session: Session) -> None:
    cfg = session.config
    if hasattr(grid, "pull_interval"):
        grid.pull_interval = 0.005  # Flower polls every 0.1 s by default: a floor on round time
    workload = build_workload(cfg.workload, cfg.seed)
    node_of_ue = discover_nodes(grid, workload.num_ues)
    if uses_medium(cfg):
        status, last = _run_medium(grid, session, workload, node_of_ue)
    else:
        status, last = _run_server(grid, session, workload, node_of_ue)
    session.result.update(status=status, rounds=last)


def preflight(cfg: ExperimentConfig) -> int:
    """Build everything a run needs once, before anything is written, so that incompatible
    choices fail with a ConfigError. Returns N."""
    workload = build_workload(cfg.workload, cfg.seed)
    _setup(cfg, workload)
    return workload.num_ues


def _setup(cfg: ExperimentConfig, workload: Any) -> tuple[Any, int, int, Clock, OnlineAnalytics]:
    channel = build_channel(cfg)
    tau_cm = communication_time(cfg, workload.dim, workload.num_ues)
    K = cfg.train.local_steps
    D = delay_in_steps(tau_cm, cfg.timing.tau_cp) if cfg.strategy.overlap.enabled else 0
    steps = steps_per_block(K, D, cfg.strategy.overlap.in_flight)
    if resolved_transmit(cfg) == "gradient" and steps != 1:
        raise ConfigError(f"gradient transmission needs 1 step per block; this schedule has {steps} (D = {D})")
    if workload.custom_local_train and (resolved_transmit(cfg) == "gradient" or cfg.strategy.overlap.enabled):
        raise ConfigError(f"workload {cfg.workload.name} trains with its own local rule: use strategy.transmit="
                          "'update' or 'model' and no overlap")
    clock = Clock(cfg, compute_times(cfg, workload.num_ues), tau_cm, steps)
    analytics = OnlineAnalytics(cfg, workload, tau_cm=tau_cm, delay_steps=D, steps_per_round=steps)
    return channel, D, steps, clock, analytics


def _noise_factor(cfg: ExperimentConfig, lr: Any, steps: int) -> Any:
    if cfg.channel.rho_growth == "none":
        return None
    eta0 = lr(0)
    return lambda r: lr((r - 1) * steps) / eta0


def _round_config(session: Session, r: int, steps: int) -> ConfigRecord:
    return ConfigRecord({"exp": session.config_json, "first-step": (r - 1) * steps, "steps": steps})


def _run_server(grid: Grid, session: Session, workload: Any, node_of_ue: dict[int, int]) -> tuple[str, int]:
    """(a)/(b): the strategy holds the global model; metrics are logged as each round ends."""
    cfg, rec = session.config, session.recorder
    channel, _, steps, clock, analytics = _setup(cfg, workload)
    lr = make_lr(cfg.train.lr, cfg.rounds * cfg.train.local_steps)
    strategy = ServerOTA(
        channel=channel, transmit=resolved_transmit(cfg), lr=lr, steps_per_round=steps,
        noise_factor=_noise_factor(cfg, lr, steps),
        weights=workload.ue_weights(), node_of_ue=node_of_ue, seed=cfg.seed, fraction=cfg.strategy.fraction,
    )
    w = workload.init_params()
    row0 = {"round": 0, "sim_time": 0.0, **workload.evaluate(w)}
    rec.log({**row0, **analytics.row(0, row0, None, w.unsqueeze(0))})
    for r in range(1, cfg.rounds + 1):
        msgs = strategy.configure_train(r, to_record(w), _round_config(session, r, steps), grid)
        new, _ = strategy.aggregate_train(r, grid.send_and_receive(msgs))
        if new is not None:
            (w,) = from_record(new)
        row: dict[str, Any] = {"round": r, "sim_time": clock.advance(strategy.last_participants),
                               "participants": len(strategy.last_participants),
                               **failure_fields(strategy.last_failures), **channel_stats(strategy.last_channel)}
        evaluated = r % cfg.eval_every == 0 or r == cfg.rounds or not _finite(w)
        if evaluated:
            row.update(workload.evaluate(w))
        row.update(analytics.row(r, row, strategy.last_channel, w.unsqueeze(0) if evaluated else None))
        if _diverged(w, row):
            rec.log({**row, "diverged": True})
            return "diverged", r
        rec.log(row)
        session.result["final_model"] = w
    return "completed", cfg.rounds


def _run_medium(grid: Grid, session: Session, workload: Any, node_of_ue: dict[int, int]) -> tuple[str, int]:
    """(c)/(d): UEs keep their own models. The model state at the end of round r is reported
    with round r+1's reply (and a final flush), so round r is logged one message later."""
    cfg, rec = session.config, session.recorder
    channel, D, steps, clock, analytics = _setup(cfg, workload)
    medium = ServerFreeMedium(
        channel=channel, weights=workload.ue_weights(), node_of_ue=node_of_ue, seed=cfg.seed,
        fraction=cfg.strategy.fraction, steps_per_round=steps,
        delay=D if cfg.strategy.overlap.enabled else None, dim=workload.dim, dtype=workload.dtype,
        noise_factor=_noise_factor(cfg, make_lr(cfg.train.lr, cfg.rounds * cfg.train.local_steps), steps),
    )
    weights = workload.ue_weights()
    pending: dict[str, Any] = {"round": 0, "sim_time": 0.0}
    pending_channel = None
    for r in range(1, cfg.rounds + 2):
        flush = r == cfg.rounds + 1
        evaluate = (r - 1) % cfg.eval_every == 0 or flush
        msgs = medium.configure_round(r, _round_config(session, r, steps), report=evaluate, flush=flush)
        medium.aggregate_train(r, grid.send_and_receive(msgs))
        row = dict(pending)
        if flush:
            row["sim_time"] = clock.drain()
            if medium.last_failures:
                row.update(flush_failures=len(medium.last_failures))
        models = None
        if evaluate and medium.last_reports:
            row.update(evaluate_population(workload, medium.last_reports, weights))
            models = torch.stack([medium.last_reports[u] for u in sorted(medium.last_reports)])
        row.update(analytics.row(row["round"], row, pending_channel, models))
        if any(not _finite(w) for w in medium.last_reports.values()) or _diverged(None, row):
            rec.log({**row, "diverged": True})
            return "diverged", row["round"]
        rec.log(row)
        session.result["final_models"] = dict(medium.last_reports)
        if flush:
            break
        pending_channel = medium.last_channel
        pending = {"round": r, "sim_time": clock.advance(medium.last_participants),
                   "participants": len(medium.last_participants), "delay_steps": D,
                   **failure_fields(medium.last_failures), **channel_stats(medium.last_channel)}
    return "completed", cfg.rounds


def _diverged(w: torch.Tensor | None, row: dict[str, Any]) -> bool:
    if w is not None and not _finite(w):
        return True
    return any(isinstance(v, float) and not math.isfinite(v) for v in row.values())
