"""Run folders as one tidy ``pandas.DataFrame``: one row per (run, round).

Columns, in order: ``sweep`` (the sweep folder's name, or None), ``variant`` (the variant id),
``run`` (the run directory's name), ``status``, ``seed``, then one column per config key whose
value differs between the loaded runs (the swept keys, dotted as in ``--set``), then ``round``
and every metric the rows hold (a key absent from a row is NaN). List-valued row entries (for
example ``failed_ues``) stay Python lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsim.errors import RunDirError
from fedsim.results.labels import differing_keys, flatten
from fedsim.results.rundir import load_run
from fedsim.results.sweepdir import is_sweep_dir, read_index

if TYPE_CHECKING:  # pandas is imported when a frame is built, not when fedsim is imported
    import pandas as pd

ID_COLUMNS = ("sweep", "variant", "run", "status", "seed")


def load(paths: str | Path | Sequence[str | Path]) -> pd.DataFrame:
    """A run folder, a sweep folder, or several of either, as one DataFrame (see the module doc).

    Raises RunDirError for a path that is neither, or a sweep with no variant folder yet.
    """
    import pandas as pd

    runs = _runs(paths)
    flats = [flatten(r["config"]) for r in runs]
    keys = differing_keys(flats)
    records: list[dict[str, Any]] = []
    for run, flat in zip(runs, flats, strict=True):
        ident = {"sweep": run["sweep"], "variant": run["variant"], "run": run["path"].name,
                 "status": run["status"], "seed": flat.get("seed"), **{k: flat.get(k) for k in keys}}
        records.extend({**ident, **row} for row in run["rows"])
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        return pd.DataFrame(columns=[*ID_COLUMNS, *keys, "round"])
    return frame


def _runs(paths: str | Path | Sequence[str | Path]) -> list[dict[str, Any]]:
    if isinstance(paths, str | Path):
        paths = [paths]
    runs: list[dict[str, Any]] = []
    for p in map(Path, paths):
        if is_sweep_dir(p):
            runs.extend(_sweep_runs(p))
        elif (p / "config.toml").exists():
            runs.append(_one_run(p, sweep=None, variant=None, status=None))
        else:
            raise RunDirError(f"{p}: neither a fedsim run directory (config.toml) nor a sweep folder (index.json)")
    return runs


def _sweep_runs(sweep_dir: Path) -> list[dict[str, Any]]:
    out = []
    for entry in read_index(sweep_dir)["variants"]:
        rd = entry.get("run_dir")
        if rd and (sweep_dir / rd / "config.toml").exists():
            out.append(_one_run(sweep_dir / rd, sweep=sweep_dir.name, variant=entry.get("id"),
                                status=entry.get("status")))
    if not out:
        raise RunDirError(f"{sweep_dir}: this sweep has no variant run directories yet")
    return out


def _one_run(path: Path, *, sweep: str | None, variant: str | None, status: str | None) -> dict[str, Any]:
    run = load_run(path)
    return {"path": path, "config": run.config, "rows": run.metrics, "sweep": sweep, "variant": variant,
            "status": status or run.summary.get("status")}
