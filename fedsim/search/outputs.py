"""A search folder's outputs: ``candidates.csv``, the best-so-far and regret curves over seeds
(``curves.csv`` and ``figures/search-curves.{png,pdf}``) and ``summary.json``.

The incumbent after n evaluations is, among the evaluations at the highest fidelity reached so
far (the sum of the fidelity level indices), the one with the best reward. Its value is its
full-fidelity value where the benchmark knows it without running (tabular mode), else the value
its run measured. Regret is the distance of that value to the optimum: the table's best
full-fidelity value (tabular), else the best full-fidelity value any trace of this search
measured (live). Curves are the median and interquartile range over seeds, against the number of
evaluations and against the cumulative simulated time (the candidates' ``cost``).
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fedsim import figstyle
from fedsim.results.rundir import atomic_write_text, dumps
from fedsim.search.objective import Benchmark
from fedsim.search.spec import SearchSpec

__all__ = ["incumbent_values", "summarise", "write_outputs"]

TIME_POINTS = 60


def _rank(bench: Benchmark, fidelity: dict[str, Any]) -> int:
    return sum(d.values.index(fidelity[d.key]) for d in bench.fidelity.dims if fidelity.get(d.key) in d.values)


def incumbent_values(records: list[dict[str, Any]], bench: Benchmark, maximize: bool) -> np.ndarray:
    """The incumbent's value after each evaluation of one trace (records in order)."""
    sign = 1.0 if maximize else -1.0
    best_key: tuple[int, float] | None = None
    best: float = float("nan")
    out = np.empty(len(records))
    for i, r in enumerate(records):
        key = (_rank(bench, r["fidelity"]), sign * float(r["reward"]))
        if best_key is None or key > best_key:
            best_key = key
            known = bench.full_value(r["config"])
            best = float(known) if known is not None else float(r["value"])
        out[i] = best
    return out


def _optimum(records: list[dict[str, Any]], bench: Benchmark, maximize: bool) -> float:
    known = bench.optimum()
    if known is not None:
        return float(known)
    top = max((_rank(bench, r["fidelity"]) for r in records), default=0)
    values = [r["value"] for r in records if _rank(bench, r["fidelity"]) == top and not r.get("failed")]
    return float(max(values) if maximize else min(values)) if values else float("nan")


def _bands(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    count = np.sum(np.isfinite(m), axis=0)
    with warnings.catch_warnings():  # a column without any value is NaN, said by `seeds` = 0
        warnings.simplefilter("ignore", RuntimeWarning)
        q = np.nanpercentile(np.where(np.isfinite(m), m, np.nan), [25, 50, 75], axis=0)
    return q[1], q[0], q[2], count


def summarise(records: list[dict[str, Any]], bench: Benchmark, spec: SearchSpec) -> list[dict[str, Any]]:
    """Rows of ``curves.csv``: per method and axis (``evaluations`` or ``sim_time``) and x, the
    median and IQR over seeds of the incumbent's value (``best``) and of the regret."""
    opt = _optimum(records, bench, spec.maximize)
    sign = 1.0 if spec.maximize else -1.0
    traces: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for method in spec.methods:
        for seed in spec.seeds:
            recs = sorted((r for r in records if r["method"] == method and r["seed"] == seed), key=lambda r: r["n"])
            if recs:
                traces.setdefault(method, []).append(
                    (incumbent_values(recs, bench, spec.maximize), np.array([r["cum_cost"] for r in recs])))
    costs = np.concatenate([c for tr in traces.values() for _, c in tr]) if traces else np.zeros(1)
    lo, hi = max(float(costs[costs > 0].min()) if (costs > 0).any() else 1e-9, 1e-12), max(float(costs.max()), 1e-9)
    grid_t = np.geomspace(lo, max(hi, lo * 1.0001), TIME_POINTS)
    rows: list[dict[str, Any]] = []
    for method, tr in traces.items():
        n = max(len(v) for v, _ in tr)
        evals = np.array([np.pad(v, (0, n - len(v)), mode="edge") for v, _ in tr])
        timed = np.array([_at_times(v, c, grid_t) for v, c in tr])
        for axis, xs, m in (("evaluations", np.arange(1, n + 1), evals), ("sim_time", grid_t, timed)):
            b = _bands(m)
            r = _bands(sign * (opt - m))
            for j, x in enumerate(xs):
                rows.append({"method": method, "axis": axis, "x": float(x), "seeds": int(b[3][j]),
                             "best_median": b[0][j], "best_q25": b[1][j], "best_q75": b[2][j],
                             "regret_median": r[0][j], "regret_q25": r[1][j], "regret_q75": r[2][j]})
    return rows


def _at_times(values: np.ndarray, cum_cost: np.ndarray, grid: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(cum_cost, grid, side="right") - 1
    return np.where(idx >= 0, values[np.clip(idx, 0, None)], np.nan)


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: (json.dumps(v, sort_keys=True) if isinstance(v, dict) else v) for k, v in row.items()})
    return buf.getvalue()


def plot_curves(rows: list[dict[str, Any]], out: Path, metric: str) -> list[Path]:
    """Regret against evaluations and against simulated time, one line per method (median, IQR band)."""
    with figstyle.style():
        fig, axes = figstyle.new_figure(2, ncols=2, width=figstyle.PAGE_WIDTH)
        methods = list(dict.fromkeys(r["method"] for r in rows))
        handles = []
        for i, method in enumerate(methods):
            st = figstyle.group_style(i)
            for ax, axis in zip(axes.flat, ("evaluations", "sim_time"), strict=True):
                sel = [r for r in rows if r["method"] == method and r["axis"] == axis]
                x = np.array([r["x"] for r in sel])
                med = np.array([r["regret_median"] for r in sel], dtype=float)
                (line,) = ax.plot(x, med, **st)
                ax.fill_between(x, [r["regret_q25"] for r in sel], [r["regret_q75"] for r in sel],
                                color=st["color"], alpha=0.2, linewidth=0)
            n_seeds = max((r["seeds"] for r in rows if r["method"] == method), default=0)
            handles.append((line, f"{method} ({n_seeds} seeds)"))
        axes.flat[0].set_xlabel("evaluations")
        axes.flat[1].set_xlabel("simulated time [s]")
        axes.flat[1].set_xscale("log")
        for ax in axes.flat:
            ax.set_ylabel(f"regret ({metric})")
        figstyle.legend_below(fig, [h for h, _ in handles], [lab for _, lab in handles],
                              title="median and IQR over seeds")
    return figstyle.save(fig, out)


def write_outputs(folder: Path, spec: SearchSpec, bench: Benchmark, records: list[dict[str, Any]],
                  plot: bool = True) -> None:
    """candidates.csv, curves.csv, the figure and summary.json (the best candidate per trace)."""
    cols = ["method", "seed", "n", "config", "fidelity", "value", "reward", "reward_exact", "cost", "cum_cost",
            "status", "run_dir", "failed", "reused_from"]
    atomic_write_text(folder / "candidates.csv", _csv(records, cols))
    rows = summarise(records, bench, spec)
    curve_cols = ["method", "axis", "x", "seeds", "best_median", "best_q25", "best_q75",
                  "regret_median", "regret_q25", "regret_q75"]
    atomic_write_text(folder / "curves.csv", _csv(rows, curve_cols))
    if rows and plot:
        plot_curves(rows, folder / "figures" / "search-curves", spec.metric)
    finals = [r for r in rows if r["axis"] == "evaluations"]
    last = {m: max((r for r in finals if r["method"] == m), key=lambda r: r["x"])
            for m in {r["method"] for r in finals}}
    summary = {"name": spec.name, "mode": spec.mode, "metric": spec.metric, "evaluations": len(records),
               "final": {m: {k: r[k] for k in ("x", "best_median", "best_q25", "best_q75", "regret_median")}
                         for m, r in sorted(last.items())}}
    atomic_write_text(folder / "summary.json", json.dumps(json.loads(dumps(summary)), indent=2) + "\n")
