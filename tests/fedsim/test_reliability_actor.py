"""A Ray client actor killed by its PID mid-round does not lose the run."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

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


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Poll until none of ``pids`` runs (or ``timeout`` s pass); those still running."""
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if _running(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


@pytest.mark.timeout(600)
def test_killed_actor_is_replaced_and_results_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ServerApp runs in this process: right after round 3's row is written it SIGKILLs one
    client actor and waits until that process is gone, so round 4 is sent to a dead actor on any
    machine, however loaded (no thread racing the run)."""
    from fedsim.runtime.recorder import Recorder

    killed: list[int] = []
    original = Recorder.log

    def log(self, row):
        original(self, row)
        if row["round"] == 3 and not killed:
            actors = [p for p in _descendants(os.getpid()) if _is_client_actor(p)]
            assert actors, "no client actor was found to kill"
            os.kill(actors[0], signal.SIGKILL)
            killed.append(actors[0])
            assert not _wait_gone(killed, 60), "the killed actor did not go away"

    monkeypatch.setattr(Recorder, "log", log)
    ray_run = run_experiment(validate(apply_overrides({}, [*BASE, "engine.name='ray'", "engine.num_cpus=2",
                                                           f"output.dir={str(tmp_path / 'ray')!r}"])), quiet=True)
    monkeypatch.setattr(Recorder, "log", original)
    inline_run = run_experiment(validate(apply_overrides({}, [*BASE, "engine.name='inline'", "engine.population=false",
                                                              f"output.dir={str(tmp_path / 'inline')!r}"])), quiet=True)
    assert len(killed) == 1
    assert json.loads((ray_run / "summary.json").read_text())["status"] == "completed"
    ray_rows = load_run(ray_run).metrics
    retried = [r["round"] for r in ray_rows if r.get("retried_ues")]
    assert retried and retried[0] == 4  # the lost message was re-sent (and recorded) in the next round
    assert all(r["failures"] == 0 for r in ray_rows[1:])  # no UE lost its update
    strip = {"retried_ues"}
    assert [{k: v for k, v in r.items() if k not in strip} for r in ray_rows] == load_run(inline_run).metrics


@pytest.mark.timeout(600)
def test_ctrl_c_shuts_down_the_ray_it_started(tmp_path: Path) -> None:
    """SIGINT to `fedsim run` (engine ray): exit 130, summary 'interrupted', no Ray process left.
    rounds is far more than the run can do before the SIGINT arrives, so the SIGINT always lands
    mid-run; every wait is a poll with a generous deadline."""
    import subprocess
    import sys

    out = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedsim.cli", "run", "--quiet", "--engine", "ray", "--out", str(out),
         "--set", "sweep={}", "--set", "rounds=100000", "--set", "checkpoint.every=0", "--set", "engine.num_cpus=2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    ray_pids: dict[int, str | None] = {}
    try:
        deadline = time.monotonic() + 300
        while True:
            logs = list(out.glob("*/metrics.jsonl"))
            if logs and len(logs[0].read_text().splitlines()) >= 3:
                break
            assert proc.poll() is None, f"the run ended early (exit {proc.returncode})"
            assert time.monotonic() < deadline, "the run wrote no 3 rows within 300 s"
            time.sleep(0.1)
        ray_pids = {p: _start_time(p) for p in _descendants(proc.pid)}
        assert ray_pids, "Ray did not start"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=180) == 130
        alive = _wait_gone(list(ray_pids), 60)
        assert not alive, f"processes left behind: {alive}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this test started
            proc.wait(timeout=60)
        for pid, started in ray_pids.items():  # what it left behind, by PID (never a reused one)
            if _running(pid) and _start_time(pid) == started:
                os.kill(pid, signal.SIGKILL)
    summary = json.loads(next(out.glob("*/summary.json")).read_text())
    assert summary["status"] == "interrupted"
