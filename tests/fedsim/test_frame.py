"""``fedsim.load``: run and sweep folders as one tidy DataFrame, checked against the files
themselves (index.json assignments, metrics.jsonl lines read with the json module)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from fedsim.config import validate
from fedsim.errors import RunDirError
from fedsim.results.frame import load
from fedsim.sweep import expand_sweep, run_sweep

pd = pytest.importorskip("pandas")
ROUNDS = 3


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("frame")
    data = {"name": "fr", "rounds": ROUNDS, "workload": {"name": "quadratic", "num_ues": 3, "dim": 2},
            "strategy": {"name": "server-ota"}, "channel": {"interference": "gaussian", "scale": 0.5},
            "engine": {"name": "inline"}, "output": {"dir": str(out), "plot": False},
            "sweep": {"strategy.name": ["server-ota", "serverfree-relay"], "seed": [0, 1]}}
    return run_sweep(expand_sweep(data, []), validate({**data, "sweep": {}}), quiet=True)


def test_a_sweep_is_one_row_per_variant_and_round(sweep_dir: Path) -> None:
    df = load(sweep_dir)
    index = json.loads((sweep_dir / "index.json").read_text())
    assert len(df) == len(index["variants"]) * (ROUNDS + 1)
    for v in index["variants"]:
        part = df[df["variant"] == v["id"]].sort_values("round")
        assigned = {k: tomllib.loads(f"v = {x}")["v"] for k, x in (a.split("=", 1) for a in v["assignments"])}
        assert set(part["strategy.name"]) == {assigned["strategy.name"]}
        assert set(part["seed"]) == {assigned["seed"]}
        assert set(part["status"]) == {v["status"]} == {"completed"}
        lines = [json.loads(x) for x in (sweep_dir / v["run_dir"] / "metrics.jsonl").read_text().splitlines()]
        assert part["round"].tolist() == [r["round"] for r in lines] == list(range(ROUNDS + 1))
        assert part["loss"].tolist() == [r["loss"] for r in lines]
    # a UE-held key exists only for the server-free variants: NaN elsewhere
    held = df.groupby("strategy.name")["avg_loss"].apply(lambda s: s.notna().sum())
    assert held["server-ota"] == 0 and held["serverfree-relay"] == 2 * (ROUNDS + 1)


def test_run_folders_and_several_paths(sweep_dir: Path) -> None:
    runs = sorted(p for p in sweep_dir.iterdir() if (p / "config.toml").exists())
    one = load(runs[0])
    assert len(one) == ROUNDS + 1 and one["sweep"].isna().all() and set(one["status"]) == {"completed"}
    both = load([sweep_dir, runs[0]])
    assert len(both) == 5 * (ROUNDS + 1)


def test_not_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="neither a fedsim run directory"):
        load(tmp_path)
