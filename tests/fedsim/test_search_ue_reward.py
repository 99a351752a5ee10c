"""UE rewards of a finished candidate: they are measured on the model the run ended with (the runner
hands it over, and its pooled loss equals summary.json's), not on the last checkpoint's model (the
runtime does not checkpoint the last round), and the reward is the data-weighted sum of each UE's
Dice on its own validation slices, recomputed here through the workload's Dice counts. Rebuilding
the final model leaves the candidate's run folder as it was."""

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
    out: dict = {}
    run_dir = run_experiment(cfg, quiet=True, result=out)
    files = {f: (run_dir / f).read_bytes() for f in ("metrics.jsonl", "summary.json")}
    r, q = ue_rewards(run_dir, "dice")
    acc, _ = ue_rewards(run_dir, "accuracy")
    loss, _ = ue_rewards(run_dir, "loss")
    assert files == {f: (run_dir / f).read_bytes() for f in files}  # the run folder is untouched
    wl = build_workload(cfg.workload, cfg.seed)
    w = out["final_model"]  # the model the run ended with
    final = json.loads((run_dir / "summary.json").read_text())["final"]
    assert wl.evaluate(w)["loss"] == pytest.approx(final["loss"], abs=1e-12)
    cp = load_checkpoint(run_dir)  # the last checkpoint is an earlier round's model
    assert wl.evaluate(cp.tensors[cp.meta["strategy"]["model"]["__tensor__"]])["loss"] != pytest.approx(final["loss"])
    np.testing.assert_allclose(loss, [wl.evaluate_validation(w, k)["val_loss"] for k in range(3)], rtol=0, atol=1e-9)
    np.testing.assert_allclose(r, [wl.dice_scores(w, ue=k)["dice"] for k in range(3)], atol=1e-12)
    # pixel accuracy on each UE's own validation slices, by hand from the logits
    by_hand = []
    for k in range(3):
        x, y = wl.ue_validation_data(k)
        by_hand.append(float((wl.logits(w, x).argmax(1) == y).double().mean()))
    np.testing.assert_allclose(acc, by_hand, atol=1e-12)
    assert len(set(np.round(by_hand, 9))) == 3  # the UEs report different values
    np.testing.assert_allclose(q, wl.ue_weights().double().numpy())
