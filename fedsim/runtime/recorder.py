"""Per-round metrics: appended to ``metrics.jsonl`` as each round ends, and shown on a
progress bar with the latest loss and accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fedsim.results.rundir import MetricsLog


class Recorder:
    def __init__(self, run_dir: Path, total_rounds: int, *, quiet: bool = False, label: str = "run"):
        self.metrics = MetricsLog(run_dir / "metrics.jsonl")
        self.rows: list[dict[str, Any]] = []
        self.total = total_rounds
        self._progress: Progress | None = None
        if not quiet:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._task = self._progress.add_task(label, total=total_rounds, info="")

    def __enter__(self) -> Recorder:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def log(self, row: dict[str, Any]) -> None:
        self.metrics.append(row)
        self.rows.append(row)
        if self._progress is not None:
            self._progress.update(self._task, completed=row["round"], info=_info(row))


def _info(row: dict[str, Any]) -> str:
    parts = []
    for key, fmt in (("loss", "loss {:.4g}"), ("accuracy", "acc {:.3f}"), ("gap", "gap {:.3g}"),
                     ("consensus", "cons {:.3g}")):
        v = row.get(key)
        if isinstance(v, int | float):
            parts.append(fmt.format(v))
    if row.get("failures"):
        parts.append(f"[red]{row['failures']} failed")
    return "  ".join(parts)
