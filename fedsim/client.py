"""The Flower ClientApp: one simulated UE.

It lives in an importable module (not ``__main__``) so Ray actors import it once instead of
unpickling it with every message. The experiment config travels inside each message as JSON
and is parsed once per worker process; the workload (data, partitions) is built once per
worker and cached. Torch runs single-threaded here so that a UE computes bit-identical
numbers in a Ray actor and in the inline engine.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedsim import batched, faults, flowerfast
from fedsim.config import ExperimentConfig
from fedsim.device import run_device
from fedsim.physical import compute_times
from fedsim.schedule import make_lr
from fedsim.workloads import build_workload
from strategies.common import (
    ARRAYS,
    CONFIG,
    METRICS,
    NUM_EXAMPLES,
    PARTITION_ID,
    array_to_numpy,
    from_record,
    to_array,
    to_record,
)
from strategies.overlap import OverlapState
from strategies.server_ota import ue_transmit
from strategies.serverfree import TRANSMITTED, Arrival, UEState, ue_round

flowerfast.install()
client_app = ClientApp()


@lru_cache(maxsize=8)
def experiment_from_json(text: str) -> ExperimentConfig:
    return ExperimentConfig.model_validate_json(text)


@lru_cache(maxsize=8)
def workload_from_json(text: str):
    """The experiment's workload, keyed by the message's config text (``build_workload`` keys
    its own cache by re-serialising the config, which costs more than the rest of a small round)."""
    cfg = experiment_from_json(text)
    return build_workload(cfg.workload, cfg.seed, run_device(cfg))


def partition_id(context: Context) -> int:
    return int(context.node_config["partition-id"])


@client_app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the server which partition (UE id) this node serves."""
    return Message(RecordDict({METRICS: MetricRecord({PARTITION_ID: partition_id(context)})}), reply_to=msg)


def resolved_transmit(cfg: ExperimentConfig) -> str:
    """What UEs put on the air (§2.4, §9 item 3): ``auto`` means models for server-digital
    and for mode ``reset``, gradients when K = 1, otherwise model updates."""
    st = cfg.strategy
    if st.transmit != "auto":
        return st.transmit
    if (st.name == "server-digital" and not st.overlap.enabled) or (st.serverfree and st.mode == "reset"):
        return "model"
    return "gradient" if cfg.train.local_steps == 1 else "update"


def uses_medium(cfg: ExperimentConfig) -> bool:
    """True when UEs keep their own models (server-free, or any overlapped schedule)."""
    return cfg.strategy.serverfree or cfg.strategy.overlap.enabled


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """One round of UE work for the configured strategy."""
    if torch.get_num_threads() != 1:  # setting it unconditionally costs ~7 us per call
        torch.set_num_threads(1)
    config = msg.content[CONFIG]
    cfg = experiment_from_json(str(config["exp"]))
    workload = workload_from_json(str(config["exp"]))
    ue = partition_id(context)
    lr = make_lr(cfg.train.lr, cfg.rounds * cfg.train.local_steps)
    first_step, steps = int(config["first-step"]), int(config["steps"])

    def grad(v: torch.Tensor, s: int) -> torch.Tensor:
        return workload.stochastic_grad(v, ue, s)

    device = workload.device
    local = _load_local(context, device)

    def train_fn(v: torch.Tensor, first: int, n: int) -> torch.Tensor:
        done = batched.take(str(config["exp"]), ue, v, first, n) if cfg.engine.batched else None
        return done if done is not None else workload.local_train(v, ue, first, n, lr, local)

    metrics = {PARTITION_ID: ue, NUM_EXAMPLES: workload.num_examples(ue)}
    rnd = int(config.get("server-round", 0))
    fault = _fault(cfg, rnd, ue, workload.num_ues, steps) if 0 < rnd <= cfg.rounds else None
    faults.apply_before(fault, ue, rnd)
    if not uses_medium(cfg):
        if fault == "straggler":
            raise faults.InjectedFault(f"straggler: UE {ue} missed the deadline of {cfg.faults.deadline} s "
                                       f"in round {rnd}")
        (w,) = from_record(msg.content[ARRAYS], device)
        v = ue_transmit(w, grad, first_step, steps, lr, resolved_transmit(cfg), train_fn)
        v = faults.apply_after(fault, ue, rnd, v)
        _save_local(context, local)
        return _reply(msg, [v], metrics)

    state = _load_state(context, workload)
    received = from_record(msg.content[ARRAYS], device)
    arrivals = [Arrival(int(b), int(i), e) for b, i, e in
                zip(config["arrival-blocks"], config["arrival-index"], received, strict=True)]
    st = cfg.strategy
    reported, v = ue_round(
        state, arrivals, grad=grad, first_step=first_step, steps=steps, lr=lr,
        transmit=resolved_transmit(cfg), mode=st.mode, overlap=st.overlap.enabled, merge=st.overlap.merge,
        participate=bool(config["participate"]), block_len=steps, report=bool(config["report"]), train=train_fn,
    )
    if fault == "straggler":
        v = None  # computed, but its transmission misses the superposition's deadline
    v = faults.apply_after(fault, ue, rnd, v)
    _save_state(context, state)
    _save_local(context, local)
    metrics[TRANSMITTED] = 1.0 if v is not None else 0.0
    vectors = ([v] if v is not None else []) + ([reported] if reported is not None else [])
    return _reply(msg, vectors, metrics)


def _fault(cfg: ExperimentConfig, rnd: int, ue: int, num_ues: int, steps: int) -> str | None:
    if not cfg.faults.active:
        return None
    return faults.plan(cfg, rnd, num_ues, compute_times(cfg, num_ues), steps).get(ue)


@client_app.train("snapshot")
def snapshot(msg: Message, context: Context) -> Message:
    """Return this UE's ``Context.state`` records (models, overlap buffers, workload-local
    tensors) for a checkpoint. Nothing changes on the UE."""
    records = {k: v for k, v in context.state.items() if isinstance(v, ArrayRecord)}
    records[METRICS] = MetricRecord({PARTITION_ID: partition_id(context)})
    return Message(RecordDict(records), reply_to=msg)


@client_app.train("restore")
def restore(msg: Message, context: Context) -> Message:
    """Replace this UE's ``Context.state`` records by those of a checkpoint (resume)."""
    for key in [k for k in context.state.keys() if k.startswith("fedsim.")]:
        del context.state[key]
    for key, record in msg.content.items():
        if key.startswith("fedsim.") and isinstance(record, ArrayRecord):
            context.state[key] = record
    return Message(RecordDict({METRICS: MetricRecord({PARTITION_ID: partition_id(context)})}), reply_to=msg)


def _reply(msg: Message, vectors: list[torch.Tensor], metrics: dict) -> Message:
    return Message(RecordDict({ARRAYS: to_record(*vectors), METRICS: MetricRecord(metrics)}), reply_to=msg)


_MODEL, _PENDING, _SYNC, _LOCAL = "fedsim.model", "fedsim.pending", "fedsim.sync", "fedsim.local"


def _load_local(context: Context, device: torch.device) -> dict[str, torch.Tensor]:
    """The workload's UE-local tensors (never transmitted), kept in ``Context.state``."""
    if _LOCAL not in context.state:
        return {}
    return _named_tensors(context.state[_LOCAL], device)


def _save_local(context: Context, local: dict[str, torch.Tensor]) -> None:
    if local:
        context.state[_LOCAL] = _named_record(local)


def _named_record(tensors: dict[str, torch.Tensor]) -> ArrayRecord:
    return ArrayRecord(array_dict={k: to_array(v) for k, v in tensors.items()})


def _named_tensors(record: ArrayRecord, device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(array_to_numpy(a).copy()).to(device) for k, a in record.items()}


def _load_state(context: Context, workload) -> UEState:
    """The UE's own model and overlap buffers from ``Context.state`` (identical init first)."""
    st = context.state
    if _MODEL not in st:
        w0 = workload.init_params().to(workload.device)
        return UEState(w0.clone(), OverlapState(pending={}, sync=w0.clone()))
    (w,) = from_record(st[_MODEL], workload.device)
    pending = {int(k): v for k, v in _named_tensors(st[_PENDING], workload.device).items()}
    (sync,) = from_record(st[_SYNC], workload.device)
    return UEState(w, OverlapState(pending=pending, sync=sync))


def _save_state(context: Context, state: UEState) -> None:
    context.state[_MODEL] = to_record(state.w)
    context.state[_PENDING] = _named_record({str(k): v for k, v in state.overlap.pending.items()})
    context.state[_SYNC] = to_record(state.overlap.sync)
