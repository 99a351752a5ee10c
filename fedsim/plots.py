"""Convergence figures from run directories and sweep folders (PDF and PNG, :mod:`fedsim.figstyle`).

Runs that differ only in their seed are one group, drawn as its median line; with two or more
seeds a band shows their interquartile range (means of heavy-tailed runs are unstable). Legends
name the config values that differ between groups, in words. Nothing here switches matplotlib's
backend: :func:`convergence_figure` returns a :class:`~matplotlib.figure.Figure` (or draws into
the ``ax=`` you give it), and :func:`plot_runs` saves one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from fedsim import figstyle
from fedsim.errors import FedsimError
from fedsim.results.labels import differing_keys, flatten
from fedsim.results.rundir import RunData
from fedsim.results.sweepdir import Runs, load_runs

DEFAULT_METRICS = ("loss", "accuracy", "gap")
LOG_METRICS = figstyle.LOG_METRICS
#: gid of the artists that tests and notebooks can find: the seeds' IQR band, one seed's UE spread.
SEED_BAND, UE_BAND = "seed-iqr", "ue-spread"


def group_runs(runs: Sequence[RunData]) -> dict[str, list[RunData]]:
    """Group runs by every config value except the seed; key = legend label (what differs, in
    words; a single group is described by its strategy and interference)."""
    flat = [flatten(r.config) for r in runs]
    differing = differing_keys(flat)
    keyed: dict[str, list[RunData]] = {}
    for run, f in zip(runs, flat, strict=True):
        keyed.setdefault(repr([f.get(k) for k in differing]), []).append(run)
    members = list(keyed.values())
    if len(members) == 1:
        return {figstyle.describe(members[0][0].config): members[0]}
    labels = figstyle.legend_labels([m[0].config for m in members], differing)
    return dict(zip(labels, members, strict=True))


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


def _load(run_dirs: Runs, metrics: Sequence[str] | None, x: str) -> tuple[list[RunData], list[str]]:
    if x not in ("round", "sim_time"):
        raise FedsimError(f"--x must be 'round' or 'sim_time', got {x!r}")
    runs = load_runs(run_dirs)
    present = {k for r in runs for row in r.metrics for k in row}
    if metrics is None:
        metrics = [m for m in DEFAULT_METRICS if m in present] or ["loss"]
    missing = [m for m in metrics if m not in present]
    if missing:
        avail = sorted(k for k in present if k not in ("round",))
        raise FedsimError(f"metric(s) {', '.join(missing)} not in these runs; "
                          f"available: {', '.join(avail)}")
    return runs, list(metrics)


def convergence_figure(run_dirs: Runs, *, metrics: Sequence[str] | None = None,
                       x: str = "round", ax: Any = None) -> Figure:
    """Draw ``metrics`` against ``x`` (``round`` or ``sim_time``) for the given runs; return the
    figure. Without ``ax`` it is a new one-column figure, one panel per metric, legend below; with
    ``ax`` (one Axes, or one per metric) it draws there and returns that figure.

    A group of seeds is its median line with an IQR band (two or more seeds). For UE-held models
    (server-free, overlap) the line is the median over the UEs' own models, a single seed shows
    their 10–90 % spread as a band, and the virtual average (held by no UE) is a thin dashed reference.
    Rates against rounds (gap, distance) are on log-log axes. A sweep folder stands for all of its
    variants' run directories; runs already loaded
    (:func:`fedsim.results.sweepdir.load_runs`) are drawn as they are.
    """
    runs, metrics = _load(run_dirs, metrics, x)
    groups = group_runs(runs)
    with figstyle.style():
        if ax is None:
            fig, grid = figstyle.new_figure(len(metrics))
            axes = list(grid[:, 0])
        else:
            axes = list(ax) if isinstance(ax, Sequence | np.ndarray) else [ax]
            if len(axes) != len(metrics):
                raise FedsimError(f"got {len(axes)} axes for {len(metrics)} metrics")
            fig = axes[0].figure
        extras: dict[str, Any] = {}
        for panel, metric in zip(axes, metrics, strict=True):
            for i, (label, members) in enumerate(groups.items()):
                extras |= _draw_group(panel, i, label, members, metric, x)
            _axes_style(panel, metric, x, bottom=panel is axes[-1] or ax is not None)
        handles, labels = axes[0].get_legend_handles_labels()
        labels, title = figstyle.seed_labels(labels, [len(m) for m in groups.values()])
        handles += list(extras.values())
        labels += list(extras)
        if ax is None:
            figstyle.legend_below(fig, handles, labels, title)
        else:
            axes[-1].legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.25), title=title)
    return fig


def _axes_style(ax: Any, metric: str, x: str, bottom: bool) -> None:
    if figstyle.loglog(metric, x):
        ax.set_xscale("log")
    if metric in LOG_METRICS:
        ax.set_yscale("log")
    ax.set_ylabel(figstyle.axis_label(metric))
    if bottom:
        ax.set_xlabel(figstyle.axis_label(x))


def plot_runs(run_dirs: Runs, *, metrics: Sequence[str] | None = None,
              x: str = "round", out: str | Path,
              formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """:func:`convergence_figure`, saved as ``out`` with each suffix in ``formats`` (PNG at
    200 dpi, PDF as vectors); returns the paths written."""
    return figstyle.save(convergence_figure(run_dirs, metrics=metrics, x=x), out, formats)


def _draw_group(ax: Any, i: int, label: str, members: list[RunData], metric: str, x: str) -> dict[str, Any]:
    """One group's median line, its band (seeds' IQR, or one seed's UE spread) and, for UE-held
    models, the dashed virtual-average reference. Returns legend entries for what it added
    besides the group's own line."""
    xs, ys = _aligned(members, metric, x)
    keep = xs > 0 if figstyle.loglog(metric, x) else np.ones(xs.shape, bool)
    xs, ys = xs[keep], ys[:, keep]
    if xs.size == 0:
        return {}
    style, extras = figstyle.group_style(i), {}
    with np.errstate(all="ignore"):
        med = np.nanmedian(ys, axis=0)
    ax.plot(xs, med, label=label, **style)
    if len(members) > 1:
        q1, q3 = _quartiles(ys)
        ax.fill_between(xs, q1, q3, color=style["color"], alpha=0.2, linewidth=0, gid=SEED_BAND)
    elif _has(members, f"ue_{metric}_p10"):
        lo, lo_y = _aligned(members, f"ue_{metric}_p10", x)
        hi, hi_y = _aligned(members, f"ue_{metric}_p90", x)
        k = lo > 0 if figstyle.loglog(metric, x) else np.ones(lo.shape, bool)
        ax.fill_between(lo[k], lo_y[0][k], hi_y[0][k], color=style["color"], alpha=0.15, linewidth=0, gid=UE_BAND)
        extras["UE models, 10–90 %"] = Patch(color="0.5", alpha=0.3, linewidth=0)
    if _has(members, f"avg_{metric}"):
        ax_x, avg = _aligned(members, f"avg_{metric}", x)
        k = ax_x > 0 if figstyle.loglog(metric, x) else np.ones(ax_x.shape, bool)
        with np.errstate(all="ignore"):
            ax.plot(ax_x[k], np.nanmedian(avg, axis=0)[k], color=style["color"], **figstyle.REFERENCE)
        extras["virtual average (held by no UE)"] = Line2D([], [], color="0.3", **figstyle.REFERENCE)
    if any(r.summary.get("status") == "diverged" for r in members):
        ax.plot(xs[-1:], med[-1:], "x", color=style["color"], markersize=7)
        extras["diverged"] = Line2D([], [], marker="x", color="0.3", linestyle="none")
    return extras


def _quartiles(ys: np.ndarray) -> np.ndarray:
    """The 25 and 75 % points of every column, NaN ignored: ``np.nanpercentile``, whose per-column
    loop (a second per figure of a 240-run sweep) is taken only where a value is missing."""
    if np.isnan(ys).any():
        return np.nanpercentile(ys, [25, 75], axis=0)
    return np.percentile(ys, [25, 75], axis=0)


def _has(runs: list[RunData], key: str) -> bool:
    return any(key in row for r in runs for row in r.metrics)
