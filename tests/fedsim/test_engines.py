"""Both engines run the same Flower apps and give identical metrics for the same seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedsim.config import load_experiment
from fedsim.results.rundir import load_run
from fedsim.runner import run_experiment

SMALL = [
    "rounds=4",
    "workload.num_ues=4",
    "train.local_steps=2",
    "train.lr.eta=0.2",
    "output.plot=false",
    "sweep={}",
]
TIMING_KEYS = {"wall_s"}


def _metrics(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in load_run(run_dir).metrics]


def _run(tmp_path: Path, *extra: str) -> Path:
    cfg = load_experiment(None, [*SMALL, f"output.dir={str(tmp_path)!r}", *extra])
    return run_experiment(cfg, quiet=True)


def test_inline_run_writes_run_directory(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, "engine.name='inline'", "output.plot=true")
    assert (run_dir / "config.toml").exists()
    rows = load_run(run_dir).metrics
    assert [r["round"] for r in rows] == [0, 1, 2, 3, 4]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["rounds"] == 4
    assert summary["seed"] == 0
    assert "flwr" in summary["versions"]
    assert (run_dir / "figures" / "convergence.png").exists()
    assert (run_dir / "figures" / "convergence.pdf").exists()
    # the resolved config re-runs as is
    again = load_experiment(run_dir / "config.toml")
    assert again.rounds == 4


def test_same_seed_same_metrics_inline(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", "engine.name='inline'")
    b = _run(tmp_path / "b", "engine.name='inline'")
    c = _run(tmp_path / "c", "engine.name='inline'", "seed=1")
    assert _metrics(a) == _metrics(b)
    assert _metrics(a) != _metrics(c)


def test_partial_participation_is_seeded(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", "engine.name='inline'", "strategy.fraction=0.5")
    rows = load_run(a).metrics
    assert all(r["participants"] == 2 for r in rows[1:])
    b = _run(tmp_path / "b", "engine.name='inline'", "strategy.fraction=0.5")
    assert _metrics(a) == _metrics(b)


@pytest.mark.timeout(600)
def test_ray_and_inline_give_identical_metrics(tmp_path: Path) -> None:
    """UE by UE, the engines agree bit for bit; the inline engine's population path (one tensor
    program per round) agrees with them to rounding."""
    inline = _run(tmp_path / "inline", "engine.name='inline'", "strategy.fraction=0.75", "engine.population=false")
    ray = _run(tmp_path / "ray", "engine.name='ray'", "strategy.fraction=0.75")
    assert _metrics(inline) == _metrics(ray)
    assert json.loads((ray / "summary.json").read_text())["status"] == "completed"
    population = _metrics(_run(tmp_path / "population", "engine.name='inline'", "strategy.fraction=0.75"))
    for a, b in zip(population, _metrics(ray), strict=True):
        assert a.keys() == b.keys()
        for key, value in b.items():
            assert a[key] == (pytest.approx(value, rel=1e-9, abs=1e-12) if isinstance(value, float) else value), key


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ray_cluster_address(tmp_path: Path) -> None:
    """Join a head node started with `ray start --head --block` on loopback; stop exactly it.
    Its port is one the kernel just handed out and its temp dir is private, so two checkouts can
    run this at once; it is used once `ray status` reports its node (polled, with a deadline)."""
    import os
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import tempfile
    import time

    with socket.socket() as s:  # a free port (the kernel's choice), not a fixed one
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp_dir = tempfile.mkdtemp(prefix="fsrc", dir="/tmp")  # short: AF_UNIX paths are limited to 107 bytes
    ray_bin = Path(sys.executable).parent / "ray"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while True:  # the head answers once its node has registered
            status = subprocess.run([str(ray_bin), "status", f"--address=127.0.0.1:{port}"], env=env,
                                    capture_output=True, text=True, timeout=120)
            if status.returncode == 0 and "node_" in status.stdout:
                break
            assert time.monotonic() < deadline, f"Ray head did not come up: {status.stdout} {status.stderr}"
            assert head.poll() is None, "ray start exited"
            time.sleep(1)
        inline = _run(tmp_path / "inline", "engine.name='inline'")

        def drivers() -> list[Path]:  # the head's logs of drivers from this process: proof it joined
            return list(Path(temp_dir).glob(f"session_*/logs/python-core-driver-*_{os.getpid()}.log"))

        assert drivers() == []
        cluster = _run(tmp_path / "cluster", "engine.name='ray'", f"engine.ray_address='127.0.0.1:{port}'")
        assert drivers(), "the run did not join the head node (no driver log of this process there)"
        assert _metrics(inline) == _metrics(cluster)
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # only the process group this test started
        try:
            head.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_quickstart_fedavg_reduces_gap_100x(tmp_path: Path) -> None:
    """Digital FedAvg on synthetic-logreg, quickstart budget, inline engine."""
    cfg = load_experiment(None, [f"output.dir={str(tmp_path)!r}", "engine.name='inline'", "output.plot=false",
                                 "strategy.name='server-digital'", "sweep={}"])
    rows = load_run(run_experiment(cfg, quiet=True)).metrics
    assert rows[0]["gap"] / rows[-1]["gap"] >= 100
