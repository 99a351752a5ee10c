"""``report.md``: the tables and figures of a report, assembled."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.errors import FedsimError
from fedsim.report.figures import fig_curves, fig_heatmap, fig_panels
from fedsim.report.groups import SMOOTH, Group, load_groups
from fedsim.report.stats import (
    curve_metric,
    default_target,
    exponent_rows,
    fmt,
    hitting,
    med_iqr,
    overlap_rows,
)
from fedsim.results.architecture import architecture_text
from fedsim.results.rundir import atomic_write_text


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
                         "latency [ms]": fmt(res.get("latency_ms")),
                         "retrained": f"{re.get('status', 'not run')}"
                                      + (f" ({re['rounds']} rounds)" if "rounds" in re else ""),
                         "retrained accuracy": fmt(final.get("accuracy")),
                         "retrained loss": fmt(final.get("loss"))})
    return rows


def _constants_section(groups: list[Group]) -> str:
    row0 = next((r for g in groups for run in g.runs for r in run.metrics[:1] if "constants" in r), None)
    if row0 is None:
        return "_No constants were logged (runs predate online analytics)._\n"
    rows = [{"constant": k, "value": fmt(v.get("value")) if isinstance(v.get("value"), float) else v.get("value"),
             "source": v.get("source", "")} for k, v in row0["constants"].items()]
    notes = "".join(f"- **{k}**: {v}\n" for k, v in row0.get("theory_notes", {}).items())
    return ("Constants of the first run (same workload for every run unless the workload differs):\n\n"
            + _table(rows) + "\nTheory values logged alongside the run:\n\n" + notes)


def _overhead_text(frac: np.ndarray) -> str:
    """Median [IQR] percentage, or "n/a" for runs that did not record analytics_s."""
    return med_iqr(100 * frac, 2) + " %" if np.isfinite(frac).any() else "n/a"


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
    """Write ``report.md`` and ``figures/report-*.png`` (each with a PDF beside it) into ``out``
    (default: the first path).

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
    figs = [("Measured vs theory", fig_curves(groups, metric, fig_dir / "report-curves.png"))]
    summary, cells = _summary_rows(groups, metric, target)
    more_figs, sections = _optional_parts(groups, differing, metric, target, cells, fig_dir)
    figs += more_figs
    ex = exponent_rows(groups)
    md = [f"# fedsim report\n\n{sum(len(g.runs) for g in groups)} runs in {len(groups)} groups "
          f"(differing keys: {', '.join(differing) or 'none'}). Across seeds: median [q25, q75]; a group "
          "with a single seed shows its value alone, and its figures draw no band.\n",
          f"Convergence metric: `{metric}`; target {metric} ≤ {target:.4g} (running median over "
          f"{SMOOTH} rounds). For strategies whose UEs keep their own models, `{metric}` is the median over "
          "the UEs' models; the virtual average of their models, held by no UE, is shown as a reference "
          "only.\n",
          "## Fitted exponents vs theory\n\nLog-log slope of each seed's curve against steps over the last "
          "90 % of the run; median over seeds with a 95 % bootstrap CI of the median (percentile; "
          "`[—]`: a single seed, no interval).\n\n"
          + _table([{"group": r.group, "metric": r.metric, "fitted exponent [95% CI]": r.slope,
                     "theory": r.theory, "theory source": r.source, "seeds": r.seeds} for r in ex]),
          "## Summary per group\n\n" + _table(summary),
          *sections,
          "## Constants and their sources\n\n" + _constants_section(groups),
          "## Figures\n\n" + "".join(f"### {t}\n\n![{t}](figures/{p.name})\n\n"
                                  f"[PDF](figures/{p.with_suffix('.pdf').name})\n\n" for t, p in figs)]
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(md))
    return path


def _summary_rows(groups: list[Group], metric: str, target: float
                  ) -> tuple[list[dict[str, Any]], dict[tuple[float, float | None], list[float]]]:
    """One summary row per group, and the median rounds-to-target per (α, level) cell."""
    summary = []
    cells: dict[tuple[float, float | None], list[float]] = {}
    for g in groups:
        R, T = hitting(g, metric, target)
        nonfinite = sum(int(r.get("nonfinite", 0) or 0) for run in g.runs for r in run.metrics)
        statuses = sorted({str(run.summary.get("status", "?")) for run in g.runs})
        avg = med_iqr(_finals(g, f"avg_{metric}")) if g.has(f"avg_{metric}") else "—"
        summary.append({"group": g.label, "seeds": len(g.runs), "status": "/".join(statuses),
                        f"final {metric}": med_iqr(_finals(g, metric)),
                        f"final {metric}, virtual average (held by no UE)": avg, "rounds to target": med_iqr(R),
                        "sim time to target [s]": med_iqr(T), "non-finite": nonfinite,
                        "analytics overhead": _overhead_text(_overhead(g))})
        if g.alpha is not None:
            with np.errstate(all="ignore"):
                cells.setdefault((g.alpha, g.level), []).append(float(np.nanmedian(R)) if np.isfinite(R).any()
                                                                 else np.nan)
    return summary, cells


def _finals(g: Group, metric: str) -> np.ndarray:
    """Each seed's last finite value of ``metric``."""
    _, Y = g.matrix(metric)
    return np.array([row[np.isfinite(row)][-1] if np.isfinite(row).any() else np.nan for row in Y])


def _optional_parts(groups: list[Group], differing: list[str], metric: str, target: float,
                    cells: dict[tuple[float, float | None], list[float]], fig_dir: Path
                    ) -> tuple[list[tuple[str, Path]], list[str]]:
    """Figures and sections that apply only when the runs differ in α, strategy, latency or overlap,
    or are architecture searches."""
    figs, sections = [], []
    if len({a for a, _ in cells}) > 1:
        heat = {k: (float(np.nanmedian(v)) if np.isfinite(v).any() else np.nan) for k, v in cells.items()}
        figs.append(("Rounds to target over (α, interference level)",
                     fig_heatmap(heat, fig_dir / "report-heatmap.png", f"{metric} ≤ {target:.3g}",
                                 level_key=groups[0].level_key)))
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
                        "measured speed-up = per-seed T_seq/T_ovl, each schedule with the rounds it needed "
                        "(median [IQR]); the prediction is the §5 pipelined model at the sequential run's "
                        "rounds, i.e. assuming the stale aggregates cost no extra rounds. 'never': the "
                        "target was not reached.\n\n"
                        + _table(overlap_rows(groups, metric, target)))
    searched = search_rows(groups)
    if searched:
        sections.append("## Architecture search\n\nThe architecture derived from each search run (server-free: "
                        "from the virtual average w̄), what it costs (parameters, FLOPs per example, median "
                        "CPU latency per example) and its test metrics after federated retraining from "
                        "scratch.\n\n" + _table(searched))
    return figs, sections
