"""Continuing a sweep that was killed or interrupted (``fedsim run --resume SWEEP_DIR``): which
variants it resumes with, and which run directory each unfinished variant continues from.

The variants are rebuilt from the sweep folder's own ``sweep.toml`` (the resolved base with its
grid), so a resume needs nothing but the folder; only where and how the variants run (``[engine]``,
``[output]``) may change, as for a single run. Finished variants are kept. An unfinished variant
continues from its last checkpoint when the sweep folder holds a run directory of exactly its
config that did not finish (the one ``index.json`` names, or one a kill left unnamed), else
starts again.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from fedsim.config import ExperimentConfig, apply_overrides, read_toml, to_toml_dict
from fedsim.errors import ConfigError, RunDirError
from fedsim.results.rundir import read_metrics
from fedsim.results.sweepdir import is_sweep_dir, read_index
from fedsim.runtime.resume import RESUMABLE_CHANGES
from fedsim.sweep.expand import Variant, base_config, expand_sweep

DONE = ("completed", "diverged")  # statuses a resumed sweep does not rerun
BASE = "sweep.toml"


def sweep_to_resume(sweep_dir: Path, experiment: Path | None, overrides: list[str]
                    ) -> tuple[list[Variant], ExperimentConfig]:
    """The variants and base config to resume ``sweep_dir`` with: its ``sweep.toml`` plus the
    ``[engine]``/``[output]`` overrides. An ``experiment`` (or any other ``--set``) given too must
    describe the same sweep: otherwise ConfigError naming what differs. A sweep whose variants
    have all finished is a RunDirError: nothing to resume."""
    if not is_sweep_dir(sweep_dir) or not (sweep_dir / BASE).is_file():
        raise RunDirError(f"--resume {sweep_dir}: not a fedsim sweep folder (needs index.json and {BASE})")
    if all(is_done(sweep_dir, e) for e in read_index(sweep_dir)["variants"]):
        raise RunDirError(f"--resume {sweep_dir}: every variant has already finished; nothing to resume")
    saved = read_toml(sweep_dir / BASE)
    own = [o for o in overrides if o.split("=", 1)[0].strip().split(".")[0] in RESUMABLE_CHANGES]
    data = apply_overrides(saved, own)
    if experiment is not None or len(own) != len(overrides):
        given = read_toml(experiment) if experiment is not None else saved
        a = to_toml_dict(base_config(saved, [], source=str(sweep_dir / BASE)))
        b = to_toml_dict(base_config(given, overrides, source=str(experiment or sweep_dir / BASE)))
        differ = sorted(k for k in set(a) | set(b) if k not in RESUMABLE_CHANGES and a.get(k) != b.get(k))
        if differ:
            raise ConfigError(f"--resume {sweep_dir}: the given experiment differs from the sweep's {BASE} in "
                              f"{', '.join(differ)}; resume with the sweep's own (omit EXPERIMENT and --set)")
    source = str(sweep_dir / BASE)
    return expand_sweep(data, [], source=source), base_config(data, [], source=source)


def is_done(sweep_dir: Path, entry: dict[str, Any]) -> bool:
    """Whether the variant of index entry ``entry`` finished (and its run directory is whole)."""
    rd = entry.get("run_dir")
    return entry.get("status") in DONE and bool(rd) and (sweep_dir / rd / "summary.json").exists()


def resumable_run_dirs(sweep_dir: Path, index: dict[str, Any], variants: list[Variant]) -> dict[int, Path]:
    """For each unfinished variant that has one, the run directory to continue (variant index ->
    path): its own, else one that no index entry names and whose config is the variant's (a
    sequential sweep killed mid-variant leaves one); the most advanced when there are several."""
    entries = index["variants"]
    named = {e["run_dir"] for e in entries if e.get("run_dir")}
    loose = {p: identity for p in sorted(sweep_dir.iterdir())
             if p.name not in named and (identity := _identity_of(p)) is not None}
    found: dict[int, Path] = {}
    for i, (variant, entry) in enumerate(zip(variants, entries, strict=True)):
        if is_done(sweep_dir, entry):
            continue
        own = sweep_dir / entry["run_dir"] if entry.get("run_dir") else None
        mine = _identity(to_toml_dict(variant.config))
        candidates = [p for p in ([own] if own else []) if _identity_of(p) == mine]
        candidates += [p for p, identity in loose.items() if identity == mine]
        if candidates:
            found[i] = max(candidates, key=lambda p: len(read_metrics(p / "metrics.jsonl")))
            loose.pop(found[i], None)
    return found


def _identity_of(run_dir: Path) -> dict[str, Any] | None:
    """What a run directory computes (its config outside ``[engine]``/``[output]``) if it is an
    unfinished run that ``--resume`` can continue, else None."""
    if not (run_dir / "config.toml").is_file() or not (run_dir / "summary.json").is_file():
        return None
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        config = tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # a torn file: this directory cannot be resumed
        return None
    return None if not isinstance(summary, dict) or summary.get("status") in DONE else _identity(config)


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in RESUMABLE_CHANGES}
