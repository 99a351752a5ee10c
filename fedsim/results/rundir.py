"""The run directory: the contract that plots, reports, resume and tests rely on.

    runs/<name>-<UTC timestamp>/
      config.toml     fully resolved config (re-runnable as is)
      metrics.jsonl   one JSON object per round, appended as the round ends
      summary.json    status, rounds, final metrics, seed, versions, git hash, wall time
      checkpoints/    resumable state
      figures/        PNG and PDF plots

Every whole-file write goes through a temp file and a rename. A metrics line is written with
a single ``os.write`` on an O_APPEND descriptor, so a killed process leaves either the whole
line or nothing; readers still skip a torn trailing line defensively.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy
import tomli_w
import torch

import fedsim
from fedsim.errors import RunDirError

#: The folder holding the fedsim, strategies and channels packages (a checkout, or site-packages).
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write ``path`` through a temp file and a rename: readers see the old or the new file,
    never a partial one. ``fsync`` also survives power loss (the rename alone survives a kill)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf: write them as null so every reader can parse the file.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def dumps(obj: Any) -> str:
    return json.dumps(_clean(obj), default=_json_default, allow_nan=False)


def unique_dir(base: Path) -> Path:
    """Create ``base``, or ``base-1``, ``base-2``, ... if taken (safe against concurrent runs)."""
    path, i = base, 1
    while True:
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            path = base.with_name(f"{base.name}-{i}")
            i += 1


def stamped_dir(out_dir: str | Path, name: str) -> Path:
    """Create ``out_dir/<name>-<UTC timestamp>`` (suffixed if taken)."""
    return unique_dir(Path(out_dir) / f"{name}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}")


def new_run_dir(out_dir: str | Path, name: str, run_name: str | None = None) -> Path:
    """A new run directory ``out_dir/<run_name>``, or ``out_dir/<name>-<UTC timestamp>`` without
    one (suffixed if taken), with its subfolders."""
    path = unique_dir(Path(out_dir) / run_name) if run_name else stamped_dir(out_dir, name)
    (path / "figures").mkdir()
    (path / "checkpoints").mkdir()
    return path


class MetricsLog:
    """Append-only ``metrics.jsonl``: one complete JSON line per round."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        line = (dumps(record) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All complete lines of a metrics file; a torn trailing line is ignored."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def write_config(run_dir: Path, data: dict[str, Any]) -> None:
    atomic_write_text(run_dir / "config.toml", tomli_w.dumps(data))


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    atomic_write_text(run_dir / "summary.json", json.dumps(_clean(summary), indent=2, default=_json_default) + "\n")


def versions() -> dict[str, str]:
    """The versions a run's numbers depend on (for summary.json)."""
    out = {"fedsim": fedsim.__version__, "python": platform.python_version(), "flwr": "?",
           "torch": torch.__version__, "numpy": numpy.__version__}
    try:
        out["ray"] = version("ray")
        out["flwr"] = version("flwr")
    except PackageNotFoundError:  # metadata is informative only
        pass
    return out


def git_hash() -> str | None:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5,
    ).stdout.strip()
    return res.stdout.strip() + ("-dirty" if dirty else "")


@dataclass
class RunData:
    """A run directory read back: what plots and reports consume."""

    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.config.get("name", self.path.name)

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(round, value) pairs where ``key`` is present and finite."""
        xs, ys = [], []
        for row in self.metrics:
            v = row.get(key)
            if isinstance(v, int | float) and math.isfinite(v):
                xs.append(row["round"])
                ys.append(float(v))
        return xs, ys


def load_run(path: str | Path) -> RunData:
    p = Path(path)
    if not (p / "config.toml").exists():
        raise RunDirError(f"{p}: not a fedsim run directory (no config.toml)")
    try:
        config = tomllib.loads((p / "config.toml").read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{p}/config.toml is corrupt: {exc}") from None
    summary: dict[str, Any] = {}
    if (p / "summary.json").exists():
        try:
            summary = json.loads((p / "summary.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RunDirError(f"{p}/summary.json is corrupt: {exc}") from None
    return RunData(p, config, read_metrics(p / "metrics.jsonl"), summary)
