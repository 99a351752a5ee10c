"""Parallel sweeps on Ray: identical numbers to serial runs, and resume after a kill.

Each Ray start costs 5-10 s, so the parallel sweep runs once (module fixture) and the resume
test starts Ray once more.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from fedsim.results.rundir import load_run
from fedsim.sweep import base_config, expand_sweep, read_index, run_sweep

pytest.importorskip("ray")

GRID: dict[str, Any] = {
    "name": "psw",
    "rounds": 4,
    "workload": {"name": "synthetic-logreg", "num_ues": 4},
    "channel": {"interference": {"name": "sas", "alpha": 1.5}, "scale": 0.1, "fading": "rayleigh",
                "power_control": "phase"},
    "engine": {"name": "ray", "num_cpus": 2, "object_store_mb": 128},
    "output": {"plot": False},
    "sweep": {"strategy.name": ["server-ota", "serverfree-d2d"], "seed": [0, 1]},
}


def _data(engine: str, out: Path) -> dict[str, Any]:
    data = json.loads(json.dumps(GRID))
    data["engine"]["name"] = engine
    data["output"]["dir"] = str(out)
    return data


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    # ``*_ms`` fields are wall-clock measurements of the simulator itself, not results.
    return [{k: v for k, v in row.items() if not k.endswith("_ms")} for row in load_run(run_dir).metrics]


def _results(sweep_dir: Path) -> dict[str, list[dict[str, Any]]]:
    return {e["id"]: _rows(sweep_dir / e["run_dir"]) for e in read_index(sweep_dir)["variants"]}


@pytest.fixture(scope="module")
def parallel_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = _data("ray", tmp_path_factory.mktemp("par"))
    return run_sweep(expand_sweep(data, []), base_config(data, []), quiet=True, plot=False)


def test_parallel_sweep_equals_serial(parallel_sweep: Path, tmp_path: Path) -> None:
    index = read_index(parallel_sweep)
    assert [e["status"] for e in index["variants"]] == ["completed"] * 4
    assert index["workers"] == 2
    run_dirs = [parallel_sweep / e["run_dir"] for e in index["variants"]]
    assert len(set(run_dirs)) == 4 and all(rd.parent == parallel_sweep for rd in run_dirs)
    for rd in run_dirs:
        run = load_run(rd)
        assert run.summary["status"] == "completed" and run.summary["engine"] == "inline"
        assert [r["round"] for r in run.metrics] == [0, 1, 2, 3, 4]
    data = _data("inline", tmp_path)
    serial = run_sweep(expand_sweep(data, []), base_config(data, []), quiet=True, plot=False)
    par, ser = _results(parallel_sweep), _results(serial)
    assert list(par) == list(ser)
    assert par == ser  # bit-identical metrics, whatever Ray's scheduling
    assert par[index["variants"][0]["id"]] != par[index["variants"][1]["id"]]  # seeds matter


def test_killed_parallel_sweep_resumes_only_unfinished(parallel_sweep: Path, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "killed"
    shutil.copytree(parallel_sweep, sweep_dir)
    index = read_index(sweep_dir)
    before = _results(sweep_dir)
    # As a kill leaves it: one variant still queued (no run dir), one mid-write (summary missing).
    lost, torn = index["variants"][1], index["variants"][2]
    shutil.rmtree(sweep_dir / lost["run_dir"])
    lost.update(status="queued", run_dir=None)
    (sweep_dir / torn["run_dir"] / "summary.json").unlink()
    kept = {e["id"]: (sweep_dir / e["run_dir"] / "metrics.jsonl").stat().st_mtime_ns
            for e in index["variants"] if e not in (lost, torn)}
    (sweep_dir / "index.json").write_text(json.dumps(index))
    dirs_before = {p.name for p in sweep_dir.iterdir() if p.is_dir()}

    data = _data("ray", tmp_path)
    again = run_sweep(expand_sweep(data, []), base_config(data, []), quiet=True, plot=False, resume=sweep_dir)
    assert again == sweep_dir
    after = read_index(sweep_dir)
    assert [e["status"] for e in after["variants"]] == ["completed"] * 4
    # exactly two new run dirs: the unfinished variants ran again, the finished ones did not
    new_dirs = {p.name for p in sweep_dir.iterdir() if p.is_dir()} - dirs_before
    assert new_dirs == {after["variants"][1]["run_dir"], after["variants"][2]["run_dir"]}
    for e in after["variants"]:
        if e["id"] in kept:
            assert (sweep_dir / e["run_dir"] / "metrics.jsonl").stat().st_mtime_ns == kept[e["id"]]
    assert _results(sweep_dir) == before
