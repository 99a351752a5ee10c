"""The shipped seg_unet experiment at a tiny size: federated training through the runner learns to
segment (mean foreground Dice on the pooled test set from ~0 to above a threshold), and the logged
metrics are the workload's own evaluation of the final model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedsim.config import EXPERIMENTS_DIR, read_toml
from fedsim.results.rundir import load_run
from fedsim.runner import run_experiment
from fedsim.sweep import expand_sweep
from fedsim.workloads import build_workload

pytestmark = pytest.mark.usefixtures("one_thread")

#: the tiny run: 3 UEs, 16 slices each, 12 rounds x 5 Adam steps (measured: Dice 0.00 -> 0.67, seed 0)
TINY = ["sweep={}", "rounds=12", "eval_every=12", "workload.num_ues=3", "workload.slices_per_ue=16",
        "workload.test_per_site=8", "workload.batch_size=8", "workload.filters=[8, 16, 32]"]
DICE_AFTER = 0.5  # threshold on the final mean foreground Dice


def test_tiny_federated_run_learns_to_segment(tmp_path: Path) -> None:
    ov = [*TINY, "engine.name='inline'", "output.plot=false", f"output.dir={str(tmp_path)!r}", "checkpoint.every=0"]
    cfg = expand_sweep(read_toml(EXPERIMENTS_DIR / "seg_unet.toml"), ov, source="seg_unet")[0].config
    res: dict = {}
    run = load_run(run_experiment(cfg, quiet=True, plot=False, result=res))
    assert run.summary["status"] == "completed"
    first, last = run.metrics[0], run.metrics[-1]
    assert first["round"] == 0 and last["round"] == 12
    assert first["dice"] < 0.05 and last["dice"] > DICE_AFTER, (first["dice"], last["dice"])
    assert min(last[k] for k in ("dice_lv", "dice_myo", "dice_rv")) > 0.3
    wl = build_workload(cfg.workload, cfg.seed)
    scores = wl.dice_scores(res["final_model"].to(torch.float32))
    for k, v in scores.items():
        assert last[k] == pytest.approx(v, abs=1e-6)
    assert 0 <= wl.dice_scores(res["final_model"], ue=0)["dice"] <= 1
