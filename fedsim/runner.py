"""Run one experiment as a user asks for it: the run (:func:`fedsim.runtime.execute.execute`) and,
for an architecture search, the derivation and retraining of what it found
(:mod:`fedsim.retrain`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedsim.config import ExperimentConfig
from fedsim.results.rundir import write_summary
from fedsim.retrain import RetrainFailed, finish_search, is_search
from fedsim.runtime.execute import RunResult, execute


def run_experiment(cfg: ExperimentConfig, *, quiet: bool = False, plot: bool | None = None,
                   result: dict[str, Any] | None = None, resume: Path | None = None) -> Path:
    """Run ``cfg`` and return its run directory; the run's error, if any, is re-raised after the
    summary is written. ``result`` (optional) receives the final model(s): ``final_model``
    ``[d]`` (server-based) or ``final_models`` {ue: ``[d]``} (UE-held). ``resume``: an existing
    run directory of ``cfg`` to continue from its last checkpoint."""
    run = execute(cfg, quiet=quiet, plot=plot, resume=resume)
    if result is not None and run.final is not None:
        if run.final.holders is None:
            result["final_model"] = run.final.models[0].cpu()
        else:
            result["final_models"] = run.final.as_dict()
    error = run.error
    if error is None and run.summary.get("status") == "completed":
        error = _finish_search(run, quiet)
    if error is not None:
        raise error
    return run.run_dir


def _finish_search(run: RunResult, quiet: bool) -> BaseException | None:
    """Architecture searches: derive the architecture and retrain it. Returns the retraining's
    exception, if any, after recording it in the summary."""
    cfg = run.experiment.config
    if not is_search(cfg, run.experiment.workload):
        return None
    error = None
    try:
        run.summary["search"] = finish_search(run, quiet=quiet)
    except RetrainFailed as exc:
        run.summary["search"], error = exc.found, exc.cause
    write_summary(run.run_dir, run.summary)
    return error
