"""Run one validated experiment end to end: preflight, run directory, engine, summary, figures.

:func:`execute` is the single run without what comes after it (an architecture search's
retraining is :mod:`fedsim.runner`'s). The summary records how the run ended, failures included;
exceptions are re-raised after it is written.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from fedsim.apps.client import client_app, make_client_app
from fedsim.apps.server import LoopApp
from fedsim.config import ExperimentConfig, to_toml_dict
from fedsim.device import run_device
from fedsim.engines.batched import BatchTrainer
from fedsim.engines.inline import run_inline
from fedsim.engines.ray import check_ray_address, gpus_per_ue, run_ray
from fedsim.errors import RunDirError, RunInterrupted
from fedsim.plots import plot_runs
from fedsim.results.rundir import git_hash, new_run_dir, versions, write_config, write_summary
from fedsim.runtime import checkpoint as ck
from fedsim.runtime.assemble import Experiment, assemble
from fedsim.runtime.hooks import AnalyticsHook, CheckpointHook, DivergenceHook, RecorderHook, StopHook
from fedsim.runtime.loggers import close_loggers, make_loggers
from fedsim.runtime.loop import Outcome, RoundLoop
from fedsim.runtime.recorder import Recorder
from fedsim.runtime.resume import prepare_resume
from strategies import HeldModels


@dataclass
class RunResult:
    """A finished (or failed) run: its folder, summary, assembled experiment and last models."""

    run_dir: Path
    summary: dict[str, Any]
    experiment: Experiment
    final: HeldModels | None = None
    error: BaseException | None = field(default=None, repr=False)


def preflight(cfg: ExperimentConfig) -> Experiment:
    """Everything that can be checked before a run writes anything: the assembled experiment,
    the engine's GPU share and the Ray address. Raises FedsimError subclasses."""
    experiment = assemble(cfg)
    if cfg.engine.name == "ray":
        gpus_per_ue(cfg.engine)
        check_ray_address(cfg.engine)
    return experiment


def execute(cfg: ExperimentConfig, *, quiet: bool = False, plot: bool | None = None,
            resume: Path | None = None) -> RunResult:
    """Run ``cfg`` in a new run directory (or continue ``resume``, an existing run directory of
    ``cfg``, from its last checkpoint). Never raises for a run that started: the error is in
    ``RunResult.error`` and in the summary. Torch computes with ``engine.threads`` threads meanwhile."""
    with torch_threads(cfg.engine.threads):
        return _execute(cfg, quiet=quiet, plot=plot, resume=resume)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Torch's intra-op threads set to ``n`` (the caller's setting is restored after): reductions
    split over threads sum in another order, so a fixed count keeps a run's numbers the same on
    every machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _execute(cfg: ExperimentConfig, *, quiet: bool, plot: bool | None, resume: Path | None) -> RunResult:
    experiment = preflight(cfg)
    started = time.monotonic()
    run_dir, checkpoint, rows, summary = _open_run_dir(cfg, resume)
    recorder = Recorder(run_dir, cfg.rounds, quiet=quiet, label=cfg.name)
    recorder.rows = list(rows)
    stop = threading.Event()
    analytics = AnalyticsHook(experiment)
    every = ck.auto_every(cfg, experiment.workload, experiment.strategy.holds_ue_models)
    loggers = make_loggers(cfg, run_dir, recorder)
    hooks = [analytics, DivergenceHook(cfg.divergence.max_norm), RecorderHook(recorder), *loggers,
             CheckpointHook(run_dir, every, recorder, fsync=cfg.checkpoint.fsync, experiment=experiment),
             StopHook(stop)]
    result = RunResult(run_dir, summary, experiment)
    try:
        with recorder, _stop_on_ctrl_c(stop):
            outcome = _run_engine(experiment, RoundLoop(experiment, hooks, resume=checkpoint))
        result.final = outcome.final
        summary.update(status=outcome.status, rounds=outcome.rounds)
        if outcome.status == "diverged":
            summary["diverged_round"] = outcome.rounds
        if outcome.status == "interrupted":
            raise RunInterrupted(f"interrupted by the user after round {outcome.rounds}")
    except BaseException as exc:  # noqa: BLE001 - recorded, then handed to the caller
        result.error = exc
        summary["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt | RunInterrupted) else "failed"
        summary["error"] = "".join(traceback.format_exception_only(exc)).strip()
        summary["rounds"] = recorder.rows[-1]["round"] if recorder.rows else 0
    if errors := close_loggers(loggers, summary["status"]):  # every exit path: completed, diverged, ...
        summary["logger_errors"] = errors
    summary["wall_s"] = round(time.monotonic() - started, 3)
    summary["analytics_s"] = round(analytics.analytics.total_s, 4)  # overhead, kept out of the rows
    summary["finished_at"] = datetime.now(UTC).isoformat()
    summary["final"] = final_metrics(recorder.rows)
    summary.update(count_faults(recorder.rows))
    write_summary(run_dir, summary)
    if (plot if plot is not None else cfg.output.plot) and recorder.rows:
        plot_runs([run_dir], out=run_dir / "figures" / "convergence")
    return result


def _open_run_dir(cfg: ExperimentConfig, resume: Path | None) -> tuple[Path, Any, list[dict], dict[str, Any]]:
    """(run dir, checkpoint or None, rows kept, summary) of a new run or of the run to resume."""
    if resume is None:
        try:
            run_dir = new_run_dir(cfg.output.dir, cfg.name, cfg.output.run_name)
        except OSError as exc:
            raise RunDirError(f"cannot create a run directory under output.dir = {cfg.output.dir!r}: "
                              f"{exc.strerror or exc}; choose a writable folder with --out") from None
        write_config(run_dir, to_toml_dict(cfg))
        checkpoint, rows, summary = None, [], {}
    else:
        run_dir = Path(resume)
        checkpoint, rows, summary = prepare_resume(run_dir)
    summary.update({
        "status": "running",
        "rounds": rows[-1]["round"] if rows else 0,
        "seed": cfg.seed,
        "engine": cfg.engine.name,
        "device": str(run_device(cfg)),
        "started_at": summary.get("started_at", datetime.now(UTC).isoformat()),
        "versions": versions(),
        "git": git_hash(),
    })
    if resume is not None:
        for stale in ("error", "logger_errors"):  # what went wrong in the earlier attempt no longer holds
            summary.pop(stale, None)
        summary["resumed"] = int(summary.get("resumed", 0)) + 1
        summary["resumed_from_round"] = checkpoint.round if checkpoint is not None else 0
    write_summary(run_dir, summary)
    return run_dir, checkpoint, rows, summary


def _run_engine(experiment: Experiment, loop: RoundLoop) -> Outcome:
    """The loop's ServerApp on the configured engine, with the run's ClientApp."""
    cfg, app = experiment.config, LoopApp(loop)
    if cfg.engine.name == "inline":
        side = experiment.ue
        trainer = BatchTrainer(experiment.workload, side.lr, side.strategy) if cfg.engine.batched else None
        run_inline(app.app, make_client_app(lambda _text: side), experiment.num_ues, trainer)
    else:
        run_ray(app.app, client_app, experiment.num_ues, cfg.engine)
    if app.outcome is None:
        raise RuntimeError("the ServerApp ended without running the rounds")
    return app.outcome


@contextlib.contextmanager
def _stop_on_ctrl_c(stop: threading.Event) -> Iterator[None]:
    """First Ctrl-C: finish the current round, then stop cleanly (Ray is shut down, the summary
    says "interrupted", `--resume` continues). A second Ctrl-C aborts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        stop.set()
        signal.signal(signal.SIGINT, previous)
        print("\nstopping after this round (Ctrl-C again to abort)", file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def count_faults(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals for summary.json: failed UE replies, injected faults by kind, retried messages."""
    failures = sum(int(r.get("failures", 0) or 0) for r in rows)
    injected: dict[str, int] = {}
    retried = 0
    for r in rows:
        for kind, ues in (r.get("injected") or {}).items():
            injected[kind] = injected.get(kind, 0) + len(ues)
        retried += len(r.get("retried_ues") or [])
    out: dict[str, Any] = {"failures_total": failures}
    if injected:
        out["faults"] = injected
    if retried:
        out["retried_total"] = retried
    return out


def final_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The last value of every metric (a metric need not be present on every round)."""
    final: dict[str, Any] = {}
    for row in rows:
        for k, v in row.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                final[k] = v
    return final
