"""The Flower ClientApp: one simulated UE.

It lives in an importable module (not ``__main__``) so Ray actors import it once instead of
unpickling it with every message. The experiment config travels inside each message as JSON; a
UE process builds its side of the run (workload, strategy, schedule) once per config text
(:func:`resolve_from_text`), while the inline engine hands the already assembled side to
:func:`make_client_app` directly. Torch runs single-threaded here so that a UE computes
bit-identical numbers in a Ray actor and in the inline engine.

Per round the app asks the strategy's UE rule (``Strategy.ue_round``) what to transmit, acts out
the round's injected fault, and keeps the UE's private state in its Flower ``Context.state``
(records named ``fedsim.*``): it is committed only when the round succeeds.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedsim.apps import flowerfast
from fedsim.config import ExperimentConfig
from fedsim.runtime import faults
from fedsim.runtime.assemble import UESide, ue_side
from strategies import UEContext
from strategies.common import (
    ARRAYS,
    CONFIG,
    METRICS,
    NUM_EXAMPLES,
    PARTITION_ID,
    TRANSMITTED,
    array_to_numpy,
    from_record,
    to_array,
    to_record,
)

flowerfast.install()

#: Workload-local tensors (optimiser moments, baselines), kept between rounds, never transmitted.
LOCAL = "fedsim.local"
#: The batched path's result for this UE (``engine.batched``), attached by the inline engine:
#: [start model, model after the round's local steps] (or only the trained model when the start
#: is the received model), and for gradient transmission [start model, gradient at the first step].
PREFETCHED, PREFETCHED_GRAD = "fedsim.prefetched", "fedsim.prefetched-grad"
Resolver = Callable[[str], UESide]


@lru_cache(maxsize=4)
def resolve_from_text(text: str) -> UESide:
    """The UE side of the run whose config JSON is ``text`` (built once per process and config)."""
    return ue_side(ExperimentConfig.model_validate_json(text))


def partition_id(context: Context) -> int:
    return int(context.node_config["partition-id"])


def make_client_app(resolve: Resolver = resolve_from_text) -> ClientApp:
    """A ClientApp whose UEs take their side of the run from ``resolve(config text)``."""
    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        """Tell the server which partition (UE id) this node serves."""
        return Message(RecordDict({METRICS: MetricRecord({PARTITION_ID: partition_id(context)})}), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return train_round(msg, context, resolve(str(msg.content[CONFIG]["exp"])))

    @app.train("snapshot")
    def snapshot(msg: Message, context: Context) -> Message:
        """Return this UE's private records for a checkpoint. Nothing changes on the UE."""
        records = {k: v for k, v in context.state.items() if isinstance(v, ArrayRecord)}
        records[METRICS] = MetricRecord({PARTITION_ID: partition_id(context)})
        return Message(RecordDict(records), reply_to=msg)

    @app.train("restore")
    def restore(msg: Message, context: Context) -> Message:
        """Replace this UE's private records by those of a checkpoint (resume)."""
        for key in [k for k in context.state.keys() if k.startswith("fedsim.")]:
            del context.state[key]
        for key, record in msg.content.items():
            if key.startswith("fedsim.") and isinstance(record, ArrayRecord):
                context.state[key] = record
        return Message(RecordDict({METRICS: MetricRecord({PARTITION_ID: partition_id(context)})}), reply_to=msg)

    return app


def train_round(msg: Message, context: Context, side: UESide) -> Message:
    """One round of UE work: the strategy's UE rule with this round's fault acted out."""
    if torch.get_num_threads() != 1:  # setting it unconditionally costs ~7 us per call
        torch.set_num_threads(1)
    config = msg.content[CONFIG]
    ue, workload, strategy = partition_id(context), side.workload, side.strategy
    first_step, steps, rnd = int(config["first-step"]), int(config["steps"]), int(config.get("server-round", 0))
    fault = side.fault(rnd, ue, steps)
    faults.apply_before(fault, ue, rnd)
    if fault == "straggler" and not strategy.holds_ue_models:
        raise faults.injected_error(fault, ue, rnd, side.config.faults.deadline)
    received = from_record(msg.content[ARRAYS], workload.device)
    state = load_records(context, workload.device)
    ctx = UEContext(ue=ue, first_step=first_step, steps=steps, lr=side.lr,
                    grad=_gradient(side, ue, _prefetched(msg, received, first_step, steps, PREFETCHED_GRAD)),
                    train=_local_training(side, ue, state, _prefetched(msg, received, first_step, steps)),
                    init=lambda: workload.init_params().to(workload.device), state=state, device=workload.device)
    out = strategy.ue_round(ctx, received, config)
    v = None if fault == "straggler" else out.transmission  # computed, but it misses the superposition
    v = faults.apply_after(fault, ue, rnd, v)
    save_records(context, state)
    metrics = {PARTITION_ID: ue, NUM_EXAMPLES: workload.num_examples(ue), TRANSMITTED: 1.0 if v is not None else 0.0}
    vectors = ([v] if v is not None else []) + out.reports
    return Message(RecordDict({ARRAYS: to_record(*vectors), METRICS: MetricRecord(metrics)}), reply_to=msg)


def _local_training(side: UESide, ue: int, state: dict, prefetched: Callable | None) -> Callable:
    """The UE's K local steps with the workload's rule, its UE-local tensors kept in ``state``."""

    def train(w: torch.Tensor, first: int, n: int) -> torch.Tensor:
        done = prefetched(w, first, n) if prefetched is not None else None
        if done is not None:
            return done
        local = state.get(LOCAL, {})
        out = side.workload.local_train(w, ue, first, n, side.lr, local)
        if local:
            state[LOCAL] = local
        return out

    return train


def _gradient(side: UESide, ue: int, prefetched: Callable | None) -> Callable:
    """The UE's stochastic gradient; the batched path's, when it is for this model and step."""

    def grad(w: torch.Tensor, s: int) -> torch.Tensor:
        done = prefetched(w, s, None) if prefetched is not None else None
        return done if done is not None else side.workload.stochastic_grad(w, ue, s)

    return grad


def _prefetched(msg: Message, received: list[torch.Tensor], first_step: int, steps: int,
                key: str = PREFETCHED) -> Callable | None:
    """The batched path's result, valid only for the start model it was computed from (the
    received model unless attached) and the round's own steps (``n = None``: a gradient)."""
    if key not in msg.content:
        return None
    arrays = from_record(msg.content[key], received[0].device if received else None)
    start, done = arrays if len(arrays) == 2 else (received[0], arrays[0])

    def take(w: torch.Tensor, first: int, n: int | None) -> torch.Tensor | None:
        same = (first == first_step and n in (None, steps) and w.shape == start.shape
                and torch.equal(w, start.to(w.device, w.dtype)))
        return done.to(w.device, w.dtype).clone() if same else None

    return take


def load_records(context: Context, device: torch.device) -> dict[str, dict[str, torch.Tensor]]:
    """The UE's private records (``fedsim.*``) as name -> {key -> tensor on ``device``}."""
    return {name: {k: torch.from_numpy(array_to_numpy(a).copy()).to(device) for k, a in record.items()}
            for name, record in context.state.items() if name.startswith("fedsim.") and isinstance(record, ArrayRecord)}


def save_records(context: Context, state: dict[str, dict[str, torch.Tensor]]) -> None:
    for name, tensors in state.items():
        record = ArrayRecord()
        for k, t in tensors.items():
            record[k] = to_array(t)
        context.state[name] = record


#: The app Flower's Ray runtime imports in every UE actor.
client_app = make_client_app()
