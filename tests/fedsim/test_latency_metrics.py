"""The predictor's metrics (``scipy.stats`` Kendall τ-b and Spearman ρ, MAPE) against brute-force
definitions written out here: τ-b from counting concordant/discordant pairs, ρ as the Pearson
correlation of average ranks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fedsim.workloads.latency.metrics import ranking_metrics


def _tau_b(x, y) -> float:
    con = dis = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            tx += 1
        elif dy == 0:
            ty += 1
        elif dx == dy:
            con += 1
        else:
            dis += 1
    return (con - dis) / math.sqrt((con + dis + tx) * (con + dis + ty))


def _avg_ranks(v) -> np.ndarray:
    return np.array([np.sum(v < a) + (np.sum(v == a) + 1) / 2 for a in v])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    true = rng.uniform(0.3, 10.0, 40).round(1)  # rounding makes ties
    pred = (true * rng.lognormal(0, 0.3, 40)).round(1)
    got = ranking_metrics(pred, true)
    assert got["kendall"] == pytest.approx(_tau_b(pred, true), abs=1e-12)
    assert got["spearman"] == pytest.approx(np.corrcoef(_avg_ranks(pred), _avg_ranks(true))[0, 1], abs=1e-12)
    assert got["mape"] == pytest.approx(sum(abs(p - t) / t for p, t in zip(pred, true, strict=True)) / 40, abs=1e-12)


def test_perfect_and_reversed_rankings() -> None:
    true = np.array([1.0, 2.0, 3.0, 4.0])
    assert ranking_metrics(2 * true, true) == pytest.approx({"kendall": 1.0, "spearman": 1.0, "mape": 1.0})
    rev = ranking_metrics(true[::-1].copy(), true)
    assert rev["kendall"] == pytest.approx(-1.0) and rev["spearman"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="equal 1-D"):
        ranking_metrics(true, true[:3])
