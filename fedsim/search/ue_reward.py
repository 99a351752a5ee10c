"""The UEs' own rewards of a finished candidate (``reward.source = "ue-validation"``).

Each UE k evaluates the run's final global model on its own validation data and reports
``r_k`` (for ``seg-unet``: its Dice ``val_dice``); the weights ``q_k`` are the UEs' data shares
(``workload.ue_weights()``). The run folder does not hold the final model: the runtime checkpoints
every ``checkpoint.every`` exchanges but never after the last one, so the last checkpoint (under
``strategy.model`` for the server strategies) is the model of an earlier round. The final model is
therefore rebuilt by resuming a copy of the run from that checkpoint in a temporary folder (the
rounds after it, one with ``checkpoint.every`` = 1) and checked to be the model the run evaluated
last (the copy's final metrics equal the run's). The run must keep a checkpoint (``checkpoint.every``
unset or dividing ``rounds``) and hold one global model (a server-based strategy without overlap).
The workload must offer ``evaluate_validation(w, ue)``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsim.config import validate
from fedsim.errors import ConfigError, FedsimError
from fedsim.runtime.checkpoint import load_checkpoint
from fedsim.workloads.registry import build_workload

__all__ = ["check_ue_validation", "final_global_model", "ue_rewards"]


def check_ue_validation(workload: Any, what: str) -> None:
    """ConfigError unless ``workload`` can evaluate a model on one UE's validation data."""
    if not callable(getattr(workload, "evaluate_validation", None)):
        raise ConfigError(f"{what}: reward.source = 'ue-validation' needs a workload with per-UE validation data "
                          f"({type(workload).__name__} has none); use reward.source = 'pooled'")


def final_global_model(run_dir: Path) -> torch.Tensor:
    """The global model ``[d]`` after the run's last round, rebuilt from its last checkpoint by
    resuming a copy of the run (ConfigError if there is no checkpoint of a global model, or if the
    replay does not end with the run's own final metrics)."""
    from fedsim.runner import run_experiment

    run_dir = Path(run_dir)
    cfg = validate(tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8")), str(run_dir))
    cp = load_checkpoint(run_dir)
    ref = (cp.meta.get("strategy") or {}).get("model") if cp is not None else None
    if cp is None or not isinstance(ref, dict):
        raise ConfigError(f"{run_dir}: no checkpoint of a global model (needs a server-based strategy and "
                          "checkpoint.every unset or dividing rounds) for reward.source = 'ue-validation'")
    final = json.loads((run_dir / "summary.json").read_text(encoding="utf-8")).get("final", {})
    with tempfile.TemporaryDirectory(prefix="fedsim-ue-reward-") as tmp:
        copy = Path(tmp) / run_dir.name
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("figures"))
        summary = json.loads((copy / "summary.json").read_text(encoding="utf-8"))
        (copy / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}), encoding="utf-8")
        result: dict[str, Any] = {}
        cfg.output.dir, cfg.output.plot, cfg.output.loggers = tmp, False, []
        try:
            run_experiment(cfg, quiet=True, plot=False, result=result, resume=copy)
        except FedsimError as exc:
            raise ConfigError(f"{run_dir}: resuming the run from its last checkpoint failed: {exc}") from None
        replay = json.loads((copy / "summary.json").read_text(encoding="utf-8")).get("final", {})
    # the model's own measurements (the simulated clock and energies are not the model's)
    keys = [k for k in final if k in ("round", "loss", "train_loss", "accuracy") or k.startswith("dice")]
    if "final_model" not in result or not keys or any(replay.get(k) != final[k] for k in keys):
        raise ConfigError(f"{run_dir}: resuming the run from its last checkpoint did not reproduce its final "
                          "metrics; cannot rebuild the final model for reward.source = 'ue-validation'")
    return result["final_model"]


def ue_rewards(run_dir: Path, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``(r, q)``: every UE's ``val_<metric>`` of the final model and the UEs' data shares."""
    cfg = validate(tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8")), str(run_dir))
    w = final_global_model(run_dir)
    workload = build_workload(cfg.workload, cfg.seed)
    check_ue_validation(workload, str(run_dir))
    values = np.array([workload.evaluate_validation(w, k)[f"val_{metric}"] for k in range(workload.num_ues)])
    return values, workload.ue_weights().double().numpy()
