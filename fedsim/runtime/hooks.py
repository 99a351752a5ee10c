"""The round loop's cross-cutting concerns, each a small hook: online analytics, divergence,
recording, checkpoints and Ctrl-C.

A hook has ``on_start(loop)``, ``after_round(loop, record)`` (return a status to stop the run:
the first one wins, later hooks still see the round) and ``on_end(loop, status)``; a hook with
state a resumed run needs returns it from ``state_dict(bag)``. :class:`HookBase` gives no-op
defaults. The order matters: analytics add fields, divergence judges the finished row, the
recorder writes it, the result loggers (:mod:`fedsim.runtime.loggers`) mirror it, the checkpoint saves
after them, and Ctrl-C stops last.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import torch

from fedsim.analytics.online import OnlineAnalytics
from fedsim.runtime import checkpoint as ck
from fedsim.runtime import faults
from fedsim.runtime.assemble import Experiment
from fedsim.runtime.loop import RoundLoop, RoundRecord
from fedsim.runtime.recorder import Recorder


class HookBase:
    """No-op defaults for every hook method."""

    name = ""

    def on_start(self, loop: RoundLoop) -> None:
        return None

    def after_round(self, loop: RoundLoop, record: RoundRecord) -> str | None:
        return None

    def on_end(self, loop: RoundLoop, status: str) -> None:
        return None

    def state_dict(self, bag: ck.TensorBag) -> dict[str, Any] | None:
        return None

    def load_state_dict(self, state: dict[str, Any], bag: ck.TensorBag) -> None:
        return None


class AnalyticsHook(HookBase):
    """Theory values, tail indices and channel statistics for every row (``OnlineAnalytics``)."""

    name = "analytics"

    def __init__(self, experiment: Experiment) -> None:
        exp = experiment
        self.analytics = OnlineAnalytics(exp.config, exp.cpu_workload, transmit=exp.strategy.transmit,
                                         receiver=exp.channel.receiver, tau_cm=exp.tau_cm, delay_steps=exp.delay,
                                         steps_per_round=exp.steps)

    def after_round(self, loop: RoundLoop, record: RoundRecord) -> str | None:
        models = record.held.models if record.evaluated and record.held is not None else None
        record.row.update(self.analytics.row(record.round, record.row, record.channel, models))
        return None

    def state_dict(self, bag: ck.TensorBag) -> dict[str, Any]:
        return ck.snapshot_attrs(self.analytics, bag)

    def load_state_dict(self, state: dict[str, Any], bag: ck.TensorBag) -> None:
        ck.restore_attrs(self.analytics, state, bag)


def divergence_reason(models: torch.Tensor | None, row: dict[str, Any], max_norm: float) -> str | None:
    """Why a run has diverged (None: it has not): a non-finite entry in a model (the rows of
    ``models [M, d]``), a model norm above ``max_norm`` (the first such model, in row order), or a
    non-finite metric."""
    if models is not None and len(models):
        finite = torch.isfinite(models).all(1)
        norms = torch.linalg.vector_norm(models.to(torch.float64), dim=1)
        bad = (~finite | (norms > max_norm)).nonzero()  # one pass over all models, not one per model
        if len(bad):
            first = int(bad[0, 0])
            if not bool(finite[first]):
                return "non-finite model"
            return f"model norm {float(norms[first]):.3g} exceeds divergence.max_norm = {max_norm:g}"
    for k, v in row.items():
        if isinstance(v, float) and not math.isfinite(v):
            return f"non-finite {k}"
    return None


class DivergenceHook(HookBase):
    """Stops the run with status "diverged" when a reported model or a metric blows up."""

    name = "divergence"

    def __init__(self, max_norm: float) -> None:
        self.max_norm = max_norm

    def after_round(self, loop: RoundLoop, record: RoundRecord) -> str | None:
        models = record.held.models if record.held is not None else None
        reason = divergence_reason(models, record.row, self.max_norm)
        if reason is None:
            return None
        record.row.update(diverged=True, diverged_reason=reason)
        return "diverged"


class RecorderHook(HookBase):
    """Appends the row to ``metrics.jsonl`` and the progress display."""

    name = "recorder"

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def after_round(self, loop: RoundLoop, record: RoundRecord) -> str | None:
        self.recorder.log(record.row)
        return None


class CheckpointHook(HookBase):
    """Saves the resumable state every ``every`` exchanges (not after the last one, nor when the
    run stops for another reason)."""

    name = "checkpoint"

    def __init__(self, run_dir: Path, every: int, recorder: Recorder, *, fsync: bool, experiment: Experiment) -> None:
        self.run_dir, self.every, self.recorder, self.fsync = run_dir, every, recorder, fsync
        self.workload, self.seed = experiment.config.workload.model_dump(mode="json"), experiment.config.seed

    def after_round(self, loop: RoundLoop, record: RoundRecord) -> str | None:
        e = record.exchange
        if record.status or self.every <= 0 or e % self.every or e >= loop.last_exchange():
            return None
        bag = ck.TensorBag()
        meta = loop.checkpoint_state(record, bag)
        if meta is None:  # a UE did not answer: keep the previous checkpoint
            return None
        meta.update(metrics_lines=len(self.recorder.rows), workload=self.workload, seed=self.seed)
        ck.save_checkpoint(self.run_dir, e, meta, bag.tensors, fsync=self.fsync)
        return None


class StopHook(HookBase):
    """Stops at a round boundary once ``stop`` is set (the first Ctrl-C), unless the run is done.
    Being last, it also acts out ``faults.kill_at`` (a testing aid: SIGKILL once the round's row
    and checkpoint are on disk)."""

    name = "stop"

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def after_round(self, loop: RoundLoop, record: RoundRecord) -> str | None:
        faults.kill_if_due(loop.experiment.config, record.round, resumed=loop.resume is not None)
        return "interrupted" if self.stop.is_set() and not record.last else None
