"""The Python API: ``fedsim.run`` / ``fedsim.resume`` / ``fedsim.load``, checked against the files
they write (metrics.jsonl read with json) and against the documented errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from interrupt import interrupted_run

import fedsim
from fedsim.config import apply_overrides, validate
from fedsim.errors import ConfigError

pytest.importorskip("pandas")

EXPERIMENT = {"name": "api", "rounds": 4, "seed": 3,
              "workload": {"name": "quadratic", "num_ues": 3, "dim": 2},
              "strategy": {"name": "server-ota"}, "channel": {"interference": "gaussian", "scale": 0.3},
              "sweep": {"strategy.name": ["server-ota", "serverfree-relay"]}}


def test_a_sweep_from_a_dict_and_its_dataframe(tmp_path: Path) -> None:
    folder = fedsim.run(EXPERIMENT, ["output.plot=false"], engine="inline", out=tmp_path)
    assert folder.parent == tmp_path and (folder / "index.json").exists()
    df = fedsim.load(folder)
    assert len(df) == 2 * (4 + 1)
    assert set(df["strategy.name"]) == {"server-ota", "serverfree-relay"}
    for run_dir in (p for p in folder.iterdir() if (p / "metrics.jsonl").exists()):
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        got = df[df["run"] == run_dir.name].sort_values("round")
        assert got["gap"].tolist() == [r["gap"] for r in rows]


def test_overrides_drop_the_sweep_and_a_single_run_returns_its_directory(tmp_path: Path) -> None:
    run_dir = fedsim.run(EXPERIMENT, ["sweep={}", "rounds=2", "output.plot=false"], engine="inline", out=tmp_path)
    assert (run_dir / "config.toml").exists()
    assert [r["round"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())] == [0, 1, 2]


def test_a_shipped_experiment_by_name(tmp_path: Path) -> None:
    run_dir = fedsim.run("quickstart", ["sweep={}", "rounds=1", "workload.num_ues=3", "output.plot=false"],
                         engine="inline", out=tmp_path)
    assert fedsim.load(run_dir)["round"].tolist() == [0, 1]


def test_bad_input_raises_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean"):
        fedsim.run(EXPERIMENT, ["chanel.scale=1"], engine="inline", out=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_resume_finishes_an_interrupted_run(tmp_path: Path) -> None:
    """Interrupted after round 2 (checkpoint every round), resumed through the API: the rows equal
    an uninterrupted run's."""
    overrides = ["sweep={}", "checkpoint.every=1", "output.plot=false"]
    whole = fedsim.run(EXPERIMENT, overrides, engine="inline", out=tmp_path / "whole")
    cfg = validate(apply_overrides(dict(EXPERIMENT), [*overrides, "engine.name='inline'",
                                                      f"output.dir={str(tmp_path / 'cut')!r}"]))
    cut = interrupted_run(cfg, after_rows=3)  # rounds 0, 1, 2
    assert fedsim.resume(cut) == cut

    def comparable(df):
        return df.drop(columns=["run", *(c for c in ("wall_s", "cpu_s", "latency_ms") if c in df)])

    assert comparable(fedsim.load(whole)).equals(comparable(fedsim.load(cut)))
