"""Result loggers (``output.loggers``): hooks that mirror every round's row into CSV, TensorBoard,
MLflow or Weights & Biases. ``metrics.jsonl`` stays the record; a logger is a view of it.

A logger sees each row as ``metrics.jsonl`` stores it (non-finite floats as null), so a run and
its resumed continuation log the same values. ``on_start`` (re)builds or completes the logger from
the rows the run already has, which is how a resumed run continues without duplicating a round;
``close(status)``, called by :func:`fedsim.runtime.execute.execute` on every exit path, finishes it.
The optional packages are imported on first use: naming a logger costs nothing until a run uses it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fedsim.config import ExperimentConfig, to_toml_dict
from fedsim.results.labels import flatten
from fedsim.results.rundir import atomic_write_text, dumps
from fedsim.runtime.hooks import HookBase
from fedsim.runtime.loop import RoundLoop, RoundRecord
from fedsim.runtime.recorder import Recorder


def as_recorded(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` as ``metrics.jsonl`` holds it (JSON types, non-finite floats as None)."""
    return json.loads(dumps(row))


def scalars(row: dict[str, Any]) -> dict[str, Any]:
    """The row without its list and dict values (those stay in metrics.jsonl only)."""
    return {k: v for k, v in row.items() if not isinstance(v, list | dict)}


def numbers(row: dict[str, Any]) -> dict[str, float]:
    """The row's numeric metrics (booleans as 0/1); ``round`` is the step, not a metric."""
    return {k: float(v) for k, v in row.items() if isinstance(v, int | float) and k != "round"}


def config_params(cfg: ExperimentConfig) -> dict[str, Any]:
    """The resolved config (config.toml) as dotted keys."""
    return flatten(to_toml_dict(cfg))


class ResultLogger(HookBase):
    """One output format. Subclasses implement ``start(rows)``, ``write(row)`` and ``finish(status)``."""

    def __init__(self, run_dir: Path, cfg: ExperimentConfig, recorder: Recorder) -> None:
        self.run_dir, self.cfg, self.recorder = run_dir, cfg, recorder
        self.started = False

    def on_start(self, loop: RoundLoop) -> None:
        self.started = True  # before start(): what a failing start opened is still finished
        self.start([as_recorded(r) for r in self.recorder.rows])

    def after_round(self, loop: RoundLoop, record: RoundRecord) -> str | None:
        self.write(as_recorded(record.row))
        return None

    def close(self, status: str) -> None:
        """Finish once, whatever the status; a logger that never started has nothing to finish."""
        if self.started:
            self.started = False
            self.finish(status)

    def start(self, rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def write(self, row: dict[str, Any]) -> None:
        raise NotImplementedError

    def finish(self, status: str) -> None:
        raise NotImplementedError


class CsvLogger(ResultLogger):
    """``metrics.csv``: a row per round, a column per scalar key seen so far. Each row is appended
    and flushed as its round ends, so a killed run loses nothing; a key that first appears later
    rewrites the file (atomically) with the wider header. ``start`` rewrites it from the kept rows."""

    name = "csv"
    file: Any = None

    def start(self, rows: list[dict[str, Any]]) -> None:
        self.rows = [scalars(r) for r in rows]
        self.columns = list(dict.fromkeys(k for r in self.rows for k in r))
        self._rewrite()

    def write(self, row: dict[str, Any]) -> None:
        row = scalars(row)
        self.rows.append(row)
        if any(k not in self.columns for k in row):
            self.columns += [k for k in row if k not in self.columns]
            self._rewrite()
        else:
            self.file.write(self._lines([row], header=False))
            self.file.flush()

    def finish(self, status: str) -> None:
        if self.file is not None:
            self.file.close()

    def _lines(self, rows: list[dict[str, Any]], header: bool) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, self.columns, lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()

    def _rewrite(self) -> None:
        if self.file is not None:
            self.file.close()
        path = self.run_dir / "metrics.csv"
        atomic_write_text(path, self._lines(self.rows, header=True) if self.columns else "")
        self.file = open(path, "a", encoding="utf-8", newline="")  # held open for the run


class TensorBoardLogger(ResultLogger):
    """Event files under ``tensorboard/``: a scalar per metric per round, step = round, flushed every
    round. ``start`` removes the folder and rewrites the kept rows, so a resumed run's events never
    repeat a round."""

    name = "tensorboard"
    writer: Any = None

    def start(self, rows: list[dict[str, Any]]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        folder = self.run_dir / "tensorboard"
        shutil.rmtree(folder, ignore_errors=True)
        self.writer = SummaryWriter(str(folder))
        for row in rows:
            self._add(row)
        self.writer.flush()

    def write(self, row: dict[str, Any]) -> None:
        self._add(row)
        self.writer.flush()

    def finish(self, status: str) -> None:
        if self.writer is not None:
            self.writer.close()

    def _add(self, row: dict[str, Any]) -> None:
        for key, value in numbers(row).items():
            self.writer.add_scalar(key, value, global_step=row["round"])


@contextlib.contextmanager
def allow_file_store(uri: str) -> Iterator[None]:
    """Recent MLflow refuses a ``file:`` store unless MLFLOW_ALLOW_FILE_STORE is set: allow it for
    fedsim's own calls only, leaving os.environ as it was (a user's own setting wins)."""
    if not uri.startswith("file:") or "MLFLOW_ALLOW_FILE_STORE" in os.environ:
        yield
        return
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


#: MLflow run status for each way a fedsim run ends.
MLFLOW_STATUS = {"completed": "FINISHED", "diverged": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}


class MlflowLogger(ResultLogger):
    """One MLflow run per fedsim run: params = the flattened config, a metric per key with
    step = round. The run's id is kept in ``mlflow.json``; a resumed run reopens that MLflow run and
    logs, per metric, only the steps after the last one it has (rows are logged in round order)."""

    name = "mlflow"
    run_id: str | None = None

    def __init__(self, run_dir: Path, cfg: ExperimentConfig, recorder: Recorder) -> None:
        super().__init__(run_dir, cfg, recorder)
        # output.mlflow_uri, else MLFLOW_TRACKING_URI, else where this run logged before (a resume),
        # else the file store OUTPUT_DIR/mlruns, next to the run directory
        record = run_dir / "mlflow.json"
        self.stored = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}
        self.uri = (cfg.output.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or self.stored.get("tracking_uri")
                    or (run_dir.parent.resolve() / "mlruns").as_uri())

    def on_start(self, loop: RoundLoop) -> None:
        with allow_file_store(self.uri):
            super().on_start(loop)

    def after_round(self, loop: RoundLoop, record: RoundRecord) -> str | None:
        with allow_file_store(self.uri):
            return super().after_round(loop, record)

    def close(self, status: str) -> None:
        with allow_file_store(self.uri):
            super().close(status)

    def start(self, rows: list[dict[str, Any]]) -> None:
        from mlflow.tracking import MlflowClient

        stored, uri = self.stored, self.uri
        self.client = client = MlflowClient(tracking_uri=uri)
        same_store = stored.get("tracking_uri") == uri and self._exists(stored.get("run_id"))
        self.run_id = stored["run_id"] if same_store else None  # else a new MLflow run, given every kept row
        if self.run_id is None:
            self.run_id = client.create_run(self._experiment_id(), run_name=self.run_dir.name,
                                            tags={"fedsim.run_dir": str(self.run_dir.resolve())}).info.run_id
            record = {"tracking_uri": uri, "run_id": self.run_id}
            atomic_write_text(self.run_dir / "mlflow.json", json.dumps(record) + "\n")
        else:
            client.update_run(self.run_id, status="RUNNING")
        run = client.get_run(self.run_id)
        # params are immutable: a resume logs only missing ones (engine/output changes are not re-logged)
        self._params({k: v for k, v in config_params(self.cfg).items() if k not in run.data.params})
        # the last step logged per metric: rows are logged in round order, so one number per key suffices
        self.last = {k: max(m.step for m in client.get_metric_history(self.run_id, k)) for k in run.data.metrics}
        for row in rows:
            self.write(row)

    def write(self, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        step, now = row["round"], int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in numbers(row).items() if step > self.last.get(k, -1)]
        for i in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def finish(self, status: str) -> None:
        if self.run_id is None:
            return
        self.client.set_tag(self.run_id, "fedsim.status", status)
        self.client.set_terminated(self.run_id, status=MLFLOW_STATUS.get(status, "FAILED"))

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        name = self.cfg.name
        if (found := self.client.get_experiment_by_name(name)) is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # another run created it first
            return self.client.get_experiment_by_name(name).experiment_id

    def _exists(self, run_id: str | None) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            return run_id is not None and self.client.get_run(run_id) is not None
        except MlflowException:  # the store was cleared since
            return False

    def _params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit for params
            self.client.log_batch(self.run_id, params=items[i:i + 100])


class WandbLogger(ResultLogger):
    """A Weights & Biases run, offline under the run directory unless ``WANDB_MODE`` says otherwise
    (``wandb sync RUN_DIR/wandb/offline-run-*`` uploads it). The run id is kept in ``wandb.json``; a
    resumed run continues that id and logs the rounds after its checkpoint (W&B drops steps it has)."""

    name = "wandb"
    run: Any = None

    def start(self, rows: list[dict[str, Any]]) -> None:
        import wandb

        record_path = self.run_dir / "wandb.json"
        stored = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
        run_id = stored.get("run_id") or uuid.uuid4().hex[:12]
        atomic_write_text(record_path, json.dumps({"run_id": run_id}) + "\n")
        mode = None if os.environ.get("WANDB_MODE") else "offline"
        self.run = wandb.init(project=self.cfg.name, name=self.run_dir.name, id=run_id, resume="allow",
                              dir=str(self.run_dir), mode=mode, config=config_params(self.cfg))
        if not stored:  # a continued W&B run has the kept rows already
            for row in rows:
                self.write(row)

    def write(self, row: dict[str, Any]) -> None:
        self.run.log(numbers(row), step=row["round"])

    def finish(self, status: str) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if status in ("completed", "diverged") else 1)


#: Logger name (``output.loggers``) -> class. The packages each needs: fedsim.config.experiment.LOGGER_PACKAGES.
LOGGERS: dict[str, type[ResultLogger]] = {"csv": CsvLogger, "tensorboard": TensorBoardLogger,
                                          "mlflow": MlflowLogger, "wandb": WandbLogger}


def make_loggers(cfg: ExperimentConfig, run_dir: Path, recorder: Recorder) -> list[ResultLogger]:
    """The hooks of ``cfg.output.loggers``, in the order named."""
    return [LOGGERS[name](run_dir, cfg, recorder) for name in cfg.output.loggers]


def close_loggers(loggers: list[ResultLogger], status: str) -> list[str]:
    """Finish every logger; a logger that fails to finish does not stop the others (its error is
    returned, for the summary, and printed)."""
    errors = []
    for logger in loggers:
        try:
            logger.close(status)
        except Exception as exc:  # noqa: BLE001 - the run's own outcome must still be written
            errors.append(f"{logger.name}: {type(exc).__name__}: {exc}")
            print(f"warning: closing the {logger.name} logger failed: {exc}", file=sys.stderr)
    return errors
