"""Scale: 1,000 UEs server-free on the inline engine (slow; listed in docs/testing.md)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from fedsim.config import apply_overrides, validate
from fedsim.results.rundir import load_run
from fedsim.runner import run_experiment


@pytest.mark.slow
def test_thousand_ues_serverfree_completes(tmp_path: Path) -> None:
    cfg = validate(apply_overrides({}, [
        "engine.name='inline'", "output.plot=false", f"output.dir={str(tmp_path)!r}",
        "workload={name='synthetic-logreg', num_ues=1000, batch_size=0}", "rounds=20",
        "strategy.name='serverfree-relay'", "checkpoint.every=0",
        "channel.interference='gaussian'", "channel.scale=0.5",
    ]))
    run_dir = run_experiment(cfg, quiet=True)
    rows = load_run(run_dir).metrics
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert [r["round"] for r in rows] == list(range(21))
    assert rows[-1]["reported_ues"] == 1000 and rows[-1]["ue_metrics_sample"] == 32
    gaps = [r["gap"] for r in rows]
    # full-batch steps on a convex loss with the channel noise averaged over 1000 UEs: steady descent
    assert all(b < a for a, b in zip(gaps, gaps[1:], strict=False)) and gaps[-1] < 0.7 * gaps[0]


class _NormWorkload:
    """Metric = the model's first coordinate, so which models were evaluated is visible."""

    device = torch.device("cpu")

    def evaluate(self, w):
        return {"loss": float(w[0])}

    def evaluate_many(self, W):
        return [{"loss": float(w[0])} for w in W]


def test_evaluation_sample_keeps_the_virtual_average_exact() -> None:
    """UE i holds a model whose loss is i. The headline loss is the median over the UEs' models (over
    a seeded sample of them when asked); the virtual average and consensus always use every UE."""
    from fedsim.runtime.evaluation import evaluate_population

    models = {u: torch.tensor([float(u), 1.0]) for u in range(100)}
    weights = torch.ones(100)
    full = evaluate_population(_NormWorkload(), models, weights)
    sampled = evaluate_population(_NormWorkload(), models, weights, sample=10, seed=3, round=5)
    assert sampled["avg_loss"] == full["avg_loss"] == pytest.approx(49.5)  # the average model: mean of the losses
    assert sampled["consensus"] == full["consensus"] and sampled["reported_ues"] == 100
    assert full["loss"] == pytest.approx(49.5)  # median of 0..99
    assert (full["ue_loss_min"], full["ue_loss_p10"], full["ue_loss_p90"], full["ue_loss_max"]) == pytest.approx(
        (0.0, 9.9, 89.1, 99.0))
    assert "ue_metrics_sample" not in full and sampled["ue_metrics_sample"] == 10
    # the sample: 10 distinct UEs, reproducible for (seed, round), new per round
    again = evaluate_population(_NormWorkload(), models, weights, sample=10, seed=3, round=5)
    other = evaluate_population(_NormWorkload(), models, weights, sample=10, seed=3, round=6)
    assert again["loss"] == sampled["loss"] and again["ue_loss_max"] == sampled["ue_loss_max"]
    assert (other["ue_loss_min"], other["ue_loss_max"]) != (sampled["ue_loss_min"], sampled["ue_loss_max"])
    assert sampled["ue_loss_max"] - sampled["ue_loss_min"] < 99


def test_held_models_in_ue_order_are_evaluated_as_stacked() -> None:
    """evaluate_held takes UE-ordered held models as they are (no per-UE restack): the row equals
    evaluate_population's on the same models, bit for bit; any other order goes through the dict."""
    from fedsim.runtime.evaluation import evaluate_held, evaluate_population
    from fedsim.workloads.synthetic import SyntheticLogreg, SyntheticLogregConfig
    from strategies import HeldModels

    wl = SyntheticLogreg(SyntheticLogregConfig(num_ues=12), 0)
    W = wl.w_star + 0.1 * torch.randn(12, wl.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for holders in ([0, 2, 3, 5, 8, 9, 11], [5, 0, 2, 11, 3, 9, 8]):
        held = HeldModels(W[holders].clone(), list(holders))
        ref = evaluate_population(wl, held.as_dict(), wl.ue_weights(), sample=4, seed=2, round=3)
        assert evaluate_held(wl, held, sample=4, seed=2, round=3) == ref


def test_spread_is_the_quantiles_of_each_metric_by_hand() -> None:
    """Eleven UE models with loss 0..10 and accuracy 10..0: min, p10, median, p90 and max by
    numpy's linear rule (p10 of 0..10 is 1); a metric a model lacks is spread over the others; a
    NaN makes that metric's spread NaN; booleans and strings are not metrics."""
    from fedsim.runtime.evaluation import spread

    per_ue = [{"loss": float(v), "accuracy": 10.0 - v, "flag": True, "name": "x"} for v in range(11)]
    out = spread(per_ue)
    assert [out[k] for k in ("ue_loss_min", "ue_loss_p10", "loss", "ue_loss_p90", "ue_loss_max")] == [
        0.0, 1.0, 5.0, 9.0, 10.0]
    assert [out[k] for k in ("ue_accuracy_min", "ue_accuracy_p10", "accuracy", "ue_accuracy_max")] == [
        0.0, 1.0, 5.0, 10.0]
    assert not any("flag" in k or "name" in k for k in out)
    del per_ue[3]["accuracy"]  # accuracies left: 0..10 without 7
    per_ue[0]["loss"] = float("nan")
    out = spread(per_ue)
    assert (out["ue_accuracy_p10"], out["accuracy"], out["ue_accuracy_p90"]) == pytest.approx((0.9, 4.5, 9.1))
    assert math.isnan(out["loss"]) and math.isnan(out["ue_loss_max"])
