"""UE rewards of a finished candidate: the model read from the final checkpoint is the one the run
evaluated last (its pooled Dice equals summary.json's), and the reward is the data-weighted sum of
each UE's Dice on its own validation slices, recomputed here through the workload's Dice counts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedsim.config import read_toml, validate
from fedsim.runner import run_experiment
from fedsim.runtime.checkpoint import load_checkpoint
from fedsim.search.ue_reward import ue_rewards
from fedsim.workloads.registry import build_workload

TINY = {"rounds": 2, "eval_every": 1, "sweep": {}, "output": {"plot": False},
        "workload": {"num_ues": 3, "slices_per_ue": 6, "val_per_ue": 4, "test_per_site": 4, "filters": [4, 8],
                     "kernels": [3, 3], "pooling": ["max"], "batch_size": 6}}


@pytest.mark.slow
def test_ue_rewards_are_each_ues_validation_dice_of_the_final_model(tmp_path, one_thread):
    data = read_toml("seg_unet")
    data.update({k: v for k, v in TINY.items() if k != "workload"})
    data["workload"] = {**data["workload"], **TINY["workload"]}
    data["output"] = {**data.get("output", {}), "dir": str(tmp_path), "plot": False}
    cfg = validate(data)
    run_dir = run_experiment(cfg, quiet=True)
    r, q = ue_rewards(run_dir, "dice")
    acc, _ = ue_rewards(run_dir, "accuracy")
    wl = build_workload(cfg.workload, cfg.seed)
    cp = load_checkpoint(run_dir)
    w = cp.tensors[cp.meta["strategy"]["model"]["__tensor__"]]
    final = json.loads((run_dir / "summary.json").read_text())["final"]
    assert wl.evaluate(w)["dice"] == pytest.approx(final["dice"], abs=1e-12)  # the final model
    np.testing.assert_allclose(r, [wl.dice_scores(w, ue=k)["dice"] for k in range(3)], atol=1e-12)
    # pixel accuracy on each UE's own validation slices, by hand from the logits
    by_hand = []
    for k in range(3):
        x, y = wl.ue_validation_data(k)
        by_hand.append(float((wl.logits(w, x).argmax(1) == y).double().mean()))
    np.testing.assert_allclose(acc, by_hand, atol=1e-12)
    assert len(set(np.round(by_hand, 9))) == 3  # the UEs report different values
    np.testing.assert_allclose(q, wl.ue_weights().double().numpy())
