"""The report's figures (PNG)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fedsim.analytics.fits import seed_bands  # noqa: E402
from fedsim.report.groups import Group, sortable  # noqa: E402

DPI = 80

def _band(ax: Any, x: np.ndarray, Y: np.ndarray, label: str, **kw: Any) -> Any:
    b = seed_bands(Y)
    (line,) = ax.plot(x, b.median, label=label + (f" (n={Y.shape[0]})" if Y.shape[0] > 1 else ""), **kw)
    if Y.shape[0] > 1:
        ax.fill_between(x, b.q25, b.q75, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def _virtual_average(ax: Any, g: Group, metric: str, x: str, color: Any, positive: bool = False,
                     label: str | None = None) -> None:
    """The dashed reference of UE-held runs: the virtual average's metric, held by no UE."""
    if not g.has(f"avg_{metric}"):
        return
    xs, Y = g.matrix(f"avg_{metric}", x)
    keep = xs > 0 if positive else slice(None)
    with np.errstate(all="ignore"):
        ax.plot(xs[keep], np.nanmedian(Y, axis=0)[keep], "--", lw=1, color=color,
                label=f"{label or g.label}: virtual average (held by no UE)")


def _save(fig: Any, path: Path, layout: bool = True) -> Path:
    if layout:
        fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def fig_curves(groups: list[Group], metric: str, path: Path) -> Path:
    """Measured median + IQR of the metric and of ‖w − w*‖ against the §4.4 reference."""
    loglog = any(g.flat.get("train.lr.schedule") == "inverse" for g in groups)
    with_theory = any(g.has("theory_dist") for g in groups) or any(g.has("theory_bound") for g in groups)
    ncol = 2 if with_theory else 1
    fig, axes = plt.subplots(1, ncol, figsize=(5.2 * ncol, 3.8), squeeze=False)
    ax = axes[0][0]
    for g in groups:
        x, Y = g.matrix(metric)
        keep = x > 0 if loglog else slice(None)
        line = _band(ax, x[keep], Y[:, keep], g.label)
        _virtual_average(ax, g, metric, "round", line.get_color(), positive=loglog)
    ax.set(xlabel="round", ylabel=f"{metric} (median, IQR)", yscale="log")
    if loglog:
        ax.set_xscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6)
    if with_theory:
        ax = axes[0][1]
        for g in groups:
            meas, theo = ("dist", "theory_dist") if g.has("theory_dist") else ("err_p", "theory_bound")
            if not g.has(theo):
                continue
            x, Y = g.matrix(meas)
            keep = x > 0
            color = ax.plot([], [])[0].get_color()
            _band(ax, x[keep], Y[:, keep], f"{g.label}: {meas}", color=color)
            xt, Yt = g.matrix(theo)
            ax.plot(xt[xt > 0], np.nanmedian(Yt, axis=0)[xt > 0], "--", color=color, lw=1,
                    label=f"theory ({'§4.4 median' if theo == 'theory_dist' else 'Thm A bound'})")
        ax.set(xlabel="round", ylabel="‖w − w*‖ (or err_p) vs theory", xscale="log", yscale="log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    return _save(fig, path)


def fig_heatmap(cells: dict[tuple[float, float | None], float], path: Path, title: str) -> Path:
    alphas = sorted({a for a, _ in cells}, reverse=True)
    levels = sorted({lv for _, lv in cells}, key=lambda v: (v is None, v))
    M = np.full((len(levels), len(alphas)), np.nan)
    for (a, lv), v in cells.items():
        M[levels.index(lv), alphas.index(a)] = v
    fig, ax = plt.subplots(figsize=(1.2 * len(alphas) + 2.2, 0.8 * len(levels) + 1.8))
    im = ax.imshow(M, cmap="viridis_r", aspect="auto")
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            ax.text(j, i, "never" if not np.isfinite(M[i, j]) else f"{M[i, j]:.0f}", ha="center", va="center",
                    color="w" if np.isfinite(M[i, j]) else "k", fontsize=8)
    ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    ax.set_yticks(range(len(levels)), ["—" if lv is None else f"{lv:g}" for lv in levels])
    ax.set(xlabel="α (2 = Gaussian)", ylabel="interference level", title=title)
    fig.colorbar(im, ax=ax, label="median rounds to target")
    return _save(fig, path)


def _panels(groups: list[Group], split_key: str) -> dict[str, list[Group]]:
    """Groups by the values of every differing key except ``split_key`` (one panel each)."""
    panels: dict[str, list[Group]] = {}
    for g in groups:
        rest = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in g.values.items() if k != split_key)
        panels.setdefault(rest or "all", []).append(g)
    return panels


def fig_panels(groups: list[Group], split_key: str, metric: str, x: str, path: Path,
               panel_key: str | None = None) -> Path:
    """One panel per value of ``panel_key`` (or per combination of the other keys); inside,
    one median + IQR line per value of ``split_key``."""
    if panel_key is not None:
        panels: dict[str, list[Group]] = {}
        for g in sorted(groups, key=lambda g: sortable(g.values.get(panel_key))):
            panels.setdefault(f"{panel_key.split('.')[-1]}={g.values.get(panel_key)}", []).append(g)
    else:
        panels = _panels(groups, split_key)
    items = list(panels.items())[:8]
    ncol = min(4, len(items))
    nrow = math.ceil(len(items) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.0 * ncol, 3.2 * nrow), squeeze=False)
    for ax, (title, members) in zip(axes.flat, items, strict=False):
        for g in members:
            xs, Y = g.matrix(metric, x)
            lab = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in g.values.items()
                            if k != panel_key and (panel_key is not None or k == split_key))
            line = _band(ax, xs, Y, lab)
            _virtual_average(ax, g, metric, x, line.get_color(), label=lab)
        ax.set(title=title, xlabel="simulated time [s]" if x == "sim_time" else "round", ylabel=metric)
        if metric in ("gap", "dist", "err_p", "loss"):
            ax.set_yscale("log")
        ax.title.set_fontsize(8)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(items):]:
        ax.axis("off")
    _shared_legend(fig, axes.flat)
    return _save(fig, path, layout=False)


def _shared_legend(fig: Any, axes: Any) -> None:
    """One legend under the panels (every panel draws the same series), so none hides a curve."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    lines = math.ceil(len(seen) / 2)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="lower center", fontsize=7, frameon=False, ncol=2)
        fig.set_figheight(fig.get_figheight() + 0.18 * lines)
    fig.tight_layout(rect=(0, (0.18 * lines + 0.05) / fig.get_figheight() if seen else 0, 1, 1))
