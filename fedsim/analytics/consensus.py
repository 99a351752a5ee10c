"""Server-free consensus theory, Theorem B notes (model §4.5, fedsim's own
derivation; § numbers: docs/explanation/model.md).

Per coordinate, each UE m holds its own noisy copy of the aggregate; these functions give
the SαS scale of the deviations ``w_m − w̄`` (from the virtual average) and ``w_m − w_n``
(between two UEs) for the two update modes of §3(c). Scales are in parameter units; the
per-UE noise scale ``c_ind`` is the SαS(α, c_ind) scale of the UE-specific noise on what a UE
receives (models in 'reset' mode, gradients in 'accumulate' mode).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import zeta

from channels.stats import sas_fractional_moment

from .errors import AnalyticsError


def s_n(N: int, alpha: float) -> float:
    """Factor ``s_N`` with ``s_N^α = (1 − 1/N)^α + (N − 1) N^{−α}`` (§4.5), dimensionless.

    ``ε_m − ε̄`` for N i.i.d. SαS(α, c) draws is SαS(α, s_N c). At α = 2, s_N² = 1 − 1/N.
    """
    if N < 1 or not 0.0 < alpha <= 2.0:
        raise AnalyticsError(f"need N >= 1 and 0 < alpha <= 2, got N={N}, alpha={alpha}")
    return float(((1.0 - 1.0 / N) ** alpha + (N - 1) * float(N) ** (-alpha)) ** (1.0 / alpha))


def reset_deviation_scale(N: int, alpha: float, c_ind: float) -> float:
    """'reset' mode: per-coordinate scale of ``(w_m − w̄)[i] ~ SαS(α, s_N c_ind)`` (§4.5).

    A UE deviates from w̄ by the current round's noise only, so this does not grow with t.
    """
    return s_n(N, alpha) * c_ind


def reset_deviation_moment_bound(
    N: int, alpha: float, c_ind: float, *, d: int, p: float | None = None
) -> float:
    """'reset' mode: ``E‖w_m − w̄‖_2^p ≤ d · m_p(α) · (s_N c_ind)^p`` (§4.5), p < α.

    ``p`` defaults to (1 + α)/2; (parameter units)^p. Uses ‖x‖_2^p ≤ ‖x‖_p^p for p ≤ 2.
    """
    p = (1.0 + alpha) / 2.0 if p is None else float(p)
    if not 0.0 < p < alpha:
        raise AnalyticsError(f"need 0 < p < alpha, got p={p}, alpha={alpha}")
    return d * sas_fractional_moment(p, alpha) * reset_deviation_scale(N, alpha, c_ind) ** p


def lr_power_sum(
    t: ArrayLike, *, alpha: float, lr: Callable[[NDArray[np.float64]], ArrayLike]
) -> NDArray[np.float64]:
    """``Σ_{s<t} η_s^α`` at each step count ``t`` (integer array, any shape; t ≥ 0)."""
    t = np.asarray(t, dtype=np.int64)
    if np.any(t < 0):
        raise AnalyticsError("t must be >= 0")
    tmax = int(t.max()) if t.size else 0
    eta = np.asarray(lr(np.arange(tmax, dtype=np.float64)), dtype=np.float64)
    cums = np.concatenate([[0.0], np.cumsum(np.abs(eta) ** alpha)])
    return cums[t]


def lr_power_sum_limit(theta: float, gamma: float, alpha: float) -> float:
    """Closed form ``Σ_{s≥0} η_s^α ≈ θ^α γ^{1−α} / (α − 1)`` for η_s = θ/(s+γ) (§4.5).

    The integral approximation; the exact sum is θ^α ζ(α, γ) (:func:`lr_power_sum_exact_limit`).
    Finite only for α > 1.
    """
    if not alpha > 1.0:
        raise AnalyticsError(f"Σ η_s^α diverges for alpha <= 1, got {alpha}")
    return theta**alpha * gamma ** (1.0 - alpha) / (alpha - 1.0)


def lr_power_sum_exact_limit(theta: float, gamma: float, alpha: float) -> float:
    """Exact ``Σ_{s≥0} (θ/(s+γ))^α = θ^α ζ(α, γ)`` (Hurwitz zeta), α > 1."""
    if not alpha > 1.0:
        raise AnalyticsError(f"Σ η_s^α diverges for alpha <= 1, got {alpha}")
    return float(theta**alpha * zeta(alpha, gamma))


def accumulate_consensus_scale(
    t: ArrayLike,
    *,
    N: int,
    alpha: float,
    c_ind: float,
    lr: Callable[[NDArray[np.float64]], ArrayLike],
    pair: bool = False,
) -> NDArray[np.float64]:
    """'accumulate' mode, gradient form: per-coordinate SαS scale of the drift at steps ``t``.

    ``scale^α(w_m − w̄) = s_N^α c_ind^α Σ_{s<t} η_s^α`` (``pair=False``) or
    ``scale^α(w_m − w_n) = 2 c_ind^α Σ_{s<t} η_s^α`` (``pair=True``), §4.5. The drift never
    contracts; under η_s = θ/(s+γ) it tends to a non-zero limit
    (:func:`lr_power_sum_limit`). Same shape as ``t``, parameter units.
    """
    factor = 2.0 if pair else s_n(N, alpha) ** alpha
    return (factor * c_ind**alpha * lr_power_sum(t, alpha=alpha, lr=lr)) ** (1.0 / alpha)
