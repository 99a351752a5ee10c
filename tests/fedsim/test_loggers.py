"""Result loggers (output.loggers): what each writes, read back with its own reader (the csv
module, TensorBoard's EventAccumulator and raw event files, MLflow's client) against
metrics.jsonl; every way a run ends; a killed and resumed run logging each round exactly once;
and a missing extra refused at validation with exit code 2 and nothing written."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any, get_args
from unittest import mock

import numpy as np
import pytest
import tomli_w
from typer.testing import CliRunner

from fedsim.cli import app
from fedsim.config import QUICKSTART, ConfigError, OutputConfig, apply_overrides, validate
from fedsim.config.experiment import LOGGER_PACKAGES
from fedsim.errors import RunInterrupted
from fedsim.results.labels import flatten
from fedsim.results.rundir import read_metrics
from fedsim.runner import run_experiment
from fedsim.runtime.loggers import LOGGERS

ROOT = Path(__file__).resolve().parents[2]
BASE = ["engine.name='inline'", "output.plot=false", "sweep={}", "name='loggers'",
        "workload={name='synthetic-logreg', num_ues=4, batch_size=0}"]
# a UE that raises gives list-valued keys (failed_ues) on a later row; round 0 has dicts (constants)
RICH = ["rounds=5", "strategy.name='serverfree-relay'", "faults.raise_at=[[3, 1]]"]
# mlflow is an optional extra, not in the test extra (heavy): its checks run where it is installed
HAVE_MLFLOW = importlib.util.find_spec("mlflow") is not None
WITH_MLFLOW = ", 'mlflow'" if HAVE_MLFLOW else ""


def no_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MLflow settings from the environment: the runs use their default store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)


@pytest.fixture(autouse=True)
def _mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    no_mlflow_env(monkeypatch)


def environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


def config(out: Path, *overrides: str):
    return validate(apply_overrides({}, [*BASE, f"output.dir={str(out)!r}", *overrides]))


def only_run_dir(parent: Path) -> Path:
    (d,) = [p for p in parent.iterdir() if p.is_dir() and p.name != "mlruns"]
    return d


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, str)


def numeric_keys(rows: list[dict]) -> set[str]:
    return {k for r in rows for k, v in r.items() if is_number(v) and k != "round"}


# ----------------------------------------------------------------------------- independent readers

def check_csv(run_dir: Path, rows: list[dict]) -> None:
    """metrics.csv (csv module) holds every scalar of every row of metrics.jsonl, nothing else."""
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        table, header = list(reader), reader.fieldnames
    scalar = {k for r in rows for k, v in r.items() if not isinstance(v, list | dict)}
    assert len(header) == len(set(header)) and set(header) == scalar
    assert len(table) == len(rows)
    for line, row in zip(table, rows, strict=True):
        for key in scalar:
            cell, value = line[key], row.get(key)
            if value is None:
                assert cell == "", (key, row["round"], cell)
            elif isinstance(value, bool) or isinstance(value, str):
                assert cell == str(value), (key, row["round"], cell)
            elif isinstance(value, int):
                assert int(cell) == value, (key, row["round"], cell)
            else:
                assert float(cell) == value, (key, row["round"], cell)


def check_tensorboard(run_dir: Path, rows: list[dict]) -> None:
    """EventAccumulator shows one scalar per numeric metric per round (step = round), and the raw
    event files hold each (tag, step) once: a resumed run rewrote rather than appended."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    keys = numeric_keys(rows)
    assert set(acc.Tags()["scalars"]) == keys
    for key in keys:
        want = [(r["round"], float(np.float32(r[key]))) for r in rows if is_number(r.get(key))]
        assert [(e.step, e.value) for e in acc.Scalars(key)] == want, key
    raw: Counter = Counter()
    for f in (run_dir / "tensorboard").glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(f)).Load():
            raw.update((v.tag, event.step) for v in event.summary.value)
    assert set(raw.values()) == {1} and len(raw) == sum(is_number(r.get(k)) for r in rows for k in keys)


def check_mlflow(run_dir: Path, rows: list[dict], status: str, fedsim_status: str | None) -> None:
    """One MLflow run (in OUTPUT_DIR/mlruns, experiment = the config's name): params = the
    flattened config.toml, each metric's history = its values in metrics.jsonl, each step once.
    ``fedsim_status``: the tag ``close`` sets (None: never closed, as after a SIGKILL)."""
    from mlflow.tracking import MlflowClient

    record = json.loads((run_dir / "mlflow.json").read_text())
    assert record["tracking_uri"] == (run_dir.parent.resolve() / "mlruns").as_uri()
    with mock.patch.dict(os.environ, {"MLFLOW_ALLOW_FILE_STORE": "true"}):  # MLflow 3 refuses file stores
        client = MlflowClient(tracking_uri=record["tracking_uri"])
        _check_mlflow_run(client, client.get_run(record["run_id"]), run_dir, rows, status, fedsim_status)


def _check_mlflow_run(client: Any, run: Any, run_dir: Path, rows: list[dict], status: str,
                      fedsim_status: str | None) -> None:
    assert (run.info.status, run.data.tags.get("fedsim.status")) == (status, fedsim_status)
    assert run.info.run_name == run_dir.name
    config = tomllib.loads((run_dir / "config.toml").read_text())
    assert client.get_experiment(run.info.experiment_id).name == config["name"]
    assert run.data.params == {k: str(v) for k, v in flatten(config).items()}
    keys = numeric_keys(rows)
    assert set(run.data.metrics) == keys
    for key in keys:
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert history == [(r["round"], float(r[key])) for r in rows if is_number(r.get(key))], key


# ----------------------------------------------------------------------------- tests

def test_the_registry_and_the_schema_name_the_same_loggers() -> None:
    (literal,) = get_args(OutputConfig.model_fields["loggers"].annotation)
    assert set(LOGGERS) == set(LOGGER_PACKAGES) == set(get_args(literal))
    assert validate({}).output.loggers == []


def test_each_logger_reads_back_as_metrics_jsonl(tmp_path: Path, one_thread: None) -> None:
    cfg = config(tmp_path / "out", *RICH, f"output.loggers=['csv', 'tensorboard'{WITH_MLFLOW}]")
    before = environ()
    run_dir = run_experiment(cfg, quiet=True)
    assert environ() == before  # MLflow's file store was allowed for fedsim's own calls only
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["round"] for r in rows] == list(range(6))
    assert any(isinstance(v, list) for r in rows for v in r.values())  # left out of the CSV
    assert any(isinstance(v, dict) for r in rows for v in r.values())
    assert set(rows[1]) - set(rows[0])  # a key that first appears later widens the CSV
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and "logger_errors" not in summary
    check_csv(run_dir, rows)
    check_tensorboard(run_dir, rows)
    if HAVE_MLFLOW:
        check_mlflow(run_dir, rows, "FINISHED", "completed")


class Crash(RuntimeError):
    """An error inside the round loop (the evaluator), at a chosen round."""


def _fail_at(monkeypatch: pytest.MonkeyPatch, round_: int, action: str) -> None:
    """Make round ``round_``'s evaluation raise (``failed``) or press Ctrl-C once (``interrupted``:
    the run stops cleanly after that round)."""
    import fedsim.runtime.loop as loop

    original = loop.evaluate_held

    def evaluate(*args: Any, **kwargs: Any) -> dict:
        if kwargs["round"] == round_:
            if action == "failed":
                raise Crash("planted")
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate_held", evaluate)


@pytest.mark.parametrize(("status", "mlflow_status"), [("diverged", "FINISHED"), ("failed", "FAILED"),
                                                       ("interrupted", "KILLED")])
def test_every_exit_path_finishes_the_loggers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None,
                                              status: str, mlflow_status: str) -> None:
    """Diverged, failed and interrupted runs close their loggers with that status; the interrupted
    one, resumed, continues the same MLflow run and its CSV, each round exactly once."""
    extra = ["divergence.max_norm=0.5"] if status == "diverged" else []
    cfg = config(tmp_path / "out", "rounds=6", "strategy.name='server-ota'", f"output.loggers=['csv'{WITH_MLFLOW}]",
                 *extra)
    if status != "diverged":
        _fail_at(monkeypatch, 3, status)
    run_dir = run_experiment(cfg, quiet=True) if status == "diverged" else None
    if run_dir is None:
        with pytest.raises(Crash if status == "failed" else RunInterrupted):
            run_experiment(cfg, quiet=True)
        run_dir = only_run_dir(tmp_path / "out")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == status and "logger_errors" not in summary
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert 1 <= len(rows) < 7
    check_csv(run_dir, rows)
    if HAVE_MLFLOW:
        check_mlflow(run_dir, rows, mlflow_status, status)
    if status == "interrupted":
        monkeypatch.undo()
        no_mlflow_env(monkeypatch)
        first = (run_dir / "mlflow.json").read_text() if HAVE_MLFLOW else None
        run_experiment(cfg, quiet=True, resume=run_dir)
        rows = read_metrics(run_dir / "metrics.jsonl")
        assert [r["round"] for r in rows] == list(range(7))
        check_csv(run_dir, rows)
        if HAVE_MLFLOW:  # the same MLflow run, continued
            assert (run_dir / "mlflow.json").read_text() == first
            check_mlflow(run_dir, rows, "FINISHED", "completed")


def _experiment_file(tmp_path: Path, *overrides: str) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(tomli_w.dumps(config(tmp_path, *overrides).model_dump(mode="json", exclude_none=True)))
    return path


def _cli(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "WANDB_"))}
    return subprocess.run([sys.executable, "-m", "fedsim.cli", "run", *args, "--quiet"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, start_new_session=True)


# server-ota writes row r in exchange r; checkpoints every 4 exchanges: the kill after round 7 leaves
# the checkpoint of round 4, so the resumed run recomputes rounds 5-7 that the loggers already have.
@pytest.mark.timeout(600)
def test_killed_and_resumed_run_logs_each_round_once(tmp_path: Path) -> None:
    exp = _experiment_file(tmp_path, "rounds=10", "strategy.name='server-ota'", "checkpoint.every=4",
                           "faults.kill_at=7", f"output.loggers=['csv', 'tensorboard'{WITH_MLFLOW}]")
    out = tmp_path / "out"
    killed = _cli(str(exp), "--out", str(out), timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run_dir = only_run_dir(out)
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["round"] for r in rows] == list(range(8))
    check_csv(run_dir, rows)  # a killed run loses nothing
    check_tensorboard(run_dir, rows)
    if HAVE_MLFLOW:  # never closed: still running, with every round so far
        check_mlflow(run_dir, rows, "RUNNING", None)
    first = (run_dir / "mlflow.json").read_text() if HAVE_MLFLOW else None
    resumed = _cli("--resume", str(run_dir), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["round"] for r in rows] == list(range(11))
    assert json.loads((run_dir / "summary.json").read_text())["resumed_from_round"] == 4
    check_csv(run_dir, rows)
    check_tensorboard(run_dir, rows)
    if HAVE_MLFLOW:  # the same MLflow run, continued
        assert (run_dir / "mlflow.json").read_text() == first
        check_mlflow(run_dir, rows, "FINISHED", "completed")


runner = CliRunner()


@pytest.mark.parametrize("name", ["tensorboard", "mlflow", "wandb"])
def test_missing_extra_exits_2_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  name: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda module, *a, **k: None if module == name else real(module, *a, **k))
    message = f"output.loggers: {name!r} needs the {name} package: pip install 'fedsim[{name}]'"
    with pytest.raises(ConfigError) as err:
        config(tmp_path / "api", f"output.loggers=['csv', {name!r}]")
    assert message in str(err.value)
    out = tmp_path / "runs"
    res = runner.invoke(app, ["run", str(QUICKSTART), "--out", str(out), "--quiet", "--set",
                              f"output.loggers=[{name!r}]"])
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())  # the extra's brackets survive rich's markup
    assert not out.exists() and not (tmp_path / "api").exists()


@pytest.mark.parametrize(("value", "expected"), [("['csv', 'csv']", "named twice"),
                                                 ("['neptune']", "output.loggers.0")])
def test_bad_logger_lists_are_refused(tmp_path: Path, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        config(tmp_path, f"output.loggers={value}")
