"""Running a sweep's variants in one sweep folder (see :mod:`fedsim.results.sweepdir` for its
layout): in parallel as Ray tasks (the base engine ``ray``, :mod:`fedsim.parallel`) or one after
another in this process (``inline``)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fedsim.config import ExperimentConfig, to_toml_dict
from fedsim.errors import ConfigError, FedsimError, RunDirError, RunInterrupted
from fedsim.parallel import pack_run_dir, run_or_continue, run_parallel, unpack_run_dir
from fedsim.plots import plot_runs
from fedsim.results.rundir import atomic_write_text, dumps, stamped_dir
from fedsim.results.sweepdir import INDEX, load_runs, read_index, variant_run_dirs
from fedsim.sweep.expand import Variant
from fedsim.sweep.preflight import preflight_sweep
from fedsim.sweep.resume import DONE, is_done, resumable_run_dirs

__all__ = ["DONE", "new_sweep_dir", "run_sweep"]


def run_sweep(variants: list[Variant], base_cfg: ExperimentConfig, *, quiet: bool = False,
              resume: Path | None = None, plot: bool = True, parallel: bool | None = None) -> Path:
    """Run ``variants`` in a sweep folder and return that folder.

    ``parallel`` (default: the base engine is ``ray``) runs the variants as Ray tasks, one CPU
    each, every task on the inline engine over the same Flower apps (see :mod:`fedsim.parallel`):
    over the local cores, or over the cluster at ``engine.ray_address`` / ``RAY_ADDRESS``.
    Otherwise (base engine ``inline``) they run one after another in this process. Either way a
    variant's metrics equal those of running it alone.

    Every variant first passes a single run's preflight (:mod:`.preflight`): a FedsimError
    naming the first bad variant, and nothing written, if one would fail it.

    A new folder ``<base_cfg.output.dir>/<name>-<UTC timestamp>/`` is created unless
    ``resume`` names an existing sweep folder; then variants recorded as completed or
    diverged (whose run directory still exists) are skipped and the rest rerun, each from the
    last checkpoint of its unfinished run directory where there is one (:mod:`.resume`). A variant
    that raises is recorded as failed and the sweep goes on; Ctrl-C records ``interrupted``
    (shutting Ray down) and raises :class:`RunInterrupted` naming the folder (``fedsim run
    --resume`` continues it). ``index.json`` is rewritten atomically as each variant finishes.
    ``plot`` writes the overall figures at the end.
    """
    if parallel is None:
        parallel = base_cfg.engine.name == "ray"
    preflight_sweep(variants, base_cfg, parallel=parallel, folder=resume)
    sweep_dir, index = _open_sweep(variants, base_cfg, resume)
    todo = [i for i, entry in enumerate(index["variants"]) if not is_done(sweep_dir, entry)]
    partial = resumable_run_dirs(sweep_dir, index, variants) if resume is not None else {}
    progress = None if quiet else _progress()
    task = None
    if progress is not None:
        progress.start()
        task = progress.add_task(base_cfg.name, total=len(variants),
                                 completed=len(variants) - len(todo), current="")
    try:
        if parallel:
            _run_parallel(variants, todo, partial, base_cfg, sweep_dir, index, progress, task)
        else:
            _run_sequential(variants, todo, partial, sweep_dir, index, progress, task)
    except KeyboardInterrupt as exc:  # the index already says which variants were cut off
        raise RunInterrupted(f"sweep interrupted by the user; continue with: fedsim run --resume {sweep_dir}") from exc
    finally:
        if progress is not None:
            progress.stop()
    index["finished"] = datetime.now(UTC).isoformat()
    _write_index(sweep_dir, index)
    if plot:
        _plot_sweep(sweep_dir, index)
    return sweep_dir


def _open_sweep(variants: list[Variant], base_cfg: ExperimentConfig, resume: Path | None
                ) -> tuple[Path, dict[str, Any]]:
    """A new sweep folder with its index (and sweep.toml), or the folder being resumed."""
    if resume is not None:
        sweep_dir = Path(resume)
        index = _resume_index(sweep_dir, variants)
    else:
        sweep_dir = new_sweep_dir(base_cfg.output.dir, base_cfg.name)
        index = {
            "name": base_cfg.name,
            "created": datetime.now(UTC).isoformat(),
            "total": len(variants),
            "keys": base_cfg.sweep,
            "variants": [{"id": v.id, "assignments": v.assignments, "run_dir": None, "status": "pending"}
                         for v in variants],
        }
        atomic_write_text(sweep_dir / "sweep.toml", tomli_w.dumps(to_toml_dict(base_cfg)))
    _write_index(sweep_dir, index)
    return sweep_dir, index


def _run_sequential(variants: list[Variant], todo: list[int], partial: dict[int, Path], sweep_dir: Path,
                    index: dict[str, Any], progress: Any, task: Any) -> None:
    """The unfinished variants one after another in this process."""
    for i in todo:
        variant, entry = variants[i], index["variants"][i]
        if progress is not None and task is not None:
            progress.update(task, current=variant.id)
        entry.update(status="running", run_dir=partial[i].name if i in partial else None)
        entry.pop("error", None)
        _write_index(sweep_dir, index)
        _run_variant(variant, sweep_dir, entry, index, partial.get(i))
        if progress is not None and task is not None:
            progress.advance(task)


def _run_parallel(variants: list[Variant], todo: list[int], partial: dict[int, Path], base_cfg: ExperimentConfig,
                  sweep_dir: Path, index: dict[str, Any], progress: Any, task: Any) -> None:
    """The unfinished variants as Ray tasks; each result is written and indexed as it lands. A
    variant with a run directory to continue ships it to its task, and the continued run lands
    as a new run directory that replaces it."""
    entries = index["variants"]
    for i in todo:
        entries[i].update(status="queued", run_dir=partial[i].name if i in partial else None)
        entries[i].pop("error", None)
    _write_index(sweep_dir, index)
    finished: set[int] = set()

    def started(workers: int) -> None:
        index["workers"] = workers
        if progress is not None and task is not None:
            progress.update(task, current=f"{workers} workers")

    def landed(i: int, result: dict[str, Any]) -> None:
        entry = entries[i]
        if result.get("name") and result.get("files"):
            entry["run_dir"] = unpack_run_dir(sweep_dir, result["name"], result["files"]).name
            if i in partial:  # the continued copy is whole on disk; the old one is superseded
                shutil.rmtree(partial[i], ignore_errors=True)
        entry["status"] = result["status"]
        if result.get("error"):
            entry["error"] = result["error"]
        for key in ("wall_s", "cpu_s"):  # the task's own seconds: how busy the workers were
            if key in result:
                entry[key] = result[key]
        finished.add(i)
        _write_index(sweep_dir, index)
        if progress is not None and task is not None:
            progress.update(task, advance=1, current=variants[i].id)

    try:
        jobs = [(i, variants[i].config, (partial[i].name, pack_run_dir(partial[i])) if i in partial else None)
                for i in todo]
        run_parallel(jobs, base_cfg.engine, landed, started)
    except BaseException as exc:
        for i in todo:
            if i not in finished:
                entries[i]["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                if not isinstance(exc, KeyboardInterrupt):
                    entries[i]["error"] = f"{type(exc).__name__}: {exc}"
        _write_index(sweep_dir, index)
        raise


def new_sweep_dir(out_dir: str | Path, name: str) -> Path:
    """Create ``out_dir/<name>-<UTC timestamp>`` (suffixed if taken); no subfolders."""
    try:
        return stamped_dir(out_dir, name)
    except OSError as exc:  # the preflight checked the folder; this is a race with someone else
        raise RunDirError(f"cannot create a sweep folder under output.dir = {str(out_dir)!r}: "
                          f"{exc.strerror or exc}; choose a writable folder with --out") from None


def _run_variant(variant: Variant, sweep_dir: Path, entry: dict[str, Any],
                 index: dict[str, Any], partial: Path | None = None) -> None:
    cfg = variant.config.model_copy(deep=True)
    cfg.output.dir = str(sweep_dir)
    before = {p.name for p in sweep_dir.iterdir()}
    try:
        # The sweep shows its own progress; a per-variant bar would fight with it.
        run_dir = run_or_continue(cfg, partial)
        entry["run_dir"] = run_dir.name
        entry["status"] = _summary_status(run_dir)
    except BaseException as exc:  # noqa: BLE001 - one bad variant must not end the sweep
        new = sorted({p.name for p in sweep_dir.iterdir() if p.is_dir()} - before - {"figures"})
        entry["run_dir"] = new[0] if len(new) == 1 else (partial.name if partial is not None else None)
        entry["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        entry["error"] = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, Exception):
            _write_index(sweep_dir, index)
            raise
    _write_index(sweep_dir, index)


def _summary_status(run_dir: Path) -> str:
    try:
        return str(json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))["status"])
    except (OSError, ValueError, KeyError):
        return "failed"


def _resume_index(sweep_dir: Path, variants: list[Variant]) -> dict[str, Any]:
    index = read_index(sweep_dir)
    recorded = [(e.get("id"), e.get("assignments")) for e in index["variants"]]
    wanted = [(v.id, v.assignments) for v in variants]
    if recorded != wanted:
        pairs = zip(recorded, wanted, strict=False)
        diff = next((f"recorded {r[0]!r}, now {w[0]!r}" for r, w in pairs if r != w),
                    f"recorded {len(recorded)} variants, now {len(wanted)}")
        raise ConfigError(f"cannot resume {sweep_dir}: its variants differ from this experiment's "
                          f"({diff}); start a new sweep instead")
    index["total"] = len(variants)
    index.pop("finished", None)
    return index


def _write_index(sweep_dir: Path, index: dict[str, Any]) -> None:
    index["updated"] = datetime.now(UTC).isoformat()
    atomic_write_text(sweep_dir / INDEX, json.dumps(json.loads(dumps(index)), indent=2) + "\n")


def _plot_sweep(sweep_dir: Path, index: dict[str, Any]) -> None:
    try:
        started = [d for d in variant_run_dirs(sweep_dir) if _size(d / "metrics.jsonl")]
        runs = [r for r in load_runs(started) if r.metrics]  # read once for both figures
        if not runs:
            return
        plot_runs(runs, x="round", out=sweep_dir / "figures" / "convergence")
        plot_runs(runs, x="sim_time", out=sweep_dir / "figures" / "convergence-sim_time")
    except FedsimError as exc:  # a figure is a convenience; the runs are already on disk
        index["plot_error"] = str(exc)
        _write_index(sweep_dir, index)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _progress() -> Any:
    return Progress(
        TextColumn("[bold]sweep {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[current]}"),
        console=Console(stderr=True),
        transient=False,
    )
