"""A Ray client actor killed by its PID mid-round does not lose the run."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

from fedsim.config import apply_overrides, validate
from fedsim.results.rundir import load_run
from fedsim.runner import run_experiment

BASE = ["output.plot=false", "workload={name='synthetic-logreg', num_ues=4, batch_size=0}", "rounds=10",
        "checkpoint.every=0", "strategy.name='server-ota'", "channel.interference={name='sas', alpha=1.5}",
        "channel.scale=0.2"]


def _descendants(pid: int) -> list[int]:
    """PIDs below ``pid`` in the process tree (from /proc: the processes this test started)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        kids = [p for p, pp in parent.items() if pp == current]
        out += kids
        todo += kids
    return out


def _running(pid: int) -> bool:
    """True for a live, non-zombie process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _is_client_actor(pid: int) -> bool:
    try:
        return b"ClientAppActor" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_killed_actor_is_replaced_and_results_unchanged(tmp_path: Path) -> None:
    ray_out = tmp_path / "ray"
    killed: list[int] = []

    def kill_one_actor_mid_run() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            time.sleep(0.05)
            logs = list(ray_out.glob("*/metrics.jsonl"))
            if logs and len(logs[0].read_text().splitlines()) >= 4:  # round 3 done
                actors = [p for p in _descendants(os.getpid()) if _is_client_actor(p)]
                if actors:
                    os.kill(actors[0], signal.SIGKILL)
                    killed.append(actors[0])

    killer = threading.Thread(target=kill_one_actor_mid_run, daemon=True)
    killer.start()
    ray_run = run_experiment(validate(apply_overrides({}, [*BASE, "engine.name='ray'",
                                                           f"output.dir={str(ray_out)!r}"])), quiet=True)
    killer.join(timeout=5)
    inline_run = run_experiment(validate(apply_overrides({}, [*BASE, "engine.name='inline'",
                                                              f"output.dir={str(tmp_path / 'inline')!r}"])), quiet=True)
    assert killed, "no client actor was found to kill"
    assert json.loads((ray_run / "summary.json").read_text())["status"] == "completed"
    ray_rows = load_run(ray_run).metrics
    assert any(r.get("retried_ues") for r in ray_rows)  # the lost message was re-sent and recorded
    strip = {"retried_ues"}
    assert [{k: v for k, v in r.items() if k not in strip} for r in ray_rows] == load_run(inline_run).metrics


def test_ctrl_c_shuts_down_the_ray_it_started(tmp_path: Path) -> None:
    """SIGINT to `fedsim run` (engine ray): exit, summary 'interrupted', no Ray process left."""
    import subprocess
    import sys

    out = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedsim.cli", "run", "--quiet", "--engine", "ray", "--out", str(out),
         "--set", "sweep={}", "--set", "rounds=400", "--set", "checkpoint.every=0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            logs = list(out.glob("*/metrics.jsonl"))
            if logs and len(logs[0].read_text().splitlines()) >= 3:
                break
            time.sleep(0.1)
        ray_pids = _descendants(proc.pid)
        assert ray_pids, "Ray did not start"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(2)
    alive = [p for p in ray_pids if _running(p)]
    assert not alive, f"processes left behind: {alive}"
    summary = json.loads(next(out.glob("*/summary.json")).read_text())
    assert summary["status"] == "interrupted"
