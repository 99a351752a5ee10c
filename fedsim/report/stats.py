"""Statistics across seeds: medians with IQRs, hitting times, fitted exponents vs theory, and the
measured overlap speed-up against the run-time model's prediction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fedsim.analytics.errors import AnalyticsError
from fedsim.analytics.fits import rounds_to_target, seed_slopes, time_to_target
from fedsim.analytics.runtime import pipelined_speedup
from fedsim.errors import FedsimError
from fedsim.report.groups import SMOOTH, Group, sortable

# ------------------------------------------------------------------------------ statistics


def fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.{digits}g}"


def med_iqr(v: np.ndarray, digits: int = 3) -> str:
    """``median [q25, q75]`` over the finite entries, with the count of never/non-finite; a
    single finite value is printed alone (one seed has no spread to show)."""
    v = np.asarray(v, dtype=np.float64)
    ok = v[np.isfinite(v)]
    if ok.size == 0:
        return f"never ({v.size}/{v.size})" if v.size else "—"
    miss = f", {v.size - ok.size} never" if ok.size < v.size else ""
    if ok.size == 1:
        return f"{ok[0]:.{digits}g}{miss}"
    q1, m, q3 = np.quantile(ok, [0.25, 0.5, 0.75])
    return f"{m:.{digits}g} [{q1:.{digits}g}, {q3:.{digits}g}]{miss}"


def slope_text(median: float, ci_low: float, ci_high: float) -> str:
    """``median [low, high]``; ``median [—]`` when there is no interval (a single seed)."""
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        return f"{median:.3f} [—]"
    return f"{median:.3f} [{ci_low:.3f}, {ci_high:.3f}]"


def curve_metric(groups: list[Group]) -> str:
    """The convergence metric of the report: optimality gap where known, else test loss."""
    return "gap" if all(g.has("gap") for g in groups) else "loss"


def default_target(groups: list[Group], metric: str) -> float:
    """1.5 × the median over groups of each group's final median value (lower is better)."""
    finals = []
    for g in groups:
        _, Y = g.matrix(metric)
        with np.errstate(all="ignore"):
            last = np.array([row[np.isfinite(row)][-1] if np.isfinite(row).any() else np.nan for row in Y])
        if np.isfinite(last).any():
            finals.append(float(np.nanmedian(last)))
    if not finals:
        raise FedsimError(f"no finite values of {metric!r} to derive a target from; pass --target")
    return 1.5 * float(np.median(finals))


def hitting(g: Group, metric: str, target: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed rounds-to-target and simulated-seconds-to-target (NaN: never)."""
    rounds, Y = g.matrix(metric)
    R = np.atleast_1d(rounds_to_target(Y, target, rounds=rounds, smooth_window=SMOOTH))
    times = []
    for run, row in zip(g.runs, Y, strict=True):
        st = {r["round"]: r.get("sim_time") for r in run.metrics}
        x = np.array([st.get(int(rr), np.nan) if st.get(int(rr)) is not None else np.nan for rr in rounds])
        times.append(float(time_to_target(row, target, sim_time=x, smooth_window=SMOOTH)))
    return R, np.asarray(times)


@dataclass
class ExponentRow:
    group: str
    metric: str
    slope: str
    theory: str
    source: str
    seeds: int


def theory_exponent(g: Group, metric: str) -> tuple[float | None, str]:
    """Theoretical log-log exponent of ``metric`` against steps, and where it comes from."""
    if g.flat.get("train.lr.schedule", "constant") != "inverse":
        return None, "no power law: step size does not decay"
    a = g.alpha
    if a is None:
        return None, "no interference: geometric, not a power law"
    if not 1.0 < a <= 2.0:
        return None, f"alpha={a} outside (1, 2]"
    p = (1.0 + a) / 2.0
    if metric == "dist":
        return -(1.0 - 1.0 / a), "§4.4/§4.3: typical distance t^-(1-1/α)"
    if metric == "err_p":
        return -p * (1.0 - 1.0 / a), f"§4.4: -p(1-1/α), p={p:g} (Thm A bound: {-(p - 1):.3g})"
    if metric == "gap":
        if a == 2.0:
            return -1.0, "§4.3 Gaussian: O(1/t) (FedSGD rate)"
        return -2.0 * (1.0 - 1.0 / a), "median gap ≈ dist² near w* (mean is infinite, §4.3)"
    return None, "—"


def exponent_rows(groups: list[Group]) -> list[ExponentRow]:
    """Fit each group's per-seed curves on the last 90 % of steps (log-spaced points)."""
    rows = []
    for g in groups:
        K = int(g.flat.get("train.local_steps", 1))
        for metric in ("dist", "err_p", "gap"):
            if not g.has(metric):
                continue
            rounds, Y = g.matrix(metric)
            t = rounds * K
            theory, source = theory_exponent(g, metric)
            try:
                fit = seed_slopes(t, Y, t_min=max(1.0, 0.1 * t.max()), theory=theory, n_log_points=30)
                slope = slope_text(fit.median, fit.ci_low, fit.ci_high)
            except AnalyticsError:
                slope = "too few points"
            rows.append(ExponentRow(g.label, metric, slope, fmt(theory), source, len(g.runs)))
    return rows


OVERLAP_AXES = ("timing.latency_ratio", "strategy.overlap.enabled")


def overlap_rows(groups: list[Group], metric: str, target: float) -> list[dict[str, str]]:
    """Per combination of the other swept keys (IID vs non-IID, ...) and latency ratio: time to
    target with and without overlap, the measured speed-up (per seed, paired by seed: each
    schedule's own rounds to the target on the simulated clock), and the run-time model's
    prediction at equal rounds, which ignores what staleness costs in rounds."""
    rest_keys = [k for k in groups[0].values if k not in OVERLAP_AXES]
    cells: dict[tuple, dict[bool, Group]] = {}
    for g in groups:
        key = (*(g.values[k] for k in rest_keys), g.flat.get("timing.latency_ratio"))
        cells.setdefault(key, {})[bool(g.flat.get("strategy.overlap.enabled", False))] = g
    rows = []
    for key in sorted(cells, key=lambda k: tuple(sortable(v) for v in k)):
        pair = cells[key]
        if set(pair) != {False, True}:
            continue
        row = {k.rsplit(".", 1)[-1]: str(v) for k, v in zip(rest_keys, key, strict=False)}
        rows.append(row | _overlap_pair(pair[False], pair[True], key[-1], metric, target))
    return rows


def _overlap_pair(seq: Group, ovl: Group, ratio: Any, metric: str, target: float) -> dict[str, str]:
    R_s, T_s = hitting(seq, metric, target)
    R_o, T_o = hitting(ovl, metric, target)
    seeds_s = {r.config.get("seed"): i for i, r in enumerate(seq.runs)}
    paired = [T_s[seeds_s[r.config.get("seed")]] / T_o[j] for j, r in enumerate(ovl.runs)
              if r.config.get("seed") in seeds_s]
    K = int(seq.flat.get("train.local_steps", 1))
    tau_cp = float(seq.flat.get("timing.tau_cp", 1e-3))
    tau_cm = float(ratio or 0.0) * tau_cp
    with np.errstate(all="ignore"):
        R_equal = np.nanmedian(R_s)
        pred = (float(pipelined_speedup(max(1.0, R_equal), K=K, tau_cp=tau_cp, tau_cm=tau_cm))
                if np.isfinite(R_equal) else np.nan)
    ideal = float(pipelined_speedup(max(1, int(seq.flat.get("rounds", 1))), K=K, tau_cp=tau_cp, tau_cm=tau_cm))
    return {
        "latency ratio": fmt(float(ratio or 0.0)),
        "rounds seq": med_iqr(R_s), "rounds ovl": med_iqr(R_o),
        "time seq [s]": med_iqr(T_s), "time ovl [s]": med_iqr(T_o),
        "measured speed-up (time to target)": med_iqr(np.asarray(paired)),
        "predicted at equal rounds (§5)": fmt(float(pred)),
        "ideal 1+τcm/(Kτcp)": fmt(ideal),
    }


