"""Convergence plots from run directories and sweep folders (PNG and PDF).

Runs that differ only in their seed are one group: drawn as the median line with an
interquartile band (means of heavy-tailed runs are unstable). Legends name the config values
that differ between groups.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fedsim.errors import FedsimError  # noqa: E402
from fedsim.results.labels import differing_keys, flatten, label_of  # noqa: E402
from fedsim.results.rundir import RunData, load_run  # noqa: E402
from fedsim.results.sweepdir import expand_run_dirs  # noqa: E402

DEFAULT_METRICS = ("loss", "accuracy", "gap")
LOG_METRICS = {"gap", "dist", "consensus", "err_p", "noise_scale"}


def group_runs(runs: Sequence[RunData]) -> dict[str, list[RunData]]:
    """Group runs by every config value except the seed; key = legend label."""
    flat = [flatten(r.config) for r in runs]
    differing = differing_keys(flat)
    groups: dict[str, list[RunData]] = {}
    for run, f in zip(runs, flat, strict=True):
        groups.setdefault(label_of({k: f.get(k) for k in differing}, differing) or run.label, []).append(run)
    return groups


def _aligned(runs: list[RunData], metric: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    """x values and a [runs, points] matrix (NaN where a run has no value)."""
    series = []
    for run in runs:
        pts = {}
        for row in run.metrics:
            v, xv = row.get(metric), row.get(x)
            if isinstance(v, int | float) and isinstance(xv, int | float) and math.isfinite(v):
                pts[float(xv)] = float(v)
        series.append(pts)
    xs = np.array(sorted({k for s in series for k in s}))
    ys = np.full((len(runs), len(xs)), np.nan)
    for i, s in enumerate(series):
        for j, xv in enumerate(xs):
            ys[i, j] = s.get(xv, np.nan)
    return xs, ys


def plot_runs(run_dirs: Sequence[str | Path], *, metrics: Sequence[str] | None = None,
              x: str = "round", out: str | Path,
              formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Plot ``metrics`` against ``x`` (``round`` or ``sim_time``) for the given runs.

    A group of seeds is its median line with an IQR band. For UE-held models (server-free,
    overlap) the line is the median over the UEs' own models, a single seed shows their 10-90 %
    spread as a band, and the virtual average (held by no UE) is a dashed reference line. A sweep
    folder (see fedsim.sweep) stands for all of its variants' run directories.
    """
    if x not in ("round", "sim_time"):
        raise FedsimError(f"--x must be 'round' or 'sim_time', got {x!r}")
    runs = [load_run(p) for p in expand_run_dirs(list(run_dirs))]
    present = {k for r in runs for row in r.metrics for k in row}
    if metrics is None:
        metrics = [m for m in DEFAULT_METRICS if m in present] or ["loss"]
    missing = [m for m in metrics if m not in present]
    if missing:
        avail = sorted(k for k in present if k not in ("round",))
        raise FedsimError(f"metric(s) {', '.join(missing)} not in these runs; "
                          f"available: {', '.join(avail)}")
    groups = group_runs(runs)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for label, members in groups.items():
            _draw_group(ax, label, members, metric, x)
        if metric in LOG_METRICS:
            ax.set_yscale("log")
        ax.set_xlabel("simulated time [s]" if x == "sim_time" else "round")
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = out.with_suffix(f".{fmt}")
        fig.savefig(path, dpi=130)
        written.append(path)
    plt.close(fig)
    return written


def _draw_group(ax: Any, label: str, members: list[RunData], metric: str, x: str) -> None:
    """One group's median line, its band (seeds' IQR, or one seed's UE spread) and, for UE-held
    models, the dashed virtual-average reference."""
    xs, ys = _aligned(members, metric, x)
    if xs.size == 0:
        return
    with np.errstate(all="ignore"):
        med = np.nanmedian(ys, axis=0)
    suffix = f" (median of {len(members)})" if len(members) > 1 else ""
    line, = ax.plot(xs, med, label=label + suffix)
    if len(members) > 1:
        q1, q3 = np.nanpercentile(ys, [25, 75], axis=0)
        ax.fill_between(xs, q1, q3, color=line.get_color(), alpha=0.2, linewidth=0)
    elif _has(members, f"ue_{metric}_p10"):
        lo, lo_y = _aligned(members, f"ue_{metric}_p10", x)
        hi, hi_y = _aligned(members, f"ue_{metric}_p90", x)
        ax.fill_between(lo, lo_y[0], hi_y[0], color=line.get_color(), alpha=0.15, linewidth=0)
    if _has(members, f"avg_{metric}"):
        ax_x, avg = _aligned(members, f"avg_{metric}", x)
        with np.errstate(all="ignore"):
            ax.plot(ax_x, np.nanmedian(avg, axis=0), "--", lw=1, color=line.get_color(),
                    label=f"{label}: virtual average (held by no UE)")
    if any(r.summary.get("status") == "diverged" for r in members):
        ax.plot(xs[-1:], med[-1:], "x", color=line.get_color(), markersize=9)


def _has(runs: list[RunData], key: str) -> bool:
    return any(key in row for r in runs for row in r.metrics)
