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
from channels.rng import torch_generator
from fedsim import checkpoint as ck
from fedsim import faults, flowerfast
from fedsim.analytics.online import OnlineAnalytics
from fedsim.batched import check_batched
from fedsim.client import resolved_transmit, uses_medium
from fedsim.config import ExperimentConfig
from fedsim.device import run_device
from fedsim.errors import ConfigError, FedsimError, RunInterrupted
from fedsim.physical import build_channel, communication_time, compute_times
from fedsim.schedule import make_lr
from fedsim.session import Session, get_session
from fedsim.workloads import build_workload
from strategies.common import CONFIG, METRICS, PARTITION_ID, array_to_numpy, from_record, to_record
from strategies.overlap import delay_in_steps, steps_per_block
from strategies.server_ota import ServerOTA
from strategies.serverfree import ServerFreeMedium

flowerfast.install()
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
    replies = send(grid, msgs)  # retried if an actor dies while starting
    mapping: dict[int, int] = {}
    for rep in replies:
        if rep.has_error():
            raise FedsimError(f"UE on node {rep.metadata.src_node_id} failed to start: {rep.error.reason}")
        mapping[int(rep.content[METRICS][PARTITION_ID])] = rep.metadata.src_node_id
    if sorted(mapping) != list(range(num_ues)):
        raise FedsimError(f"expected partitions 0..{num_ues - 1}, got {sorted(mapping)}")
    return mapping


def check_stop(session: Session, done: int) -> None:
    """Stop at a round boundary after Ctrl-C. Raised in the ServerApp thread, the exception
    ends Flower's simulation runtime too (a KeyboardInterrupt in the main thread alone would
    leave this thread polling for replies that never come)."""
    if session.stop.is_set():
        raise RunInterrupted(f"interrupted by the user after round {done}")


def _finite(w: torch.Tensor) -> bool:
    return bool(torch.isfinite(w).all())


class Clock:
    """Simulated wall clock (§5): rounds wait for the slowest participating UE."""

    def __init__(self, cfg: ExperimentConfig, tau_cp: torch.Tensor, tau_cm: float, steps: int):
        self.tau_cp, self.tau_cm, self.steps = tau_cp, tau_cm, steps
        self.overlap = cfg.strategy.overlap.enabled
        self.now = 0.0

    def advance(self, participants: list[int], waited: float | None = None) -> float:
        """Advance by one round; ``waited``: a deadline [s] the round waited out (stragglers)."""
        if participants:
            compute = self.steps * float(self.tau_cp[participants].max())
        else:
            compute = 0.0
        if waited is not None:
            compute = max(compute, waited)
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


def evaluate_population(workload: Any, models: dict[int, torch.Tensor], weights: torch.Tensor,
                        *, sample: int = 0, seed: int = 0, round: int = 0) -> dict[str, Any]:
    """Metrics of the virtual average w_bar = sum q_m w_m / sum q_m (the headline numbers), the
    consensus distance mean ||w_m - w_bar|| (both over every UE), and the spread of the UE models'
    own metrics, over at most ``sample`` UEs drawn from stream "evaluation" (0 = all): evaluating
    every model of 1000 UEs each round would cost more than the training."""
    ues = sorted(models)
    W = torch.stack([models[u] for u in ues]).to(workload.device)
    q = weights[ues].to(torch.float64)
    w_bar = (q / q.sum()).to(W.device, W.dtype) @ W
    row = dict(workload.evaluate(w_bar))
    row["consensus"] = float(torch.linalg.vector_norm(W - w_bar, dim=1).mean())
    if 0 < sample < len(ues):
        pick = torch.randperm(len(ues), generator=torch_generator(seed, "evaluation", round))[:sample]
        W = W[pick.sort().values]
        row["ue_metrics_sample"] = sample
    per_ue = workload.evaluate_many(W)
    for key in ("loss", "accuracy", "gap", "routing_disagreement"):
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
    workload = build_workload(cfg.workload, cfg.seed, run_device(cfg))
    node_of_ue = discover_nodes(grid, workload.num_ues)
    resume: ck.Checkpoint | None = session.resume
    if resume is not None and resume.meta.get("ue_states"):
        restore_ue_states(grid, node_of_ue, resume.meta["ue_states"], ck.TensorBag(resume.tensors))
    if uses_medium(cfg):
        status, last = _run_medium(grid, session, workload, node_of_ue)
    else:
        status, last = _run_server(grid, session, workload, node_of_ue)
    session.result.update(status=status, rounds=last)
    if status == "diverged":
        session.result["diverged_round"] = last


# ----------------------------------------------------------------------------- messages with retries

#: Flower error codes that mean the UE's code raised (a UE fault, recorded, not retried).
UE_ERROR_CODES = (1, 2)  # LOAD_CLIENT_APP_EXCEPTION, CLIENT_APP_RAISED_EXCEPTION
MAX_RETRIES = 2


def send(grid: Grid, msgs: list[Message], retried: list[int] | None = None) -> list[Message]:
    """``send_and_receive`` that re-sends a message whose reply is an infrastructure error (for
    example a Ray actor that died mid-round), up to MAX_RETRIES times. A UE's state only
    changes when its ClientApp returns, so a re-sent message computes the same numbers.
    Re-sent destinations are appended to ``retried`` (node ids)."""
    by_dst = {m.metadata.dst_node_id: m for m in msgs}
    replies = {r.metadata.src_node_id: r for r in grid.send_and_receive(msgs)}
    for _ in range(MAX_RETRIES):
        again = [n for n, r in replies.items() if r.has_error() and r.error.code not in UE_ERROR_CODES]
        if not again:
            break
        fresh = [Message(by_dst[n].content, n, by_dst[n].metadata.message_type) for n in again]
        if retried is not None:
            retried.extend(again)
        for r in grid.send_and_receive(fresh):
            replies[r.metadata.src_node_id] = r
    return list(replies.values())


def snapshot_ue_states(grid: Grid, node_of_ue: dict[int, int], bag: ck.TensorBag) -> list[list[Any]] | None:
    """Every UE's ``Context.state`` records as [[ue, record, key, tensor name], ...] (a
    ``train.snapshot`` message; works on both engines). None if a UE did not answer."""
    msgs = [Message(RecordDict(), node_of_ue[u], "train.snapshot") for u in sorted(node_of_ue)]
    rows: list[list[Any]] = []
    for rep in sorted(send(grid, msgs), key=lambda m: m.metadata.src_node_id):
        if rep.has_error():
            return None
        ue = int(rep.content[METRICS][PARTITION_ID])
        for name, record in rep.content.items():
            if name == METRICS:
                continue
            if not len(record):
                rows.append([ue, name, "", None])  # an empty record (no blocks in flight) still exists
            for key, arr in record.items():
                rows.append([ue, name, key, bag.put(torch.from_numpy(array_to_numpy(arr).copy()))])
    return rows


def restore_ue_states(grid: Grid, node_of_ue: dict[int, int], rows: list[list[Any]], bag: ck.TensorBag) -> None:
    """Send each UE its checkpointed records (``train.restore``) before the first resumed round."""
    from flwr.app import Array, ArrayRecord

    per_ue: dict[int, dict[str, dict[str, Any]]] = {u: {} for u in node_of_ue}
    for ue, name, key, tname in rows:
        arrays = per_ue[int(ue)].setdefault(name, {})
        if tname is not None:
            arrays[key] = Array.from_numpy_ndarray(bag.get(tname).numpy())
    msgs = [Message(RecordDict({name: ArrayRecord(array_dict=arrays) for name, arrays in per_ue[u].items()}),
                    node_of_ue[u], "train.restore") for u in sorted(node_of_ue)]
    for rep in send(grid, msgs):
        if rep.has_error():
            raise FedsimError(f"resume: a UE could not restore its state: {rep.error.reason}")


def preflight(cfg: ExperimentConfig) -> int:
    """Build everything a run needs once, before anything is written, so that incompatible
    choices fail with a ConfigError. Returns N."""
    check_memory(cfg)
    run_device(cfg)  # a ConfigError when CUDA is asked for but missing
    if cfg.engine.name == "ray":
        from fedsim.engines import gpus_per_ue

        gpus_per_ue(cfg.engine)
    workload = build_workload(cfg.workload, cfg.seed)
    _setup(cfg, workload)
    faults.check_faults(cfg, workload.num_ues)
    check_batched(cfg, workload)
    return workload.num_ues


#: Copies of an [N, d] block a run holds at once: UE models, sync models, inbox, the channel's
#: transmitted, noise and estimate matrices (a deliberately rough upper estimate).
MODEL_COPIES = 6


def memory_estimate(cfg: ExperimentConfig) -> tuple[int, int]:
    """(bytes, d): a rough estimate of the model state of a run, N * d * 8 B * MODEL_COPIES.
    d comes from the same workload built with 2 UEs (it does not depend on N)."""
    n = int(cfg.workload.num_ues)
    small = cfg.workload.model_copy(update={"num_ues": min(n, 2)})
    d = build_workload(small, cfg.seed).dim
    return n * d * 8 * MODEL_COPIES, d


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where unknown)."""
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def check_memory(cfg: ExperimentConfig) -> None:
    """Refuse, before building the workload, a run whose N x d state cannot fit in memory."""
    if cfg.workload.num_ues <= 1000:
        return  # small runs: not worth building a probe workload
    try:
        need, d = memory_estimate(cfg)
    except FedsimError:
        raise
    except Exception:  # noqa: BLE001 - the probe is best effort; the real build reports errors
        return
    have = available_memory()
    if have is not None and need > have:
        raise ConfigError(
            f"workload.num_ues = {cfg.workload.num_ues} with d = {d} needs about {need / 2**30:.1f} GiB "
            f"(N x d x 8 B x {MODEL_COPIES} copies) but only {have / 2**30:.1f} GiB is available; reduce num_ues")


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
    tau_cp = compute_times(cfg, workload.num_ues) * faults.slowdowns(cfg, workload.num_ues)
    clock = Clock(cfg, tau_cp, tau_cm, steps)
    # analytics run on CPU (numpy, scipy): they get the CPU build of the workload
    cpu_workload = workload if workload.device.type == "cpu" else build_workload(cfg.workload, cfg.seed)
    analytics = OnlineAnalytics(cfg, cpu_workload, tau_cm=tau_cm, delay_steps=D, steps_per_round=steps)
    return channel, D, steps, clock, analytics


def _noise_factor(cfg: ExperimentConfig, lr: Any, steps: int) -> Any:
    if cfg.channel.rho_growth == "none":
        return None
    eta0 = lr(0)
    return lambda r: lr((r - 1) * steps) / eta0


def _round_config(session: Session, r: int, steps: int) -> ConfigRecord:
    return ConfigRecord({"exp": session.config_json, "first-step": (r - 1) * steps, "steps": steps})


class _Reliability:
    """Fault plans, retries and checkpoints shared by both round loops."""

    def __init__(self, session: Session, workload: Any, steps: int, per_ue: bool, grid: Grid,
                 node_of_ue: dict[int, int]):
        self.cfg, self.grid, self.node_of_ue = session.config, grid, node_of_ue
        self.run_dir = session.run_dir
        self.resume: ck.Checkpoint | None = session.resume
        self.every = ck.auto_every(self.cfg, workload, per_ue) if self.run_dir is not None else 0
        self.n, self.steps = workload.num_ues, steps
        self.tau_cp = compute_times(self.cfg, workload.num_ues)
        self.need_ue_states = per_ue or workload.custom_local_train
        self.ue_of_node = {v: k for k, v in node_of_ue.items()}

    def plan(self, r: int, transmitting: set[int], receiving: set[int]) -> dict[int, str]:
        """This round's faults among the UEs that get a message (``receiving``); NaN and
        straggler faults only matter for UEs that transmit."""
        out = {}
        for ue, kind in faults.plan(self.cfg, r, self.n, self.tau_cp, self.steps).items():
            if ue in receiving and (kind in ("unavailable", "raise") or ue in transmitting):
                out[ue] = kind
        return out

    def waited(self, plan: dict[int, str]) -> float | None:
        return self.cfg.faults.deadline if "straggler" in plan.values() else None

    def send(self, msgs: list[Message], medium: bool) -> tuple[list[Message], dict[str, Any]]:
        retried: list[int] = []
        replies = faults.screen_replies(send(self.grid, msgs, retried), self.cfg.faults.policy, medium)
        extra = {"retried_ues": sorted(self.ue_of_node.get(n, -1) for n in retried)} if retried else {}
        return replies, extra

    def fault_row(self, plan: dict[int, str]) -> dict[str, Any]:
        inj = faults.injected(plan)
        return {"injected": inj} if inj else {}

    def due(self, r: int) -> bool:
        return self.every > 0 and r % self.every == 0

    def save(self, r: int, meta: dict[str, Any], bag: ck.TensorBag) -> None:
        if self.need_ue_states:
            rows = snapshot_ue_states(self.grid, self.node_of_ue, bag)
            if rows is None:  # a UE did not answer: keep the previous checkpoint
                return
            meta["ue_states"] = rows
        meta["workload"] = self.cfg.workload.model_dump(mode="json")
        meta["seed"] = self.cfg.seed
        ck.save_checkpoint(self.run_dir, r, meta, bag.tensors, fsync=self.cfg.checkpoint.fsync)


def _run_server(grid: Grid, session: Session, workload: Any, node_of_ue: dict[int, int]) -> tuple[str, int]:
    """(a)/(b): the strategy holds the global model; metrics are logged as each round ends."""
    cfg, rec = session.config, session.recorder
    channel, _, steps, clock, analytics = _setup(cfg, workload)
    session.result["analytics"] = analytics
    rel = _Reliability(session, workload, steps, False, grid, node_of_ue)
    lr = make_lr(cfg.train.lr, cfg.rounds * cfg.train.local_steps)
    strategy = ServerOTA(
        channel=channel, transmit=resolved_transmit(cfg), lr=lr, steps_per_round=steps,
        noise_factor=_noise_factor(cfg, lr, steps),
        weights=workload.ue_weights(), node_of_ue=node_of_ue, seed=cfg.seed, fraction=cfg.strategy.fraction,
        device=workload.device,
    )
    w = workload.init_params().to(workload.device)
    first = 1
    if rel.resume is not None:
        meta, bag = rel.resume.meta, ck.TensorBag(rel.resume.tensors)
        w, clock.now, first = bag.get(meta["model"]).to(workload.device), float(meta["clock"]), int(meta["next_round"])
        ck.restore_attrs(analytics, meta["analytics"], bag)
    else:
        row0 = {"round": 0, "sim_time": 0.0, **workload.evaluate(w)}
        rec.log({**row0, **analytics.row(0, row0, None, w.unsqueeze(0))})
    for r in range(first, cfg.rounds + 1):
        check_stop(session, r - 1)
        msgs = list(strategy.configure_train(r, to_record(w), _round_config(session, r, steps), grid))
        sampled = {strategy.ue_of_node[m.metadata.dst_node_id] for m in msgs}
        plan = rel.plan(r, sampled, sampled)
        replies, retry_row = rel.send(msgs, medium=False)
        new, _ = strategy.aggregate_train(r, replies)
        if new is not None:
            (w,) = from_record(new, workload.device)
        row: dict[str, Any] = {"round": r, "sim_time": clock.advance(strategy.last_participants, rel.waited(plan)),
                               "participants": len(strategy.last_participants),
                               **failure_fields(strategy.last_failures), **rel.fault_row(plan), **retry_row,
                               **channel_stats(strategy.last_channel)}
        evaluated = r % cfg.eval_every == 0 or r == cfg.rounds or not _finite(w)
        if evaluated:
            row.update(workload.evaluate(w))
        row.update(analytics.row(r, row, strategy.last_channel, w.unsqueeze(0) if evaluated else None))
        reason = _diverged(cfg, [w], row)
        if reason:
            rec.log({**row, "diverged": True, "diverged_reason": reason})
            return "diverged", r
        rec.log(row)
        session.result["final_model"] = w.cpu()
        if rel.due(r) and r < cfg.rounds:
            bag = ck.TensorBag()
            rel.save(r, {"kind": "server", "next_round": r + 1, "metrics_lines": len(rec.rows), "clock": clock.now,
                         "analytics": ck.snapshot_attrs(analytics, bag), "model": bag.put(w)}, bag)
    return "completed", cfg.rounds


def _run_medium(grid: Grid, session: Session, workload: Any, node_of_ue: dict[int, int]) -> tuple[str, int]:
    """(c)/(d): UEs keep their own models. The model state at the end of round r is reported
    with round r+1's reply (and a final flush), so round r is logged one message later."""
    cfg, rec = session.config, session.recorder
    channel, D, steps, clock, analytics = _setup(cfg, workload)
    session.result["analytics"] = analytics
    rel = _Reliability(session, workload, steps, True, grid, node_of_ue)
    medium = ServerFreeMedium(
        channel=channel, weights=workload.ue_weights(), node_of_ue=node_of_ue, seed=cfg.seed,
        fraction=cfg.strategy.fraction, steps_per_round=steps,
        delay=D if cfg.strategy.overlap.enabled else None, dim=workload.dim, dtype=workload.dtype,
        device=workload.device,
        noise_factor=_noise_factor(cfg, make_lr(cfg.train.lr, cfg.rounds * cfg.train.local_steps), steps),
    )
    weights = workload.ue_weights()
    pending: dict[str, Any] = {"round": 0, "sim_time": 0.0}
    pending_channel = None
    first = 1
    if rel.resume is not None:
        meta, bag = rel.resume.meta, ck.TensorBag(rel.resume.tensors)
        medium.inbox = ck.inbox_from(meta["inbox"], workload.num_ues, bag)
        pending, pending_channel = dict(meta["pending"]), ck.channel_from(meta["pending_channel"], bag)
        clock.now, first = float(meta["clock"]), int(meta["next_round"])
        ck.restore_attrs(analytics, meta["analytics"], bag)
    everyone = set(range(workload.num_ues))
    for r in range(first, cfg.rounds + 2):
        check_stop(session, r - 1)
        flush = r == cfg.rounds + 1
        evaluate = (r - 1) % cfg.eval_every == 0 or flush
        msgs = medium.configure_round(r, _round_config(session, r, steps), report=evaluate, flush=flush)
        transmitting = {medium.ue_of_node[m.metadata.dst_node_id] for m in msgs
                        if bool(m.content[CONFIG]["participate"])}
        plan = {} if flush else rel.plan(r, transmitting, everyone)
        replies, retry_row = rel.send(msgs, medium=True)
        medium.aggregate_train(r, replies)
        row = dict(pending)
        if flush:
            row["sim_time"] = clock.drain()
            if medium.last_failures:
                row.update(flush_failures=len(medium.last_failures))
            row.update({f"flush_{k}": v for k, v in retry_row.items()})
        models = None
        if evaluate and medium.last_reports:
            row.update(evaluate_population(workload, medium.last_reports, weights, sample=cfg.eval_ue_sample,
                                           seed=cfg.seed, round=row["round"]))
            models = torch.stack([medium.last_reports[u] for u in sorted(medium.last_reports)])
        row.update(analytics.row(row["round"], row, pending_channel, models))
        reason = _diverged(cfg, list(medium.last_reports.values()), row)
        if reason:
            rec.log({**row, "diverged": True, "diverged_reason": reason})
            return "diverged", row["round"]
        rec.log(row)
        session.result["final_models"] = dict(medium.last_reports)
        if flush:
            break
        pending_channel = medium.last_channel
        pending = {"round": r, "sim_time": clock.advance(medium.last_participants, rel.waited(plan)),
                   "participants": len(medium.last_participants), "delay_steps": D,
                   **failure_fields(medium.last_failures), **rel.fault_row(plan), **retry_row,
                   **channel_stats(medium.last_channel)}
        if rel.due(r):
            bag = ck.TensorBag()
            rel.save(r, {"kind": "medium", "next_round": r + 1, "metrics_lines": len(rec.rows), "clock": clock.now,
                         "analytics": ck.snapshot_attrs(analytics, bag), "inbox": ck.inbox_to(medium.inbox, bag),
                         "pending": pending, "pending_channel": ck.channel_to(pending_channel, bag)}, bag)
    return "completed", cfg.rounds


def _diverged(cfg: ExperimentConfig, models: list[torch.Tensor], row: dict[str, Any]) -> str | None:
    """Why the run has diverged (None: it has not): a non-finite model entry, a model norm
    above ``divergence.max_norm``, or a non-finite metric."""
    for w in models:
        if not _finite(w):
            return "non-finite model"
        norm = float(torch.linalg.vector_norm(w.to(torch.float64)))
        if norm > cfg.divergence.max_norm:
            return f"model norm {norm:.3g} exceeds divergence.max_norm = {cfg.divergence.max_norm:g}"
    for k, v in row.items():
        if isinstance(v, float) and not math.isfinite(v):
            return f"non-finite {k}"
    return None
