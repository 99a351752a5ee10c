"""The UEs' own rewards of a finished candidate (``reward.source = "ue-validation"``).

Each UE k evaluates the run's final global model on its own validation data and reports
``r_k`` (for ``seg-unet``: its Dice ``val_dice``); the weights ``q_k`` are the UEs' data shares
(``workload.ue_weights()``). The final model is read from the run's last checkpoint (the server
strategies keep it under ``strategy.model``), so the run must checkpoint its last round
(``checkpoint.every`` unset or dividing ``rounds``) and hold one global model (a server-based
strategy without overlap). The workload must offer ``evaluate_validation(w, ue)``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.config import validate
from fedsim.errors import ConfigError
from fedsim.runtime.checkpoint import load_checkpoint
from fedsim.workloads.registry import build_workload

__all__ = ["check_ue_validation", "ue_rewards"]


def check_ue_validation(workload: Any, what: str) -> None:
    """ConfigError unless ``workload`` can evaluate a model on one UE's validation data."""
    if not callable(getattr(workload, "evaluate_validation", None)):
        raise ConfigError(f"{what}: reward.source = 'ue-validation' needs a workload with per-UE validation data "
                          f"({type(workload).__name__} has none); use reward.source = 'pooled'")


def ue_rewards(run_dir: Path, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``(r, q)``: every UE's ``val_<metric>`` of the final model and the UEs' data shares."""
    cfg = validate(tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8")), str(run_dir))
    cp = load_checkpoint(run_dir)
    ref = (cp.meta.get("strategy") or {}).get("model") if cp is not None else None
    if cp is None or cp.meta.get("next_round") != cfg.rounds or not isinstance(ref, dict):
        raise ConfigError(f"{run_dir}: no checkpoint of the final global model (needs a server-based strategy and "
                          "checkpoint.every unset or dividing rounds) for reward.source = 'ue-validation'")
    w = cp.tensors[ref["__tensor__"]]
    workload = build_workload(cfg.workload, cfg.seed)
    check_ue_validation(workload, str(run_dir))
    values = np.array([workload.evaluate_validation(w, k)[f"val_{metric}"] for k in range(workload.num_ues)])
    return values, workload.ue_weights().double().numpy()
