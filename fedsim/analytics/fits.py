"""Post-run statistics: rate fits, hitting times, seed quantiles, robust moments (model §6, §8;
§ numbers: docs/explanation/model.md).

Heavy-tailed runs jump (§8 item 16): nothing here averages raw curves across seeds. Seed
summaries are medians with quantiles or bootstrap intervals, and non-finite values are
dropped and counted, never silently propagated.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from .errors import AnalyticsError


@dataclass(frozen=True)
class LogLogFit:
    """``log y ≈ intercept + slope · log t``; CI is for the slope, at ``level``."""

    slope: float
    intercept: float
    ci_low: float
    ci_high: float
    stderr: float
    n: int
    level: float


def _window(t: NDArray, y: NDArray, t_min: float | None, t_max: float | None) -> NDArray:
    keep = np.isfinite(t) & np.isfinite(y) & (t > 0) & (y > 0)
    if t_min is not None:
        keep &= t >= t_min
    if t_max is not None:
        keep &= t <= t_max
    return keep


def loglog_fit(
    t: ArrayLike,
    y: ArrayLike,
    *,
    t_min: float | None = None,
    t_max: float | None = None,
    level: float = 0.95,
    n_log_points: int | None = None,
) -> LogLogFit:
    """Least-squares fit of ``log y`` on ``log t`` over ``t ∈ [t_min, t_max]``.

    Args:
        t: positive abscissae ``[T]`` (steps, rounds or seconds). y: curve ``[T]``.
        level: confidence level of the slope CI.
        n_log_points: if given, thin the window to about this many log-spaced points first,
            so that dense late samples do not dominate the fit (needs ``t`` ascending).

    Non-finite or non-positive points are skipped. The CI is t-based
    (``slope ± t_{n−2} · stderr``) and assumes independent residuals; residuals along one
    training curve are correlated, so treat a single-curve CI as optimistic and prefer
    :func:`seed_slopes` across seeds. Raises AnalyticsError (a ValueError) with fewer than 3
    usable points.
    """
    t = np.asarray(t, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if t.shape != y.shape or t.ndim != 1:
        raise AnalyticsError(f"t and y must be 1-D of equal length, got {t.shape} and {y.shape}")
    idx = np.flatnonzero(_window(t, y, t_min, t_max))
    if n_log_points is not None and idx.size > n_log_points:
        targets = np.geomspace(t[idx[0]], t[idx[-1]], n_log_points)
        idx = np.unique(idx[np.searchsorted(t[idx], targets).clip(0, idx.size - 1)])
    if idx.size < 3:
        raise AnalyticsError(f"need >= 3 finite positive points in the window, got {idx.size}")
    res = stats.linregress(np.log(t[idx]), np.log(y[idx]))
    half = stats.t.ppf(0.5 + level / 2.0, idx.size - 2) * res.stderr
    return LogLogFit(
        slope=float(res.slope),
        intercept=float(res.intercept),
        ci_low=float(res.slope - half),
        ci_high=float(res.slope + half),
        stderr=float(res.stderr),
        n=int(idx.size),
        level=level,
    )


@dataclass(frozen=True)
class SeedSlopes:
    """Per-seed log-log slopes and their median with a bootstrap percentile CI."""

    slopes: NDArray[np.float64]  # [S]; NaN where a seed had too few usable points
    median: float
    ci_low: float
    ci_high: float
    level: float
    n_failed: int
    theory: float | None

    @property
    def deviation(self) -> float | None:
        """median − theory (None without a theory exponent)."""
        return None if self.theory is None else self.median - self.theory

    @property
    def covers_theory(self) -> bool | None:
        """Whether the CI contains the theoretical exponent (None without a theory or a CI)."""
        if self.theory is None or not (np.isfinite(self.ci_low) and np.isfinite(self.ci_high)):
            return None
        return self.ci_low <= self.theory <= self.ci_high


def seed_slopes(
    t: ArrayLike,
    Y: ArrayLike,
    *,
    t_min: float | None = None,
    t_max: float | None = None,
    theory: float | None = None,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    n_log_points: int | None = None,
) -> SeedSlopes:
    """Fit each seed's curve (rows of ``Y``, ``[S, T]``) and summarise the slopes.

    Reports the **median** slope and a **bootstrap percentile CI of the median** (resampling
    seeds with replacement, ``n_boot`` draws from a generator seeded with ``seed``;
    :func:`scipy.stats.bootstrap`), next to an optional theoretical exponent (e.g. −(1 − 1/α)
    for the typical distance, §4.4). With S ≤ 5 seeds the interval is coarse, since a median of
    5 takes few distinct values. A single usable seed has no interval: ``ci_low`` and
    ``ci_high`` are NaN (and :attr:`SeedSlopes.covers_theory` is None).
    """
    Y = np.atleast_2d(np.asarray(Y, dtype=np.float64))
    slopes = np.full(Y.shape[0], np.nan)
    for s, row in enumerate(Y):
        try:
            slopes[s] = loglog_fit(
                t, row, t_min=t_min, t_max=t_max, n_log_points=n_log_points
            ).slope
        except AnalyticsError:
            pass  # counted in n_failed
    ok = slopes[np.isfinite(slopes)]
    if ok.size == 0:
        raise AnalyticsError("no seed had >= 3 finite positive points in the window")
    return SeedSlopes(
        slopes=slopes,
        median=float(np.median(ok)),
        **_median_ci(ok, level, n_boot, seed),
        level=level,
        n_failed=int(slopes.size - ok.size),
        theory=theory,
    )


def _median_ci(ok: NDArray[np.float64], level: float, n_boot: int, seed: int) -> dict[str, float]:
    """Percentile bootstrap CI of the median of ``ok`` (NaN for fewer than two values; a point
    when they are all equal, where the bootstrap distribution is a single value)."""
    if ok.size < 2:
        return {"ci_low": float("nan"), "ci_high": float("nan")}
    if np.ptp(ok) == 0:
        return {"ci_low": float(ok[0]), "ci_high": float(ok[0])}
    res = stats.bootstrap((ok,), np.median, n_resamples=n_boot, confidence_level=level, method="percentile",
                          rng=np.random.default_rng(seed))
    return {"ci_low": float(res.confidence_interval.low), "ci_high": float(res.confidence_interval.high)}


def running_median(y: ArrayLike, window: int) -> NDArray[np.float64]:
    """Trailing (causal) median over the last ``window`` points along the last axis.

    Causal, so a hitting time on the smoothed curve is one an online monitor could see.
    Non-finite values are ignored within a window; an all-non-finite window gives NaN.
    """
    y = np.asarray(y, dtype=np.float64)
    if window < 1:
        raise AnalyticsError(f"window must be >= 1, got {window}")
    y = np.where(np.isfinite(y), y, np.nan)
    pad = np.concatenate([np.full(y.shape[:-1] + (window - 1,), np.nan), y], axis=-1)
    win = np.lib.stride_tricks.sliding_window_view(pad, window, axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows → NaN is intended
        return np.nanmedian(win, axis=-1)


def first_hit(
    y: ArrayLike,
    target: float,
    *,
    x: ArrayLike | None = None,
    above: bool = False,
    smooth_window: int | None = None,
) -> float | NDArray[np.float64]:
    """``x`` at the first index where ``y ≤ target`` (``y ≥ target`` if ``above``); NaN if never.

    Args:
        y: curve ``[T]`` or per-seed curves ``[S, T]`` (hitting time per row).
        x: abscissa ``[T]`` (round numbers or simulated seconds); default the index 0..T−1.
        smooth_window: apply :func:`running_median` first (None: raw curve).
    Non-finite values never count as a hit. Returns a float, or ``[S]`` for 2-D ``y``.
    """
    y = np.asarray(y, dtype=np.float64)
    if smooth_window is not None:
        y = running_median(y, smooth_window)
    xs = np.arange(y.shape[-1], dtype=np.float64) if x is None else np.asarray(x, np.float64)
    if xs.shape != (y.shape[-1],):
        raise AnalyticsError(f"x must have shape ({y.shape[-1]},), got {xs.shape}")
    with np.errstate(invalid="ignore"):
        hit = (y >= target) if above else (y <= target)  # NaN compares False
    any_hit = hit.any(axis=-1)
    out = np.where(any_hit, xs[np.argmax(hit, axis=-1)], np.nan)
    return float(out) if out.ndim == 0 else out


def rounds_to_target(
    y: ArrayLike,
    target: float,
    *,
    rounds: ArrayLike | None = None,
    above: bool = False,
    smooth_window: int | None = None,
) -> float | NDArray[np.float64]:
    """Rounds until a metric first reaches ``target`` (§5 R(ε)); NaN if never. See first_hit."""
    return first_hit(y, target, x=rounds, above=above, smooth_window=smooth_window)


def time_to_target(
    y: ArrayLike,
    target: float,
    *,
    sim_time: ArrayLike,
    above: bool = False,
    smooth_window: int | None = None,
) -> float | NDArray[np.float64]:
    """Simulated seconds until a metric first reaches ``target``; NaN if never. See first_hit."""
    return first_hit(y, target, x=sim_time, above=above, smooth_window=smooth_window)


@dataclass(frozen=True)
class SeedBands:
    """Per-round quantiles over seeds, each ``[T]``; NaN where no seed is finite."""

    median: NDArray[np.float64]
    q25: NDArray[np.float64]
    q75: NDArray[np.float64]
    n_finite: NDArray[np.int64]
    n_nonfinite: NDArray[np.int64]

    @property
    def iqr(self) -> NDArray[np.float64]:
        return self.q75 - self.q25


def seed_bands(Y: ArrayLike) -> SeedBands:
    """Median and interquartile range across seeds per round, for ``Y`` of shape ``[S, T]``.

    Non-finite entries (NaN, ±inf from diverged runs) are ignored and counted per round.
    """
    Y = np.atleast_2d(np.asarray(Y, dtype=np.float64))
    finite = np.isfinite(Y)
    Yn = np.where(finite, Y, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rounds → NaN is intended
        q25, med, q75 = np.nanquantile(Yn, [0.25, 0.5, 0.75], axis=0)
    n_fin = finite.sum(axis=0)
    return SeedBands(med, q25, q75, n_fin, Y.shape[0] - n_fin)


def median_of_means(x: ArrayLike, *, n_blocks: int = 24, axis: int = 0) -> NDArray[np.float64]:
    """Median-of-means estimate of ``E[x]`` along ``axis`` (i.i.d. samples in any order).

    The samples are split into ``k = min(n_blocks, n)`` contiguous blocks of near-equal size;
    the estimate is the median of the block means. It needs only a finite variance for
    sub-Gaussian deviations (k ≈ 8 ln(1/δ); 24 ↔ δ ≈ 0.05), and with infinite variance
    (``x = ‖e‖^p`` with 2p ≥ α) it is still far less jumpy than a bare mean. Non-finite
    samples are not allowed (AnalyticsError): drop and count them first.
    """
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, 0)
    if not np.all(np.isfinite(x)):
        raise AnalyticsError("median_of_means got non-finite samples; drop and count them first")
    k = max(1, min(n_blocks, x.shape[0]))
    means = np.stack([b.mean(axis=0) for b in np.array_split(x, k, axis=0)])
    return np.median(means, axis=0)


def pth_moment_mom(e: ArrayLike, *, p: float, n_blocks: int = 24) -> NDArray[np.float64]:
    """Robust ``E‖e‖_2^p`` from replicas: ``e`` is ``[R, ..., d]`` (replicas first, coords last).

    Returns the median-of-means over replicas of ``‖e‖_2^p``, shape ``[...]`` (e.g. ``[T]``).
    Finite E‖e‖^p needs p < α (§2.4); §8 item 12 uses this for the rate check.
    """
    norms = np.linalg.norm(np.asarray(e, dtype=np.float64), axis=-1) ** p
    return median_of_means(norms, n_blocks=n_blocks, axis=0)
