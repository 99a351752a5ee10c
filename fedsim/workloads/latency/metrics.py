"""Ranking and error metrics of a latency predictor: Kendall τ-b and Spearman ρ from ``scipy.stats``
and the mean absolute percentage error."""

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
