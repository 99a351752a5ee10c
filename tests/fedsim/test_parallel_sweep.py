"""Parallel sweeps on Ray: identical numbers to serial runs, and resume after a kill (a variant
with an unfinished run directory continues it from its checkpoint, inside its Ray task).

Each Ray start costs 5-10 s, so the parallel sweep runs once (module fixture) and the resume
test starts Ray once more.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from interrupt import interrupted_run

from fedsim.results.rundir import load_run
from fedsim.runtime.checkpoint import load_checkpoint
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


def _stopped_run(cfg: Any, out: Path, after_rows: int) -> Path:
    """``cfg`` run inline in this process and stopped as Ctrl-C would once ``after_rows`` rows are
    written: its run directory."""
    cfg = cfg.model_copy(deep=True)
    cfg.engine.name, cfg.output.dir = "inline", str(out)
    return interrupted_run(cfg, after_rows)


def test_killed_parallel_sweep_resumes_only_unfinished(parallel_sweep: Path, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "killed"
    shutil.copytree(parallel_sweep, sweep_dir)
    index = read_index(sweep_dir)
    before = _results(sweep_dir)
    data = _data("ray", tmp_path)
    variants = expand_sweep(data, [])
    # As a kill leaves it: one variant still queued (no run dir), one mid-write (summary missing),
    # one stopped after round 3's row, a checkpoint on disk (as an inline first half leaves it).
    lost, torn, cut = index["variants"][1], index["variants"][2], index["variants"][3]
    shutil.rmtree(sweep_dir / lost["run_dir"])
    lost.update(status="queued", run_dir=None)
    (sweep_dir / torn["run_dir"] / "summary.json").unlink()
    shutil.rmtree(sweep_dir / cut["run_dir"])
    partial = _stopped_run(variants[3].config, tmp_path / "cut", after_rows=4)
    partial = Path(shutil.move(partial, sweep_dir / partial.name))
    checkpointed = load_checkpoint(partial).round
    assert 0 < checkpointed < 4
    cut.update(status="interrupted", run_dir=partial.name)
    kept = {e["id"]: (sweep_dir / e["run_dir"] / "metrics.jsonl").stat().st_mtime_ns
            for e in index["variants"] if e not in (lost, torn, cut)}
    (sweep_dir / "index.json").write_text(json.dumps(index))
    dirs_before = {p.name for p in sweep_dir.iterdir() if p.is_dir()}

    again = run_sweep(variants, base_config(data, []), quiet=True, plot=False, resume=sweep_dir)
    assert again == sweep_dir
    after = read_index(sweep_dir)
    assert [e["status"] for e in after["variants"]] == ["completed"] * 4
    # exactly three new run dirs: the unfinished variants ran again, the finished ones did not
    new_dirs = {p.name for p in sweep_dir.iterdir() if p.is_dir()} - dirs_before
    assert new_dirs == {after["variants"][i]["run_dir"] for i in (1, 2, 3)}
    for e in after["variants"]:
        if e["id"] in kept:
            assert (sweep_dir / e["run_dir"] / "metrics.jsonl").stat().st_mtime_ns == kept[e["id"]]
    # the cut variant continued its checkpoint inside its Ray task; its copy replaced the partial one
    summary = load_run(sweep_dir / after["variants"][3]["run_dir"]).summary
    assert (summary["resumed"], summary["resumed_from_round"]) == (1, checkpointed)
    assert not partial.exists()
    assert _results(sweep_dir) == before
