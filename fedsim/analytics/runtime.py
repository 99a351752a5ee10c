"""Wall-clock run-time model of sequential vs overlapped schedules (model §5, fedsim's own
model; § numbers: docs/explanation/model.md).

Times are in seconds (any unit, used consistently). ``tau_cp`` is the time of one local step:
a scalar, or per-UE ``[N]``, in which case every schedule waits for the slowest UE
(aggregation of a block needs every UE's block). ``tau_cm`` is the latency of one global
exchange (airtime + propagation + relay + downlink), independent of N for analog OTA.
``R`` (rounds) may be an array; results broadcast over it.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import AnalyticsError


def _slowest(tau_cp: float | ArrayLike) -> float:
    tau = np.asarray(tau_cp, dtype=np.float64)
    if tau.size == 0 or np.any(tau <= 0):
        raise AnalyticsError("tau_cp must be positive (scalar or per-UE array)")
    return float(tau.max())


def _check(K: int, tau_cm: float) -> None:
    if K < 1 or tau_cm < 0:
        raise AnalyticsError(f"need K >= 1 and tau_cm >= 0, got K={K}, tau_cm={tau_cm}")


def delay_steps(tau_cm: float, tau_cp: float | ArrayLike) -> int:
    """Latency in local steps ``D = ⌈τ_cm / τ_cp⌉`` (§3(d), §5), using the slowest UE."""
    ratio = tau_cm / _slowest(tau_cp)
    # Round first so that 5.000000000001 (float noise) counts as 5 steps, not 6.
    return int(math.ceil(round(ratio, 9)))


def sequential_time(
    R: ArrayLike, *, K: int, tau_cp: float | ArrayLike, tau_cm: float
) -> NDArray[np.float64]:
    """Sequential schedules (a)–(c): ``T_total(R) = R · (K · max_n τ_cp,n + τ_cm)`` (§5)."""
    _check(K, tau_cm)
    return np.asarray(R, dtype=np.float64) * (K * _slowest(tau_cp) + tau_cm)


def pipeline_valid(*, K: int, tau_cp: float | ArrayLike, tau_up: float) -> bool:
    """Pipelining (several blocks in flight) needs the airtime ``τ_up ≤ K τ_cp`` (§5)."""
    return tau_up <= K * _slowest(tau_cp) * (1 + 1e-12)


def pipelined_time(
    R: ArrayLike,
    *,
    K: int,
    tau_cp: float | ArrayLike,
    tau_cm: float,
    tau_up: float | None = None,
) -> NDArray[np.float64]:
    """Overlapped, pipelined: ``T_total(R) = R · K · τ_cp + τ_cm`` for R ≥ 1, 0 for R = 0 (§5).

    UEs never pause; only the last aggregate's latency is exposed. If the airtime ``tau_up``
    is given, raises AnalyticsError when ``τ_up > K τ_cp`` (the channel could not keep up with one
    block per K steps, so blocks would queue).
    """
    _check(K, tau_cm)
    if tau_up is not None and not pipeline_valid(K=K, tau_cp=tau_cp, tau_up=tau_up):
        raise AnalyticsError(
            f"pipelined overlap needs tau_up <= K*tau_cp, got tau_up={tau_up} > "
            f"{K * _slowest(tau_cp)}; use the single-in-flight schedule or larger K"
        )
    R = np.asarray(R, dtype=np.float64)
    return np.where(R == 0, 0.0, R * K * _slowest(tau_cp) + tau_cm)  # NaN stays NaN


def single_in_flight_round_time(*, K: int, tau_cp: float | ArrayLike, tau_cm: float) -> float:
    """Overlapped, one transmission in flight: ``T_round = max(K τ_cp, τ_cm)`` (§5)."""
    _check(K, tau_cm)
    return max(K * _slowest(tau_cp), tau_cm)


def single_in_flight_time(
    R: ArrayLike, *, K: int, tau_cp: float | ArrayLike, tau_cm: float
) -> NDArray[np.float64]:
    """``T_total(R) = R · max(K τ_cp, τ_cm)`` for the single-in-flight schedule (§5)."""
    rt = single_in_flight_round_time(K=K, tau_cp=tau_cp, tau_cm=tau_cm)
    return np.asarray(R, dtype=np.float64) * rt


def effective_k(*, K: int, tau_cp: float | ArrayLike, tau_cm: float) -> int:
    """Local steps per round when UEs keep stepping with one block in flight: max(K, D) (§3(d))."""
    return max(K, delay_steps(tau_cm, tau_cp))


def pipelined_speedup(
    R: ArrayLike, *, K: int, tau_cp: float | ArrayLike, tau_cm: float
) -> NDArray[np.float64]:
    """``S = (Kτ_cp + τ_cm) / (Kτ_cp + τ_cm/R)`` at equal R (§5); → 1 + τ_cm/(Kτ_cp) as R → ∞."""
    R = np.asarray(R, dtype=np.float64)
    if np.any(R < 1):
        raise AnalyticsError("speed-up at equal R needs R >= 1")
    return sequential_time(R, K=K, tau_cp=tau_cp, tau_cm=tau_cm) / pipelined_time(
        R, K=K, tau_cp=tau_cp, tau_cm=tau_cm
    )


def single_in_flight_speedup(*, K: int, tau_cp: float | ArrayLike, tau_cm: float) -> float:
    """``S = (Kτ_cp + τ_cm) / max(Kτ_cp, τ_cm)`` ∈ [1, 2], largest at τ_cm = Kτ_cp (§5)."""
    kt = K * _slowest(tau_cp)
    return (kt + tau_cm) / single_in_flight_round_time(K=K, tau_cp=tau_cp, tau_cm=tau_cm)


def time_to_accuracy_speedup(
    R_seq: ArrayLike, R_ovl: ArrayLike, *, K: int, tau_cp: float | ArrayLike, tau_cm: float
) -> NDArray[np.float64]:
    """``S_eff = R_seq(ε)(Kτ_cp + τ_cm) / (R_ovl(ε) Kτ_cp + τ_cm)`` (§5, pipelined overlap).

    ``R_seq``, ``R_ovl``: rounds each schedule needs to reach the target (e.g. from
    :func:`fedsim.analytics.fits.rounds_to_target`); NaN (never reached) propagates to NaN.
    """
    R_seq = np.asarray(R_seq, dtype=np.float64)
    R_ovl = np.asarray(R_ovl, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return sequential_time(R_seq, K=K, tau_cp=tau_cp, tau_cm=tau_cm) / pipelined_time(
            R_ovl, K=K, tau_cp=tau_cp, tau_cm=tau_cm
        )
