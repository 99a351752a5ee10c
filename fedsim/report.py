"""``fedsim report``: figures and analytics tables from run directories and sweep folders.

Runs that differ only in their seed form a group; every number across seeds is a median with
its interquartile range (reference §8 item 16), never a bare mean. The report holds

- measured vs theory curves (log-log when the step size decays, §4.3–4.4),
- fitted log-log exponents with a bootstrap CI across seeds against the theoretical ones,
- rounds-to-target and time-to-target per group,
- a heat map of rounds-to-target over (α, interference level) when runs differ in α,
- server vs server-free panels when the strategy differs,
- accuracy (or loss) against simulated time per latency ratio, with the measured overlap
  speed-up against the §5 prediction, when runs differ in latency ratio or overlap,
- the found architecture, its cost and its retrained accuracy, for architecture searches.

Output: ``<out>/report.md`` and ``<out>/figures/report-*.png``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from channels import ChannelConfig  # noqa: E402
from fedsim.analytics.errors import AnalyticsError  # noqa: E402
from fedsim.analytics.fits import rounds_to_target, seed_bands, seed_slopes, time_to_target  # noqa: E402
from fedsim.analytics.runtime import pipelined_speedup, time_to_accuracy_speedup  # noqa: E402
from fedsim.errors import FedsimError  # noqa: E402
from fedsim.plots import flatten  # noqa: E402
from fedsim.results.architecture import architecture_text  # noqa: E402
from fedsim.results.rundir import RunData, atomic_write_text, load_run  # noqa: E402
from fedsim.results.sweepdir import expand_run_dirs  # noqa: E402

#: Config keys that never define a group (bookkeeping, or the replicate index).
_IGNORED = {"name", "seed", "output.dir", "output.plot", "engine.name", "engine.ray_address",
            "engine.num_cpus", "engine.cpus_per_ue", "engine.object_store_mb"}
_LEVEL_KEYS = ("channel.scale", "channel.dispersion", "channel.gsnr_db")
#: Hitting times use a causal running median, so one lucky round does not count as reaching.
SMOOTH = 5
DPI = 80


@dataclass
class Group:
    """Runs with identical config except the seed."""

    label: str
    values: dict[str, Any]  # the differing keys' values
    runs: list[RunData]
    flat: dict[str, Any] = field(default_factory=dict)  # one member's flattened config

    def matrix(self, metric: str, x: str = "round") -> tuple[np.ndarray, np.ndarray]:
        """x values ``[T]`` and per-seed values ``[S, T]`` (NaN where absent or non-finite)."""
        xs_all = sorted({float(r[x]) for run in self.runs for r in run.metrics
                         if isinstance(r.get(metric), int | float) and isinstance(r.get(x), int | float)})
        pos = {v: i for i, v in enumerate(xs_all)}
        Y = np.full((len(self.runs), len(xs_all)), np.nan)
        for s, run in enumerate(self.runs):
            for r in run.metrics:
                v, xv = r.get(metric), r.get(x)
                if isinstance(v, int | float) and isinstance(xv, int | float) and math.isfinite(v):
                    Y[s, pos[float(xv)]] = float(v)
        return np.asarray(xs_all), Y

    def has(self, metric: str) -> bool:
        return any(metric in r for run in self.runs for r in run.metrics)

    @property
    def alpha(self) -> float | None:
        """Effective tail index: 2 for Gaussian interference, None without interference."""
        try:
            channel = ChannelConfig.model_validate(self.runs[0].config.get("channel", {}))
        except ValueError:  # a run directory written by another version
            return None
        return None if channel.interference.name == "none" else channel.alpha

    @property
    def level(self) -> float | None:
        for k in _LEVEL_KEYS:
            if self.flat.get(k) is not None:
                return float(self.flat[k])
        return None


# ------------------------------------------------------------------------------ loading


def load_groups(paths: Sequence[str | Path]) -> tuple[list[Group], list[str]]:
    """Load runs (sweep folders expand to their variants) and group them; returns the groups
    and the config keys that differ between them."""
    if not paths:
        raise FedsimError("give at least one run directory or sweep folder")
    for p in paths:
        if not Path(p).exists():
            raise FedsimError(f"{p}: no such run directory or sweep folder")
    runs = [load_run(p) for p in expand_run_dirs(list(paths))]
    runs = [r for r in runs if r.metrics]
    if not runs:
        raise FedsimError("none of these run directories has any metrics yet")
    flats = [flatten(r.config) for r in runs]
    keys = sorted({k for f in flats for k in f} - _IGNORED)
    differing = [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]
    by_key: dict[tuple, Group] = {}
    for run, f in zip(runs, flats, strict=True):
        vals = {k: f.get(k) for k in differing}
        key = tuple(repr(v) for v in vals.values())
        if key not in by_key:
            label = ", ".join(f"{_short(k, differing)}={v}" for k, v in vals.items()) or run.label
            by_key[key] = Group(label, vals, [], f)
        by_key[key].runs.append(run)
    return list(by_key.values()), differing


def _short(key: str, keys: list[str]) -> str:
    leaf = key.split(".")[-1]
    return leaf if leaf != "name" and sum(k.split(".")[-1] == leaf for k in keys) == 1 else key


# ------------------------------------------------------------------------------ statistics


def _fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.{digits}g}"


def _med_iqr(v: np.ndarray, digits: int = 3) -> str:
    """``median [q25, q75]`` over the finite entries, with the count of never/non-finite."""
    v = np.asarray(v, dtype=np.float64)
    ok = v[np.isfinite(v)]
    if ok.size == 0:
        return f"never ({v.size}/{v.size})" if v.size else "—"
    q1, m, q3 = np.quantile(ok, [0.25, 0.5, 0.75])
    miss = f", {v.size - ok.size} never" if ok.size < v.size else ""
    return f"{m:.{digits}g} [{q1:.{digits}g}, {q3:.{digits}g}]{miss}"


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
                slope = f"{fit.median:.3f} [{fit.ci_low:.3f}, {fit.ci_high:.3f}]"
            except AnalyticsError:
                slope = "too few points"
            rows.append(ExponentRow(g.label, metric, slope, _fmt(theory), source, len(g.runs)))
    return rows


# ------------------------------------------------------------------------------ figures


def _band(ax: Any, x: np.ndarray, Y: np.ndarray, label: str, **kw: Any) -> None:
    b = seed_bands(Y)
    (line,) = ax.plot(x, b.median, label=label + (f" (n={Y.shape[0]})" if Y.shape[0] > 1 else ""), **kw)
    if Y.shape[0] > 1:
        ax.fill_between(x, b.q25, b.q75, color=line.get_color(), alpha=0.2, linewidth=0)


def _save(fig: Any, path: Path) -> Path:
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
        _band(ax, x[keep], Y[:, keep], g.label)
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
        for g in sorted(groups, key=lambda g: _sortable(g.values.get(panel_key))):
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
            _band(ax, xs, Y, lab)
        ax.set(title=title, xlabel="simulated time [s]" if x == "sim_time" else "round", ylabel=metric)
        if metric in ("gap", "dist", "err_p", "loss"):
            ax.set_yscale("log")
        ax.title.set_fontsize(8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(items):]:
        ax.axis("off")
    return _save(fig, path)


def _sortable(v: Any) -> tuple:
    return (0, float(v)) if isinstance(v, int | float) else (1, str(v))


# ------------------------------------------------------------------------------ overlap


def overlap_rows(groups: list[Group], metric: str, target: float) -> list[dict[str, str]]:
    """Per latency ratio: time-to-target with and without overlap, the measured speed-up
    (per seed, paired by seed) and the §5 predictions."""
    by_ratio: dict[Any, dict[bool, Group]] = {}
    rest_keys = [k for k in groups[0].values if k not in ("timing.latency_ratio", "strategy.overlap.enabled")]
    if rest_keys:  # other axes: keep the comparison within one combination of them
        first = {k: groups[0].values[k] for k in rest_keys}
        groups = [g for g in groups if all(g.values[k] == v for k, v in first.items())]
    for g in groups:
        ratio = g.flat.get("timing.latency_ratio")
        by_ratio.setdefault(ratio, {})[bool(g.flat.get("strategy.overlap.enabled", False))] = g
    rows = []
    for ratio in sorted(by_ratio, key=_sortable):
        pair = by_ratio[ratio]
        if set(pair) != {False, True}:
            continue
        seq, ovl = pair[False], pair[True]
        R_s, T_s = hitting(seq, metric, target)
        R_o, T_o = hitting(ovl, metric, target)
        seeds_s = {r.config.get("seed"): i for i, r in enumerate(seq.runs)}
        paired = [T_s[seeds_s[r.config.get("seed")]] / T_o[j] for j, r in enumerate(ovl.runs)
                  if r.config.get("seed") in seeds_s]
        K = int(seq.flat.get("train.local_steps", 1))
        tau_cp = float(seq.flat.get("timing.tau_cp", 1e-3))
        tau_cm = float(ratio or 0.0) * tau_cp
        with np.errstate(all="ignore"):
            pred = time_to_accuracy_speedup(np.nanmedian(R_s), np.nanmedian(R_o), K=K, tau_cp=tau_cp, tau_cm=tau_cm)
        ideal = float(pipelined_speedup(max(1, int(seq.flat.get("rounds", 1))), K=K, tau_cp=tau_cp, tau_cm=tau_cm))
        rows.append({
            "latency ratio": _fmt(float(ratio or 0.0)),
            "rounds seq": _med_iqr(R_s), "rounds ovl": _med_iqr(R_o),
            "time seq [s]": _med_iqr(T_s), "time ovl [s]": _med_iqr(T_o),
            "measured speed-up": _med_iqr(np.asarray(paired)),
            "predicted S_eff (§5, measured R)": _fmt(float(pred)),
            "ideal 1+τcm/(Kτcp)": _fmt(ideal),
        })
    return rows


# ------------------------------------------------------------------------------ report


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_(none)_\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def search_rows(groups: list[Group]) -> list[dict[str, Any]]:
    """One row per search run (summary ``search`` section, fedsim.retrain)."""

    rows = []
    for g in groups:
        for run in g.runs:
            found = run.summary.get("search")
            if not found:
                continue
            res, re = found.get("resources", {}), found.get("retrain", {})
            final = re.get("final", {})
            rows.append({"group": g.label, "seed": run.summary.get("seed"),
                         "architecture": "`" + architecture_text(found.get("architecture")) + "`",
                         "params": res.get("params"), "FLOPs": res.get("flops"),
                         "latency [ms]": _fmt(res.get("latency_ms")),
                         "retrained": f"{re.get('status', 'not run')}"
                                      + (f" ({re['rounds']} rounds)" if "rounds" in re else ""),
                         "retrained accuracy": _fmt(final.get("accuracy")),
                         "retrained loss": _fmt(final.get("loss"))})
    return rows


def _constants_section(groups: list[Group]) -> str:
    row0 = next((r for g in groups for run in g.runs for r in run.metrics[:1] if "constants" in r), None)
    if row0 is None:
        return "_No constants were logged (runs predate online analytics)._\n"
    rows = [{"constant": k, "value": _fmt(v.get("value")) if isinstance(v.get("value"), float) else v.get("value"),
             "source": v.get("source", "")} for k, v in row0["constants"].items()]
    notes = "".join(f"- **{k}**: {v}\n" for k, v in row0.get("theory_notes", {}).items())
    return ("Constants of the first run (same workload for every run unless the workload differs):\n\n"
            + _table(rows) + "\nTheory values logged alongside the run:\n\n" + notes)


def _overhead_text(frac: np.ndarray) -> str:
    """Median [IQR] percentage, or "n/a" for runs that did not record analytics_s."""
    return _med_iqr(100 * frac, 2) + " %" if np.isfinite(frac).any() else "n/a"


def _overhead(g: Group) -> np.ndarray:
    """Per seed: time in OnlineAnalytics / wall time of the run (fraction)."""
    out = []
    for run in g.runs:
        spent = float(run.summary.get("analytics_s") or 0.0)
        wall = float(run.summary.get("wall_s") or np.nan)
        out.append(spent / wall if wall > 0 and spent > 0 else np.nan)
    return np.asarray(out)


def build_report(paths: Sequence[str | Path], out: str | Path | None = None,
                 target: float | None = None) -> Path:
    """Write ``report.md`` and ``figures/report-*.png`` into ``out`` (default: the first path).

    Args:
        paths: run directories and/or sweep folders.
        out: output folder; created if missing.
        target: value of the convergence metric (``gap`` where known, else ``loss``) that
            defines rounds-/time-to-target; default 1.5 × the median of the groups' final medians.
    Returns the path of report.md.
    """
    groups, differing = load_groups(paths)
    out_dir = Path(out) if out is not None else Path(paths[0])
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    metric = curve_metric(groups)
    target = default_target(groups, metric) if target is None else float(target)
    if not math.isfinite(target):
        raise FedsimError(f"--target must be finite, got {target}")
    figs: list[tuple[str, Path]] = []
    figs.append(("Measured vs theory", fig_curves(groups, metric, fig_dir / "report-curves.png")))

    summary = []
    cells: dict[tuple[float, float | None], list[float]] = {}
    for g in groups:
        R, T = hitting(g, metric, target)
        _, Y = g.matrix(metric)
        finals = np.array([row[np.isfinite(row)][-1] if np.isfinite(row).any() else np.nan for row in Y])
        nonfinite = sum(int(r.get("nonfinite", 0) or 0) for run in g.runs for r in run.metrics)
        statuses = sorted({str(run.summary.get("status", "?")) for run in g.runs})
        summary.append({"group": g.label, "seeds": len(g.runs), "status": "/".join(statuses),
                        f"final {metric}": _med_iqr(finals), "rounds to target": _med_iqr(R),
                        "sim time to target [s]": _med_iqr(T), "non-finite": nonfinite,
                        "analytics overhead": _overhead_text(_overhead(g))})
        if g.alpha is not None:
            with np.errstate(all="ignore"):
                cells.setdefault((g.alpha, g.level), []).append(float(np.nanmedian(R)) if np.isfinite(R).any()
                                                                 else np.nan)

    sections = []
    if len({a for a, _ in cells}) > 1:
        heat = {k: (float(np.nanmedian(v)) if np.isfinite(v).any() else np.nan) for k, v in cells.items()}
        figs.append(("Rounds to target over (α, interference level)",
                     fig_heatmap(heat, fig_dir / "report-heatmap.png", f"{metric} ≤ {target:.3g}")))
    if "strategy.name" in differing:
        figs.append(("Server vs server-free", fig_panels(groups, "strategy.name", metric, "round",
                                                         fig_dir / "report-server-vs-serverfree.png")))
    if "timing.latency_ratio" in differing or "strategy.overlap.enabled" in differing:
        acc = "accuracy" if all(g.has("accuracy") for g in groups) else metric
        panel = "timing.latency_ratio" if "timing.latency_ratio" in differing else None
        figs.append(("Accuracy vs simulated time per latency ratio",
                     fig_panels(groups, "strategy.overlap.enabled", acc, "sim_time",
                                fig_dir / "report-overlap.png", panel_key=panel)))
        sections.append("## Overlap speed-up (§5)\n\nTime to reach the target, sequential vs overlapped; "
                        "measured speed-up = per-seed T_seq/T_ovl (median [IQR]); predicted S_eff uses the "
                        "§5 pipelined model with the measured median rounds.\n\n"
                        + _table(overlap_rows(groups, metric, target)))

    searched = search_rows(groups)
    if searched:
        sections.append("## Architecture search\n\nThe architecture derived from each search run (server-free: "
                        "from the virtual average w̄), what it costs (parameters, FLOPs per example, median "
                        "CPU latency per example) and its test metrics after federated retraining from "
                        "scratch.\n\n" + _table(searched))
    ex = exponent_rows(groups)
    md = [f"# fedsim report\n\n{sum(len(g.runs) for g in groups)} runs in {len(groups)} groups "
          f"(differing keys: {', '.join(differing) or 'none'}). Across seeds: median [q25, q75].\n",
          f"Convergence metric: `{metric}`; target {metric} ≤ {target:.4g} (running median over "
          f"{SMOOTH} rounds).\n",
          "## Fitted exponents vs theory\n\nLog-log slope of each seed's curve against steps over the last "
          "90 % of the run; median over seeds with a 95 % bootstrap CI.\n\n"
          + _table([{"group": r.group, "metric": r.metric, "fitted exponent [95% CI]": r.slope,
                     "theory": r.theory, "theory source": r.source, "seeds": r.seeds} for r in ex]),
          "## Summary per group\n\n" + _table(summary),
          *sections,
          "## Constants and their sources\n\n" + _constants_section(groups),
          "## Figures\n\n" + "".join(f"### {t}\n\n![{t}](figures/{p.name})\n\n" for t, p in figs)]
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(md))
    return path
