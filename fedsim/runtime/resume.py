"""Continuing a run from its last checkpoint: which config it resumes with, and the run directory
cut back to the checkpointed round."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedsim.config import ExperimentConfig, apply_overrides, load_experiment, to_toml_dict, validate
from fedsim.errors import ConfigError, RunDirError
from fedsim.results.rundir import atomic_write_text, read_metrics
from fedsim.runtime.checkpoint import Checkpoint, load_checkpoint

#: Sections a resumed run may change: where and how it runs, never what it computes.
RESUMABLE_CHANGES = ("engine", "output")


def resume_config(run_dir: Path, experiment: Path | None, overrides: list[str]) -> ExperimentConfig:
    """The config to resume ``run_dir`` with: its own ``config.toml`` (plus engine/output
    overrides). When ``experiment`` (and ``--set``) is given too it must describe the same run:
    otherwise ConfigError naming what differs (the workload first)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"--resume {run_dir}: no such folder")
    if not (run_dir / "config.toml").is_file() or not (run_dir / "summary.json").is_file():
        raise RunDirError(f"--resume {run_dir}: not a fedsim run directory (needs config.toml and summary.json)")
    try:
        saved = load_experiment(run_dir / "config.toml")
    except ConfigError as exc:
        raise RunDirError(f"--resume {run_dir}: its config.toml is not valid: {exc}") from None
    own = [o for o in overrides if o.split("=", 1)[0].strip().split(".")[0] in RESUMABLE_CHANGES]
    given = load_experiment(experiment, overrides) if experiment is not None else None
    if given is None and len(own) != len(overrides):
        given = load_experiment(run_dir / "config.toml", overrides)
    if given is not None:
        a, b = to_toml_dict(saved), to_toml_dict(given)
        if a["workload"] != b["workload"]:
            raise ConfigError(f"--resume {run_dir}: the given config's workload {b['workload']} does not match "
                              f"the checkpointed run's workload {a['workload']}")
        differ = sorted(k for k in set(a) | set(b) if k not in RESUMABLE_CHANGES and a.get(k) != b.get(k))
        if differ:
            raise ConfigError(f"--resume {run_dir}: the given config differs from the run's config.toml in "
                              f"{', '.join(differ)}; resume with the run's own config (omit EXPERIMENT)")
    return validate(apply_overrides(to_toml_dict(saved), own), str(run_dir / "config.toml"))


def prepare_resume(run_dir: Path) -> tuple[Checkpoint | None, list[dict[str, Any]], dict[str, Any]]:
    """Check ``run_dir`` can be resumed, load its checkpoint (verified) and cut
    ``metrics.jsonl`` back to the checkpointed round (atomically). Returns (checkpoint or None,
    the rows kept, the old summary). Raises RunDirError, before changing anything, when the
    folder is not a resumable run."""
    if not (run_dir / "config.toml").is_file() or not (run_dir / "summary.json").is_file():
        raise RunDirError(f"{run_dir}: not a fedsim run directory (needs config.toml and summary.json)")
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{run_dir}/summary.json is corrupt: {exc}") from None
    if summary.get("status") in ("completed", "diverged"):
        raise RunDirError(f"{run_dir}: the run has already {summary['status']}; nothing to resume")
    checkpoint = load_checkpoint(run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    keep = int(checkpoint.meta["metrics_lines"]) if checkpoint is not None else 0
    if len(rows) < keep:
        raise RunDirError(f"{run_dir}/metrics.jsonl has {len(rows)} complete rows but the checkpoint needs {keep}")
    rows = rows[:keep]
    # keep the first ``keep`` lines byte for byte (read_metrics already stopped at a torn line)
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines(keepends=True) if keep else []
    lines = [ln for ln in lines if ln.strip()][:keep]
    atomic_write_text(run_dir / "metrics.jsonl", "".join(ln if ln.endswith("\n") else ln + "\n" for ln in lines))
    return checkpoint, rows, summary
