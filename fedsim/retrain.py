"""After an architecture search: derive the discrete architecture, report what it costs, and
retrain it federatedly from scratch.

A search workload (``nas-*``) offers ``search_result(w)`` and ``retrain_config(arch)``. When its
run completes, the runner calls :func:`finish_search`: the architecture is derived from the final
model (server-free: the virtual average w̄ = Σ q_m w_m), written to ``architecture.json``, and a
second run trains it from scratch with the same strategy, channel and seed for
``workload.retrain_rounds`` rounds (None = the search's rounds, 0 = skip) in
``RUN_DIR/retrain-*/``. ``summary.json["search"]`` holds the architecture, its parameters, FLOPs
and measured latency, and the retrained run's status and final metrics. A retraining that is
interrupted can be finished with ``fedsim run --resume RUN_DIR/retrain-*``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from fedsim.config import ExperimentConfig, to_toml_dict, validate
from fedsim.results.rundir import atomic_write_text
from fedsim.runtime.execute import RunResult, execute
from strategies import HeldModels


def is_search(cfg: ExperimentConfig, workload: Any) -> bool:
    """Whether ``cfg`` runs an architecture search (not a fixed-architecture retraining)."""
    return hasattr(workload, "search_result") and getattr(cfg.workload, "arch", None) is None


def final_model(workload: Any, final: HeldModels) -> torch.Tensor:
    """The run's final model: the global model, or for UE-held models their q-weighted average."""
    if final.holders is None:
        return final.models[0].cpu()
    W = final.models.cpu()
    q = workload.ue_weights()[final.holders].to(torch.float64)
    return (q / q.sum()).to(W.dtype) @ W


def retrain_experiment(cfg: ExperimentConfig, workload: Any, arch: dict[str, Any], run_dir: Path,
                       rounds: int) -> ExperimentConfig:
    """The experiment that trains ``arch`` from scratch: everything as in ``cfg`` except the
    workload (fixed ``arch``), the rounds, the name and the output folder (inside ``run_dir``)."""
    data = to_toml_dict(cfg)
    wl = dict(workload.retrain_config(arch))
    wl.pop("total_steps", None)
    data.update(workload=wl, rounds=rounds, name=f"{cfg.name}-retrain"[:80], sweep={})
    data["output"] = {**data.get("output", {}), "dir": str(run_dir)}
    data["output"].pop("run_name", None)  # a sweep variant's id: retrain folders are NAME-retrain-<stamp>
    return validate(data, f"{run_dir}/config.toml (retraining)")


def finish_search(run: RunResult, *, quiet: bool) -> dict[str, Any]:
    """Derive, record and retrain; returns the ``search`` section of the summary. A failed
    retraining raises :class:`RetrainFailed` carrying what was found."""
    cfg, run_dir, workload = run.experiment.config, run.run_dir, run.experiment.cpu_workload
    found = workload.search_result(final_model(workload, run.final))
    _write(run_dir, found)
    rounds = cfg.workload.retrain_rounds
    rounds = cfg.rounds if rounds is None else int(rounds)
    if rounds == 0:
        return found
    retrain_cfg = retrain_experiment(cfg, workload, found["architecture"], run_dir, rounds)
    if not quiet:
        print(f"retraining the found architecture from scratch for {rounds} rounds", flush=True)
    found["retrain"] = {"rounds": rounds, "status": "running"}
    try:
        retrained = execute(retrain_cfg, quiet=quiet)
    except BaseException as exc:  # the retraining's preflight
        retrained = None
        error: BaseException | None = exc
    else:
        error = retrained.error
    if error is not None:
        found["retrain"].update(status="failed", error=str(error) or type(error).__name__)
        _write(run_dir, found)
        raise RetrainFailed(found, error) from error
    retrain_dir = retrained.run_dir
    summary = json.loads((retrain_dir / "summary.json").read_text(encoding="utf-8"))
    final = summary.get("final", {})
    found["retrain"] = {
        "rounds": rounds,
        "run_dir": retrain_dir.name,
        "status": summary.get("status"),
        "final": {k: final[k] for k in ("loss", "accuracy", "train_loss") if k in final},
    }
    _write(run_dir, found)
    return found


def _write(run_dir: Path, found: dict[str, Any]) -> None:
    """``architecture.json``: the search's result (and, once run, the retraining's outcome)."""
    atomic_write_text(run_dir / "architecture.json", json.dumps(found, indent=2, sort_keys=True) + "\n")


class RetrainFailed(Exception):
    """The retraining run failed or was interrupted; ``found`` is what the search produced."""

    def __init__(self, found: dict[str, Any], cause: BaseException) -> None:
        super().__init__(str(cause))
        self.found, self.cause = found, cause
