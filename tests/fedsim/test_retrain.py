"""The search -> derive -> retrain phase the runner adds to architecture searches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedsim.config import apply_overrides, load_experiment, validate
from fedsim.report import build_report
from fedsim.results.rundir import load_run
from fedsim.retrain import final_model
from fedsim.runner import run_experiment
from fedsim.workloads import build_workload, parse_workload_config
from strategies import HeldModels


def _cfg(tmp_path: Path, *extra: str):
    return validate(apply_overrides({}, [
        "engine.name='inline'", "output.plot=false", f"output.dir={str(tmp_path)!r}", "checkpoint.every=0",
        "workload={name='nas-tabnas', num_ues=3}", "rounds=3", *extra,
    ]))


def test_search_then_retrain_records_architecture_cost_and_retrained_metrics(tmp_path: Path) -> None:
    run_dir = run_experiment(_cfg(tmp_path, "workload.retrain_rounds=2"), quiet=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    found = summary["search"]
    assert summary["status"] == "completed"
    assert json.loads((run_dir / "architecture.json").read_text()) == found
    arch = found["architecture"]
    widths = [60, *(arch[f"layer{i}"] for i in range(3)), 10]  # 3 hidden layers, Synthetic(1, 1): 60 -> 10
    params = sum((a + 1) * b for a, b in zip(widths, widths[1:], strict=False))  # weights + biases, by hand
    assert found["resources"]["params"] == params <= 3000  # the default budget T0
    assert found["resources"]["flops"] > 0 and found["resources"]["latency_ms"] > 0
    re = found["retrain"]
    assert re["status"] == "completed" and re["rounds"] == 2 and 0 <= re["final"]["accuracy"] <= 1
    retrain = load_run(run_dir / re["run_dir"])
    child = build_workload(parse_workload_config(retrain.config["workload"]), 0)
    assert child.dim == params  # retrained from scratch: round 0 is the child's own initial model
    assert retrain.metrics[0]["loss"] == pytest.approx(child.evaluate(child.init_params())["loss"], rel=1e-6)
    # the retraining run trains exactly the found architecture from scratch, everything else as searched
    assert retrain.config["workload"]["arch"] == found["architecture"]
    assert retrain.config["rounds"] == 2 and [r["round"] for r in retrain.metrics] == [0, 1, 2]
    assert retrain.config["strategy"] == load_run(run_dir).config["strategy"]
    assert retrain.metrics[-1]["accuracy"] == re["final"]["accuracy"]
    again = load_experiment(run_dir / re["run_dir"] / "config.toml")  # a valid experiment on its own
    assert again.workload.arch == found["architecture"] and again.workload.retrain_rounds == 0
    report = build_report([run_dir]).read_text()
    assert "## Architecture search" in report and str(found["resources"]["params"]) in report


def test_retrain_rounds_zero_skips_retraining_and_fixed_arch_is_not_a_search(tmp_path: Path) -> None:
    run_dir = run_experiment(_cfg(tmp_path, "workload.retrain_rounds=0"), quiet=True)
    found = json.loads((run_dir / "summary.json").read_text())["search"]
    assert "retrain" not in found and not list(run_dir.glob("retrain-*"))
    table = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in found["architecture"].items())
    fixed = run_experiment(_cfg(tmp_path, f"workload.arch={{{table}}}",
                                "name='fixed'"), quiet=True)
    assert "search" not in json.loads((fixed / "summary.json").read_text())


def test_retrain_defaults_to_the_search_rounds_and_runs_server_free(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "strategy.name='serverfree-relay'", "strategy.transmit='update'", "rounds=2")
    run_dir = run_experiment(cfg, quiet=True)
    re = json.loads((run_dir / "summary.json").read_text())["search"]["retrain"]
    assert re["rounds"] == 2 and re["status"] == "completed"
    retrain = load_run(run_dir / re["run_dir"])
    assert [r["round"] for r in retrain.metrics] == [0, 1, 2]
    assert retrain.config["strategy"]["name"] == "serverfree-relay"
    for r in retrain.metrics[1:]:  # the headline is the median UE model
        assert r["ue_accuracy_min"] <= r["accuracy"] <= r["ue_accuracy_max"]


def test_retrained_child_beats_chance_on_digits(tmp_path: Path) -> None:
    """GDAS on sklearn's digits (10 balanced classes), then 8 retraining rounds of 10 SGD steps from
    scratch: the child must beat the best constant guess (the majority class share of the test
    labels, 0.14) by 0.3, and beat its own untrained start."""
    cfg = validate(apply_overrides({}, [
        "engine.name='inline'", "output.plot=false", f"output.dir={str(tmp_path)!r}", "checkpoint.every=0",
        "workload={name='nas-gdas', num_ues=3, channels=4, cells=1, retrain_rounds=8}", "rounds=3",
        "train.local_steps=10", "train.lr.eta=0.2", "seed=0"]))
    run_dir = run_experiment(cfg, quiet=True)
    re = json.loads((run_dir / "summary.json").read_text())["search"]["retrain"]
    retrain = load_run(run_dir / re["run_dir"])
    child = build_workload(parse_workload_config(retrain.config["workload"]), cfg.seed)
    y = child.data.y_test
    majority = float(torch.bincount(y).max()) / len(y)
    assert majority < 0.15  # digits: nearly balanced classes (1/10 each), 359 test images
    acc = re["final"]["accuracy"]
    assert acc > max(majority, 1 / 10) + 0.3, (acc, majority)
    assert acc > retrain.metrics[0]["accuracy"] + 0.3


class _Weights:
    def ue_weights(self) -> torch.Tensor:
        return torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)


def test_final_model_is_global_model_or_virtual_average() -> None:
    w = torch.arange(3.0)
    assert torch.equal(final_model(_Weights(), HeldModels(w.unsqueeze(0))), w)
    models = HeldModels(torch.tensor([[4.0], [0.0], [8.0]]), [0, 1, 2])
    assert final_model(_Weights(), models).item() == pytest.approx(0.5 * 4 + 0.25 * 8)
    # UEs that never reported are left out and the weights renormalised
    two = HeldModels(torch.tensor([[0.0], [8.0]]), [1, 2])
    assert final_model(_Weights(), two).item() == 4.0


def test_sweep_table_carries_each_variants_retrained_accuracy(tmp_path: Path) -> None:
    from fedsim.sweep import base_config, expand_sweep, read_index, run_sweep, sweep_table

    data = {"rounds": 2, "engine": {"name": "inline"}, "output": {"plot": False, "dir": str(tmp_path)},
            "checkpoint": {"every": 0}, "workload": {"name": "nas-tabnas", "num_ues": 3, "retrain_rounds": 1},
            "sweep": {"workload.search_strategy": ["reinforce", "random"]}}
    sweep_dir = run_sweep(expand_sweep(data, []), base_config(data, []), quiet=True, plot=False)
    rows = sweep_table(sweep_dir)
    entries = read_index(sweep_dir)["variants"]
    assert len(rows) == len(entries) == 2
    for row, entry in zip(rows, entries, strict=True):
        summary = json.loads((Path(sweep_dir) / entry["run_dir"] / "summary.json").read_text())
        assert row["retrained_accuracy"] == summary["search"]["retrain"]["final"]["accuracy"]
        assert row["retrained_accuracy"] is not None
