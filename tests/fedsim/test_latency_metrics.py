"""The predictor's metrics (``scipy.stats`` Kendall τ-b and Spearman ρ, MAPE) against brute-force
definitions written out here: τ-b from counting concordant/discordant pairs, ρ as the Pearson
correlation of average ranks; the MAPE-optimal scale against hand-worked examples and against an
exhaustive search over the breakpoints of the piecewise-linear MAPE."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fedsim.workloads.latency.metrics import mape_optimal_scale, ranking_metrics


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


def _mape(s: float, pred, true) -> float:
    return float(np.mean(np.abs(s * np.asarray(pred) / np.asarray(true) - 1)))


def test_mape_optimal_scale_hand_examples() -> None:
    # pred 1 everywhere, true 1, 1.5, 3, 4: Σ|s/t - 1| is 1.75 at s = 1, 1.625 at s = 1.5 and 2.4375 at
    # the plain median of the ratios, 2.25; the weighted median (weights 1, 2/3, 1/3, 1/4) is 1.5
    assert mape_optimal_scale(np.ones(4), np.array([1.0, 1.5, 3.0, 4.0])) == 1.5
    assert _mape(1.5, np.ones(4), [1, 1.5, 3, 4]) == pytest.approx(1.625 / 4)
    # pred 2, 1, 4 against true 1, 3, 4: ratios 0.5, 3, 1 weighted 2, 1/3, 1; f(0.5) = 0 + 5/6 + 1/2 = 4/3,
    # f(1) = 1 + 2/3 + 0 = 5/3, f(0.4) = 0.2 + 13/15 + 0.6 = 5/3
    assert mape_optimal_scale(np.array([2.0, 1.0, 4.0]), np.array([1.0, 3.0, 4.0])) == 0.5
    with pytest.raises(ValueError, match="positive"):
        mape_optimal_scale(np.array([1.0, -1.0]), np.ones(2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mape_optimal_scale_is_the_best_breakpoint(seed: int) -> None:
    # the MAPE of s × pred is piecewise linear and convex in s with kinks at the ratios true/pred, so its
    # minimum over s > 0 is the smallest value over those ratios
    rng = np.random.default_rng(seed)
    true = rng.uniform(0.2, 20.0, 15)
    pred = true * rng.lognormal(0.3, 0.4, 15)
    s = mape_optimal_scale(pred, true)
    best = min(_mape(r, pred, true) for r in true / pred)
    assert _mape(s, pred, true) == pytest.approx(best, abs=1e-12)
    assert _mape(s, pred, true) < _mape(float(np.exp(np.mean(np.log(true / pred)))), pred, true)
