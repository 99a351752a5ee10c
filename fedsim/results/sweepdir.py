"""Sweep folders read back: the index, the variants' run directories, and one row per variant.

    <output.dir>/<name>-<UTC timestamp>/
      index.json      name, created, total, keys, workers (parallel), and per variant: id,
                      assignments, run_dir (relative), status (pending, queued, running,
                      completed, diverged, failed, interrupted), error, and for a parallel
                      variant the task's wall_s / cpu_s; rewritten atomically as each variant ends
      sweep.toml      the resolved base config with its (flattened) sweep table
      <run dirs>      one ordinary run directory per variant (see fedsim.results.rundir)
      figures/        convergence.{png,pdf} (against round) and convergence-sim_time.{png,pdf}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedsim.errors import RunDirError
from fedsim.results.rundir import RunData, load_run

INDEX = "index.json"


def read_index(sweep_dir: str | Path) -> dict[str, Any]:
    """The parsed ``index.json`` of a sweep folder."""
    p = Path(sweep_dir) / INDEX
    if not p.exists():
        raise RunDirError(f"{sweep_dir}: not a fedsim sweep folder (no {INDEX})")
    try:
        index = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{p} is corrupt: {exc}") from None
    if not isinstance(index, dict) or not isinstance(index.get("variants"), list):
        raise RunDirError(f"{p} is corrupt: no list of variants")
    return index


def is_sweep_dir(path: str | Path) -> bool:
    """A sweep folder has an index.json and, unlike a run directory, no config.toml."""
    p = Path(path)
    return (p / INDEX).is_file() and not (p / "config.toml").exists()


def variant_run_dirs(sweep_dir: str | Path) -> list[Path]:
    """The run directories of a sweep's variants that exist, in variant order."""
    out = []
    for entry in read_index(sweep_dir)["variants"]:
        rd = entry.get("run_dir")
        if rd and (Path(sweep_dir) / rd / "config.toml").exists():
            out.append(Path(sweep_dir) / rd)
    return out


def expand_run_dirs(paths: list[str | Path] | tuple[str | Path, ...]) -> list[Path]:
    """Replace each sweep folder in ``paths`` by its variants' run directories."""
    out: list[Path] = []
    for p in paths:
        if is_sweep_dir(p):
            dirs = variant_run_dirs(p)
            if not dirs:
                raise RunDirError(f"{p}: this sweep has no variant run directories yet")
            out.extend(dirs)
        else:
            out.append(Path(p))
    return out


#: Runs given to be read: run directories, sweep folders (all their variants) or runs already loaded.
Runs = Sequence[str | Path | RunData]


def load_runs(items: Runs) -> list[RunData]:
    """``items`` loaded, a sweep folder as its variants' runs (a :class:`RunData` is taken as it is)."""
    runs: list[RunData] = []
    for item in items:
        runs += [item] if isinstance(item, RunData) else [load_run(p) for p in expand_run_dirs([item])]
    return runs


def sweep_table(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per variant: id, status, rounds, the final loss/accuracy/gap and, for architecture
    searches, the retrained architecture's accuracy (None if absent)."""
    rows = []
    for entry in read_index(sweep_dir)["variants"]:
        summary: dict[str, Any] = {}
        if entry.get("run_dir"):
            sp = Path(sweep_dir) / entry["run_dir"] / "summary.json"
            if sp.exists():
                summary = json.loads(sp.read_text(encoding="utf-8"))
        final = summary.get("final", {})
        retrained = summary.get("search", {}).get("retrain", {}).get("final", {})
        rows.append({"id": entry["id"], "status": entry.get("status"),
                     "rounds": summary.get("rounds"),
                     **{k: final.get(k) for k in ("loss", "accuracy", "gap")},
                     "retrained_accuracy": retrained.get("accuracy")})
    return rows


