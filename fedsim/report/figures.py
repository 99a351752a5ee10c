"""The report's figures, in fedsim's one figure style (:mod:`fedsim.figstyle`): PNG at 200 dpi
for report.md and a vector PDF beside each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from fedsim import figstyle
from fedsim.analytics.fits import seed_bands
from fedsim.report.groups import Group, sortable

#: gid of a seeds' IQR band (drawn only for two or more seeds).
SEED_BAND = "seed-iqr"
THEORY = figstyle.THEORY


def _band(ax: Any, x: np.ndarray, Y: np.ndarray, label: str, **kw: Any) -> Any:
    """The seeds' median line, with their IQR as a band when there are two or more seeds."""
    b = seed_bands(Y)
    (line,) = ax.plot(x, b.median, label=label, **kw)
    if Y.shape[0] > 1:
        ax.fill_between(x, b.q25, b.q75, color=line.get_color(), alpha=0.2, linewidth=0, gid=SEED_BAND)
    return line


def _virtual_average(ax: Any, g: Group, metric: str, x: str, color: Any, positive: bool = False) -> bool:
    """The dashed reference of UE-held runs: the virtual average's metric, held by no UE."""
    if not g.has(f"avg_{metric}"):
        return False
    xs, Y = g.matrix(f"avg_{metric}", x)
    keep = xs > 0 if positive else slice(None)
    with np.errstate(all="ignore"):
        ax.plot(xs[keep], np.nanmedian(Y, axis=0)[keep], color=color, **figstyle.REFERENCE)
    return True


def _save(fig: Figure, path: Path) -> Path:
    """``path`` (PNG) and the same name as PDF; returns the PNG's path."""
    figstyle.save(fig, path, ("png", "pdf"))
    return path


def _labels(groups: list[Group], keys: list[str]) -> list[str]:
    return figstyle.legend_labels([g.runs[0].config for g in groups], keys)


def _legend(fig: Figure, ax: Any, groups: list[Group], extras: dict[str, Any]) -> None:
    handles, labels = ax.get_legend_handles_labels()
    labels, title = figstyle.seed_labels(labels, [len(g.runs) for g in groups][:len(labels)])
    figstyle.legend_below(fig, handles + list(extras.values()), labels + list(extras), title)


def fig_curves(groups: list[Group], metric: str, path: Path) -> Path:
    """Median (+ IQR across ≥ 2 seeds) of the metric, and of ‖w − w*‖ against the §4.4 reference;
    log-log where the metric is a rate or the step size decays."""
    inverse = any(g.flat.get("train.lr.schedule") == "inverse" for g in groups)
    loglog = inverse or figstyle.loglog(metric, "round")
    with_theory = any(g.has("theory_dist") or g.has("theory_bound") for g in groups)
    labels = (_labels(groups, list(groups[0].values)) if len(groups) > 1
              else [figstyle.describe(groups[0].runs[0].config)])
    extras: dict[str, Any] = {}
    with figstyle.style():
        fig, axes = figstyle.new_figure(2 if with_theory else 1)
        ax = axes[0][0]
        for i, (g, label) in enumerate(zip(groups, labels, strict=True)):
            x, Y = g.matrix(metric)
            keep = x > 0 if loglog else slice(None)
            line = _band(ax, x[keep], Y[:, keep], label, **figstyle.group_style(i))
            if _virtual_average(ax, g, metric, "round", line.get_color(), positive=loglog):
                extras["virtual average (held by no UE)"] = Line2D([], [], color="0.3", **figstyle.REFERENCE)
        ax.set(ylabel=figstyle.axis_label(metric), yscale="log" if metric in figstyle.LOG_METRICS or loglog
               else "linear", xscale="log" if loglog else "linear")
        if with_theory:
            extras |= _theory_panel(axes[1][0], groups)
        axes[-1][0].set_xlabel(figstyle.axis_label("round"))
        _legend(fig, ax, groups, extras)
    return _save(fig, path)


def _theory_panel(ax: Any, groups: list[Group]) -> dict[str, Any]:
    """Measured distance (or err_p) per group beside its theory curve, log-log."""
    extras, measured = {}, set()
    for i, g in enumerate(groups):
        meas, theo = ("dist", "theory_dist") if g.has("theory_dist") else ("err_p", "theory_bound")
        if not g.has(theo):
            continue
        x, Y = g.matrix(meas)
        style = figstyle.group_style(i)
        _band(ax, x[x > 0], Y[:, x > 0], "_nolegend_", **style)
        xt, Yt = g.matrix(theo)
        ax.plot(xt[xt > 0], np.nanmedian(Yt, axis=0)[xt > 0], color=style["color"], **THEORY)
        name = "theory: §4.4 median" if theo == "theory_dist" else "theory: Thm A bound"
        extras[name] = Line2D([], [], color="0.3", **THEORY)
        measured.add(meas)
    ax.set(ylabel=figstyle.axis_label("dist" if "dist" in measured else "err_p"), xscale="log", yscale="log")
    return extras


#: The heat map's y axis, by the key that sets the interference level.
LEVEL_LABELS = {"channel.scale": "interference scale c", "channel.gsnr_db": "GSNR [dB]",
                "channel.dispersion": "interference dispersion"}


def fig_heatmap(cells: dict[tuple[float, float | None], float], path: Path, title: str,
                level_key: str | None = None) -> Path:
    """Median rounds to target per (α, level) cell; "never" where no seed reached it."""
    alphas = sorted({a for a, _ in cells}, reverse=True)
    levels = sorted({lv for _, lv in cells}, key=lambda v: (v is None, v))
    M = np.full((len(levels), len(alphas)), np.nan)
    for (a, lv), v in cells.items():
        M[levels.index(lv), alphas.index(a)] = v
    with figstyle.style():
        fig = Figure(figsize=(figstyle.COLUMN_WIDTH, 0.32 * len(levels) + 1.3), layout="constrained")
        ax = fig.add_subplot()
        im = ax.imshow(M, cmap="viridis_r", aspect="auto")
        for i in range(M.shape[0]):
            for j in range(M.shape[1]):
                dark = np.isfinite(M[i, j]) and np.dot(im.cmap(im.norm(M[i, j]))[:3], (0.299, 0.587, 0.114)) < 0.5
                ax.text(j, i, "never" if not np.isfinite(M[i, j]) else f"{M[i, j]:.0f}", ha="center",
                        va="center", color="w" if dark else "k", fontsize=7)
        ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
        ax.set_yticks(range(len(levels)), ["—" if lv is None else f"{lv:g}" for lv in levels])
        ax.set(xlabel="tail index α (2 = Gaussian)", ylabel=LEVEL_LABELS.get(level_key or "", "interference level"),
               title=title)
        ax.grid(False)
        fig.colorbar(im, ax=ax, label="median rounds to target")
    return _save(fig, path)


def _panels(groups: list[Group], split_key: str, panel_key: str | None) -> dict[str, list[Group]]:
    """Groups by the value of ``panel_key`` (or of every differing key except ``split_key``)."""
    keys = list(groups[0].values)
    if panel_key is not None:
        groups = sorted(groups, key=lambda g: sortable(g.values.get(panel_key)))
        titles = _labels(groups, [panel_key])
    else:
        titles = _labels(groups, [k for k in keys if k != split_key]) if len(keys) > 1 else ["" for _ in groups]
    panels: dict[str, list[Group]] = {}
    for g, title in zip(groups, titles, strict=True):
        panels.setdefault(title, []).append(g)
    return panels


def fig_panels(groups: list[Group], split_key: str, metric: str, x: str, path: Path,
               panel_key: str | None = None) -> Path:
    """One panel per value of ``panel_key`` (or per combination of the other keys); inside,
    one median (+ IQR) line per value of ``split_key`` (or of the keys other than ``panel_key``),
    each in the same style in every panel. Log-log where the metric is a rate against rounds."""
    keys = list(groups[0].values)
    line_keys = [k for k in keys if k != panel_key] if panel_key is not None else [split_key]
    line_label = dict(zip((id(g) for g in groups), _labels(groups, line_keys), strict=True))
    order = list(dict.fromkeys(line_label[id(g)] for g in groups))
    items = list(_panels(groups, split_key, panel_key).items())[:8]
    loglog = figstyle.loglog(metric, x)
    extras: dict[str, Any] = {}
    ncols = 1 if len(items) <= 3 else 2 if len(items) == 4 else 4
    with figstyle.style():
        fig, axes = figstyle.new_figure(len(items), ncols=ncols, panel_height=1.6)
        panel_width = fig.get_figwidth() / ncols
        for k, (ax, (title, members)) in enumerate(zip(axes.flat, items, strict=False)):
            for g in members:
                xs, Y = g.matrix(metric, x)
                keep = xs > 0 if loglog else slice(None)
                label = line_label[id(g)]
                line = _band(ax, xs[keep], Y[:, keep], label, **figstyle.group_style(order.index(label)))
                if _virtual_average(ax, g, metric, x, line.get_color(), positive=loglog):
                    extras["virtual average (held by no UE)"] = Line2D([], [], color="0.3", **figstyle.REFERENCE)
            ax.set(title=figstyle.wrap(title, panel_width), yscale="log" if metric in figstyle.LOG_METRICS
                   else "linear", xscale="log" if loglog else "linear")
            if k % ncols == 0:  # the same metric in every panel: label the first column only
                ax.set_ylabel(figstyle.axis_label(metric))
            if k + ncols >= len(items):
                ax.set_xlabel(figstyle.axis_label(x))
        _shared_legend(fig, axes, groups, line_label, extras)
    return _save(fig, path)


def _shared_legend(fig: Figure, axes: Any, groups: list[Group], line_label: dict[int, str],
                   extras: dict[str, Any]) -> None:
    """One legend under the panels (every panel draws the same series), so none hides a curve."""
    seen: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    seeds = {lab: min(len(g.runs) for g in groups if line_label[id(g)] == lab) for lab in seen}
    labels, title = figstyle.seed_labels(list(seen), [seeds[lab] for lab in seen])
    figstyle.legend_below(fig, list(seen.values()) + list(extras.values()), labels + list(extras), title)
