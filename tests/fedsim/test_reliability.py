"""Reliability: checkpoint/resume identity, fault injection, divergence, Ray faults,
concurrency. Hostile input lives in test_hostile_input.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from interrupt import interrupted_run

from fedsim.config import apply_overrides, validate
from fedsim.results.rundir import load_run
from fedsim.runner import run_experiment
from fedsim.runtime.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TIMING_KEYS = {"wall_s", "analytics_ms"}  # wall-clock measurements differ between any two runs


def strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def experiment_file(tmp_path: Path, *overrides: str) -> Path:
    """A TOML experiment for the subprocess runs."""
    import tomli_w

    data = apply_overrides({}, list(overrides))
    cfg = validate(data)
    path = tmp_path / "exp.toml"
    path.write_text(tomli_w.dumps(cfg.model_dump(mode="json", exclude_none=True)))
    return path


def cli(*args: str, log: Path | None = None) -> subprocess.Popen:
    """``fedsim run ARGS --quiet`` in a new session; its output to the file ``log`` (never a pipe
    nobody reads while it runs), or to pipes for ``communicate``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "fedsim.cli", "run", *args, "--quiet"]
    if log is None:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, text=True)
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def only_run_dir(parent: Path) -> Path:
    (d,) = [p for p in parent.iterdir() if p.is_dir()]
    return d


def descendants(pid: int) -> list[int]:
    """PIDs of every live descendant of ``pid`` (from /proc), so that processes our child
    started in other sessions (Ray's daemons) can be stopped by PID, never by name."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (None: gone): with the PID it names one process, so a
    PID reused by someone else's process is never signalled."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _temp_dirs(pid: int) -> set[str]:
    """The private Ray temp dirs (``/tmp/fsr*``, see fedsim.engines.ray) named in ``pid``'s command line."""
    try:
        return set(re.findall(r"(/tmp/fsr[A-Za-z0-9_]+)/", Path(f"/proc/{pid}/cmdline").read_text()))
    except OSError:
        return set()


def wait_for_self_kill(proc: subprocess.Popen, timeout: float) -> None:
    """Wait until the run ends (it SIGKILLs itself at ``faults.kill_at``), then remove what it
    leaves behind: the processes it started (Ray's agents outlive a SIGKILLed driver), by PID and
    start time, and Ray's temp dir. Both are noted while it runs: once it is dead its orphans are
    no longer below it and Ray's daemons, whose command lines name the temp dir, are gone. Nothing
    here races the run: it is killed from inside, at a fixed round."""
    seen: dict[int, str] = {}
    temp_dirs: set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None:
            assert time.monotonic() < deadline, f"the run did not end within {timeout:g} s"
            for pid in descendants(proc.pid):
                if pid not in seen and (started := _start_time(pid)) is not None:
                    seen[pid] = started
                    temp_dirs |= _temp_dirs(pid)
            time.sleep(0.25)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this test started (start_new_session)
            proc.wait(timeout=60)
        for pid, started in seen.items():
            if _start_time(pid) == started:  # still the process we saw, not a reused PID
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for d in temp_dirs:
            shutil.rmtree(d, ignore_errors=True)


def killed_run(exp: Path, out: Path, timeout: float) -> Path:
    """Run ``exp`` (which sets ``faults.kill_at``) with the CLI until it kills itself; its run dir."""
    out.mkdir(parents=True)
    log = out.parent / f"{out.name}.log"
    proc = cli(str(exp), "--out", str(out), log=log)
    wait_for_self_kill(proc, timeout)
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}: {log.read_text()[-3000:]}"
    return only_run_dir(out)


def check_killed_state(run_dir: Path, k: int, checkpoint_round: int, metrics_lines: int) -> None:
    """What a run SIGKILLed right after round ``k`` left on disk: every row up to round k, a summary
    still "running", and the checkpoint the hand computation says."""
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"
    assert [r["round"] for r in load_run(run_dir).metrics] == list(range(k + 1))
    ckpt = load_checkpoint(run_dir)
    assert ckpt is not None, "no checkpoint existed before the kill"
    assert (ckpt.round, ckpt.meta["metrics_lines"]) == (checkpoint_round, metrics_lines)


BASE = ["engine.name='inline'", "output.plot=false", "sweep={}",
        "workload={name='synthetic-logreg', num_ues=6, batch_size=0}"]
NOISY = ["channel.interference={name='sas', alpha=1.5}", "channel.scale=0.05", "channel.fading='rayleigh'",
         "channel.power_control='phase'"]


def config(tmp_path: Path, *overrides: str):
    return validate(apply_overrides({}, [*BASE, f"output.dir={str(tmp_path)!r}", *overrides]))


# ----------------------------------------------------------------------------- kill and resume

KILL_EXTRA = ["rounds=40", "strategy.name='serverfree-relay'", *NOISY]
_REFS: dict[tuple[str, ...], list[dict]] = {}


def reference(tmp_path: Path, *extra: str) -> list[dict]:
    """The uninterrupted inline run of ``extra`` (computed once per module)."""
    if extra not in _REFS:
        _REFS[extra] = strip(load_run(run_experiment(config(tmp_path / "ref", *extra), quiet=True)).metrics)
    return _REFS[extra]


# serverfree-relay has lag 1 (round r's row is completed by exchange r + 1) and checkpoints every
# exchange but the last (41), so a kill right after round k < 40 leaves the checkpoint of exchange
# k + 1 with rows 0..k; after round 40 (written by the flush, exchange 41) the last one is exchange 40.
@pytest.mark.parametrize(("k", "checkpoint_round", "metrics_lines"), [(20, 21, 21), (40, 40, 40)])
def test_sigkill_and_resume_identical_inline(tmp_path: Path, k: int, checkpoint_round: int, metrics_lines: int) -> None:
    """`fedsim run` SIGKILLs itself right after round k (faults.kill_at); --resume completes it:
    metrics.jsonl equals an uninterrupted run's."""
    ref = reference(tmp_path, *KILL_EXTRA)
    exp = experiment_file(tmp_path, *BASE, *KILL_EXTRA, f"faults.kill_at={k}")
    run_dir = killed_run(exp, tmp_path / "killed", timeout=240)
    check_killed_state(run_dir, k, checkpoint_round, metrics_lines)
    assert strip(load_run(run_dir).metrics) == ref[: k + 1]
    res = cli("--resume", str(run_dir))  # its own config, kill_at included: a resumed run goes past it
    _, errs = res.communicate(timeout=240)
    assert res.returncode == 0, errs
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines)) == 41  # no duplicated or torn line
    assert strip(load_run(run_dir).metrics) == ref
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == 40
    assert summary["resumed"] == 1 and summary["resumed_from_round"] == checkpoint_round


# Not marked slow on purpose: the kill-and-resume and actor-death tests must run in CI (this one
# ~85 s on 2 busy cores, most of it Ray's start-up; more on a heavily loaded machine: its own timeout).
@pytest.mark.timeout(600)
def test_sigkill_on_ray_and_resume_inline_identical(tmp_path: Path) -> None:
    """The same with the first half on Ray (SIGKILLed after round 12, its Ray processes left
    behind) and the second half switched to the inline engine (--engine inline): equal to an
    uninterrupted inline run."""
    # the per-UE path on both engines (bit-identical; the population path equals it to float tolerance)
    extra = ["rounds=30", "strategy.name='serverfree-relay'", *NOISY, "engine.population=false"]
    ref = reference(tmp_path, *extra)
    exp = experiment_file(tmp_path, *BASE, *extra, "engine.name='ray'", "engine.num_cpus=2", "faults.kill_at=12")
    run_dir = killed_run(exp, tmp_path / "killed", timeout=420)
    check_killed_state(run_dir, 12, 13, 13)
    res = cli("--resume", str(run_dir), "--engine", "inline")
    _, errs = res.communicate(timeout=120)
    assert res.returncode == 0, errs
    assert strip(load_run(run_dir).metrics) == ref
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["engine"], summary["resumed_from_round"]) == ("completed", "inline", 13)


RESUME_CASES = {
    "server-ota-sas": ["strategy.name='server-ota'", *NOISY[:3], "train.local_steps=2"],
    "digital-partial": ["strategy.fraction=0.5", "channel.quant_bits=8"],
    "relay-reset": ["strategy.name='serverfree-relay'", "strategy.mode='reset'", *NOISY],
    "d2d-overlap": ["strategy.name='serverfree-d2d'", "channel.power_control='none'", "strategy.overlap.enabled=true",
                    "timing.latency_ratio=2.5", "train.local_steps=2", "channel.interference='gaussian'",
                    "channel.scale=0.01"],
    "faults-every-3": ["strategy.name='serverfree-relay'", "checkpoint.every=3", "faults.unavailable=0.2",
                       "faults.nan_at=[[4, 1]]", "faults.raise_at=[[6, 2]]", "faults.slowdown=[[3, 5.0]]",
                       "faults.deadline=0.002", "strategy.fraction=0.5"],
}


# (case, crash after this many rows, the checkpoint round and row count left, by hand). The crash
# comes while the row is written, before that exchange's checkpoint. server-* strategies have lag 0
# (row r written by exchange r, row 0 by exchange 0), serverfree-* lag 1 (row r by exchange r + 1);
# no checkpoint follows the last exchange (12, or the flush 13); faults-every-3 saves every 3rd.
CRASHES = [
    ("server-ota-sas", 2, 0, 1),     # round 1's row: only the checkpoint of the initial row 0
    ("server-ota-sas", 13, 11, 12),  # the last row (exchange 12)
    ("digital-partial", 7, 5, 6),
    ("relay-reset", 2, 1, 1),
    ("relay-reset", 13, 12, 12),     # round 12's row, written by the flush exchange 13
    ("d2d-overlap", 9, 8, 8),
    ("faults-every-3", 5, 3, 3),
    ("faults-every-3", 12, 9, 9),    # exchange 12 is due a checkpoint, but the crash comes first
    ("faults-every-3", 13, 12, 12),
]


@pytest.mark.parametrize(("case", "after_rows", "checkpoint_round", "metrics_lines"), CRASHES)
def test_crash_and_resume_identical(tmp_path: Path, case: str, after_rows: int,
                                    checkpoint_round: int, metrics_lines: int) -> None:
    """In-process crash at a fixed row, then resume: identical metrics, every strategy family."""
    extra = ("rounds=12", *RESUME_CASES[case])
    ref = reference(tmp_path, *extra)
    cfg = config(tmp_path / "crash", *extra)
    run_dir = interrupted_run(cfg, after_rows)
    interrupted = json.loads((run_dir / "summary.json").read_text())
    assert interrupted["status"] == "interrupted" and "Interrupt" in interrupted["error"]
    ckpt = load_checkpoint(run_dir)
    assert ckpt is not None, "no checkpoint existed before the crash"
    assert (ckpt.round, ckpt.meta["metrics_lines"]) == (checkpoint_round, metrics_lines)
    assert strip(load_run(run_dir).metrics) == ref[:after_rows]
    run_experiment(cfg, quiet=True, resume=run_dir)
    assert strip(load_run(run_dir).metrics) == ref
    assert [r["round"] for r in ref] == list(range(13))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and "error" not in summary  # the old error no longer holds
    assert summary["resumed_from_round"] == checkpoint_round


# ----------------------------------------------------------------------------- checkpoint files


def test_tampered_or_truncated_checkpoint_is_refused(tmp_path: Path) -> None:
    from fedsim.errors import RunDirError
    from fedsim.runtime.checkpoint import load_checkpoint

    run_dir = run_experiment(config(tmp_path, "rounds=5", "strategy.name='serverfree-relay'"), quiet=True)
    ckpt = load_checkpoint(run_dir)
    assert ckpt is not None and ckpt.round == 5 and ckpt.meta["metrics_lines"] == 5
    (pt,) = (run_dir / "checkpoints").glob("state-*.pt")
    data = pt.read_bytes()
    pt.write_bytes(data[: len(data) // 2])
    with pytest.raises(RunDirError, match="SHA-256"):
        load_checkpoint(run_dir)
    pt.write_bytes(data)
    index = run_dir / "checkpoints" / "latest.json"
    index.write_text(index.read_text()[:40])
    with pytest.raises(RunDirError, match="corrupt"):
        load_checkpoint(run_dir)


def test_checkpoint_default_every_round_for_small_models(tmp_path: Path) -> None:
    from fedsim.runtime.checkpoint import auto_every
    from fedsim.workloads import build_workload

    cfg = config(tmp_path, "strategy.name='serverfree-relay'")
    wl = build_workload(cfg.workload, cfg.seed)
    assert auto_every(cfg, wl, per_ue=True) == 1
    big = config(tmp_path, "checkpoint.auto_mib=0.01")
    assert auto_every(big, wl, per_ue=True) == 9  # 6 UEs x 3 x 610 x 8 B = 0.084 MiB -> every 9 rounds
    assert auto_every(config(tmp_path, "checkpoint.every=0"), wl, per_ue=True) == 0


# ----------------------------------------------------------------------------- faults


def test_faults_are_recorded_and_counted(tmp_path: Path) -> None:
    cfg = config(tmp_path, "rounds=6", "strategy.name='server-ota'", "faults.trace=[[2, 0], [3, 1]]",
                 "faults.raise_at=[[4, 2]]", "faults.nan_at=[[5, 3]]", "faults.slowdown=[[5, 10.0]]",
                 "faults.deadline=0.005")
    run_dir = run_experiment(cfg, quiet=True)
    rows = {r["round"]: r for r in load_run(run_dir).metrics}
    assert rows[2]["injected"]["unavailable"] == [0] and rows[2]["failed_ues"] == [0, 5]
    assert rows[4]["injected"]["raise"] == [2] and "raised mid-training" in rows[4]["failure_reasons"][0]
    assert rows[5]["injected"]["nan"] == [3] and sorted(rows[5]["failed_ues"]) == [3, 5]
    assert all(r["injected"]["straggler"] == [5] and 5 in r["failed_ues"] for k, r in rows.items() if k >= 1)
    assert [rows[k]["participants"] for k in range(1, 7)] == [5, 4, 4, 4, 4, 5]
    # the straggler is dropped and every round waits out the 5 ms deadline (tau_cp = 1 ms, K = 1)
    steps = [rows[k]["sim_time"] - rows[k - 1]["sim_time"] for k in range(1, 7)]
    assert min(steps) == pytest.approx(max(steps)) and min(steps) >= 0.005
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["faults"] == {"unavailable": 2, "raise": 1, "nan": 1, "straggler": 6}
    assert summary["failures_total"] == 2 + 1 + 1 + 6


@pytest.mark.parametrize("policy", ["exclude", "skip-round", "zero"])
def test_nan_policy(tmp_path: Path, policy: str) -> None:
    cfg = config(tmp_path, "rounds=3", "strategy.name='server-digital'", "faults.nan_at=[[2, 1]]",
                 f"faults.policy='{policy}'")
    rows = load_run(run_experiment(cfg, quiet=True)).metrics
    assert all(r.get("diverged") is None for r in rows)
    if policy == "zero":
        assert rows[2]["participants"] == 6 and rows[2]["failures"] == 0
    else:
        assert rows[2]["failed_ues"] == [1]
        assert rows[2]["participants"] == (5 if policy == "exclude" else 0)
    if policy == "skip-round":
        assert rows[2]["loss"] == rows[1]["loss"]  # no aggregate that round: the model stays


@pytest.mark.parametrize("strategy", ["server-ota", "serverfree-relay"])
def test_faults_identical_on_repeat_and_serverfree_survives(tmp_path: Path, strategy: str) -> None:
    extra = ["rounds=8", f"strategy.name='{strategy}'", "faults.unavailable=0.3", "faults.raise_at=[[3, 0]]"]
    a = strip(load_run(run_experiment(config(tmp_path / "a", *extra), quiet=True)).metrics)
    b = strip(load_run(run_experiment(config(tmp_path / "b", *extra), quiet=True)).metrics)
    assert a == b
    assert sum(len(r.get("injected", {}).get("unavailable", [])) for r in a) > 0
    assert all("loss" in r for r in a)


# ----------------------------------------------------------------------------- divergence


@pytest.mark.parametrize("strategy", ["server-ota", "serverfree-relay"])
def test_divergence_ends_run_cleanly(tmp_path: Path, strategy: str) -> None:
    """alpha = 0.6 interference with a large scale blows the model up: status diverged."""
    mode = "channel.interference_mode='common'" if strategy != "server-ota" else "channel.power=1.0"
    cfg = config(tmp_path, "rounds=40", f"strategy.name='{strategy}'", "channel.interference={name='sas', alpha=0.6}",
                 "channel.scale=5.0", "divergence.max_norm=1e3", mode)
    run_dir = run_experiment(cfg, quiet=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = load_run(run_dir).metrics
    assert summary["status"] == "diverged"
    assert summary["rounds"] == summary["diverged_round"] == rows[-1]["round"] < 40
    assert rows[-1]["diverged"] is True and rows[-1]["diverged_reason"]
    assert [r["round"] for r in rows] == list(range(rows[-1]["round"] + 1))  # everything before is kept
    from fedsim.errors import RunDirError

    with pytest.raises(RunDirError, match="already diverged"):
        run_experiment(cfg, quiet=True, resume=run_dir)


def test_divergence_reason_names_the_first_bad_model_in_row_order() -> None:
    """By hand: rows [3, 4] (norm 5), [30, 40] (norm 50), [nan, 0]; with max_norm 10 the second row
    is the first bad one; with the NaN row first it is a non-finite model; a NaN metric last."""
    from fedsim.runtime.hooks import divergence_reason

    ok, big, nan = [3.0, 4.0], [30.0, 40.0], [float("nan"), 0.0]
    W = torch.tensor([ok, big, nan], dtype=torch.float64)
    assert divergence_reason(W, {}, 10.0) == "model norm 50 exceeds divergence.max_norm = 10"
    assert divergence_reason(W[[0, 2, 1]], {}, 10.0) == "non-finite model"
    assert divergence_reason(W[:1], {"loss": 0.1}, 10.0) is None
    assert divergence_reason(W[:1], {"loss": float("inf")}, 10.0) == "non-finite loss"
    assert divergence_reason(None, {}, 10.0) is None
    assert divergence_reason(W[:2], {}, 50.0) is None  # a norm equal to the limit is allowed


# ----------------------------------------------------------------------------- concurrency


def test_two_runs_started_together_get_distinct_dirs(tmp_path: Path) -> None:
    """Two processes create run dirs with the same name in the same second."""
    code = ("import sys, time; from fedsim.results.rundir import new_run_dir; t = float(sys.argv[1]);\n"
            "time.sleep(max(0, t - time.time())); print(new_run_dir(sys.argv[2], 'same'))")
    start = time.time() + 3
    procs = [subprocess.Popen([sys.executable, "-c", code, str(start), str(tmp_path)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    paths = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert len(set(paths)) == 4
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 4
    assert all((Path(p) / "checkpoints").is_dir() for p in paths)


def test_the_cli_reports_a_run_whose_last_loss_is_not_finite(tmp_path: Path, capsys) -> None:
    """metrics.jsonl and summary.json write a non-finite loss as null; the report line says so
    instead of failing to format it."""
    from fedsim.cli import _report

    summary = {"status": "diverged", "rounds": 20, "wall_s": 3.25, "final": {"loss": None, "accuracy": 0.5}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    _report(tmp_path)
    assert capsys.readouterr().out.splitlines()[0] == "diverged: 20 rounds in 3.2 s; loss=non-finite, accuracy=0.5"
