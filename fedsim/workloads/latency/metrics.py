"""Ranking and error metrics of a latency predictor: Kendall τ-b and Spearman ρ from ``scipy.stats``
and the mean absolute percentage error, with the scale that minimises it."""

from __future__ import annotations

import numpy as np
from scipy import stats


def ranking_metrics(pred_ms: np.ndarray, true_ms: np.ndarray) -> dict[str, float]:
    """``kendall`` (τ-b), ``spearman`` and ``mape`` (mean |pred/true − 1|, a fraction, not %)
    of predictions ``pred_ms [A]`` against measurements ``true_ms [A]``."""
    pred, true = np.asarray(pred_ms, dtype=np.float64), np.asarray(true_ms, dtype=np.float64)
    if pred.shape != true.shape or pred.ndim != 1 or len(pred) < 2:
        raise ValueError(f"need two equal 1-D arrays of at least 2 values, got {pred.shape} and {true.shape}")
    return {
        "kendall": float(stats.kendalltau(pred, true).statistic),
        "spearman": float(stats.spearmanr(pred, true).statistic),
        "mape": float(np.mean(np.abs(pred / true - 1.0))),
    }


def mape_optimal_scale(pred_ms: np.ndarray, true_ms: np.ndarray) -> float:
    """The multiplier s > 0 that minimises the MAPE of ``s × pred_ms`` against ``true_ms``.

    Σ_i |s p_i / t_i − 1| = Σ_i (p_i / t_i) |s − t_i / p_i| is a weighted sum of distances, so its
    minimiser is the weighted median of the ratios t_i / p_i with weights p_i / t_i: the smallest
    ratio at which the sorted weights' running sum reaches half of their total."""
    pred, true = np.asarray(pred_ms, dtype=np.float64), np.asarray(true_ms, dtype=np.float64)
    if pred.shape != true.shape or pred.ndim != 1 or len(pred) < 1 or not (pred > 0).all() or not (true > 0).all():
        raise ValueError(f"need two equal non-empty 1-D arrays of positive values, got {pred.shape} and {true.shape}")
    ratio, weight = true / pred, pred / true
    order = np.argsort(ratio, kind="stable")
    cum = np.cumsum(weight[order])
    return float(ratio[order][np.searchsorted(cum, cum[-1] / 2)])
