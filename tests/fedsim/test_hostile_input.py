"""Hostile and bad input: a clear message, exit code 2, nothing written, for a single run and for
a sweep (whose every variant gets a single run's preflight before anything is written).
Malformed TOML, NaN/inf and negative counts are covered in test_config.py."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedsim.cli import app
from fedsim.config import QUICKSTART

runner = CliRunner()
SMALL = ["--set", "sweep={}", "--set", "rounds=2", "--set", "workload.num_ues=3", "--engine", "inline", "--quiet"]

BAD = [
    (["channel.interference={name='sas', alpha=0}"], "channel.interference.alpha"),
    (["channel.interference={name='sas', alpha=2.5}"], "channel.interference.alpha"),
    (["channel.interference={name='sas', alpha=-1}"], "channel.interference.alpha"),
    (["channel.interference.alpha=1.5"], "channel.interference.alpha: unknown key"),  # Gaussian has no alpha
    (["channel.alpha=1.5"], "no longer a channel key"),
    (["channel.fading='no-such-law'"], "unknown fading law 'no-such-law'"),
    (["faults.unavailable=1.5"], "faults.unavailable"),
    (["faults.unavailable=-0.1"], "faults.unavailable"),
    (["strategy.fraction=0"], "strategy.fraction"),
    (["faults.raise_at=[[0, 1]]"], "round >= 1"),
    (["faults.nan_at=[[2, 7]]"], "UE 7"),
    (["faults.policy='ignore'"], "faults.policy"),
    (["divergence.max_norm=-1"], "divergence.max_norm"),
    (["checkpoint.every=-2"], "checkpoint.every"),
    (["workload.num_ues=200000000"], "GiB"),
]


@pytest.mark.parametrize(("overrides", "expected"), BAD)
def test_bad_value_exits_2_and_writes_nothing(tmp_path: Path, overrides: list[str], expected: str) -> None:
    out = tmp_path / "runs"
    args = ["run", str(QUICKSTART), "--out", str(out), *SMALL]
    for o in overrides:
        args += ["--set", o]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert expected in res.output
    assert not out.exists()


# A two-variant sweep on the inline engine; its rows name the variant and count the bad ones.
SWEEP = ["--set", "sweep={}", "--set", "sweep.seed=[0, 1]", "--set", "rounds=2", "--set", "workload.num_ues=3",
         "--engine", "inline", "--quiet"]

BAD_SWEEP = [
    (["workload.num_ues=1000000000"], ["GiB", "sweep variant 000-seed=0", "2 of 2 variants would fail"]),
    (["sweep.workload.num_ues=[3, 1000000000, 2000000000]"],
     ["GiB", "sweep variant 001-seed=0,workload.num_ues=1000000000", "4 of 6 variants would fail"]),
    (["engine.device='cuda:7'"], ["engine.device = 'cuda:7'", "2 of 2 variants would fail"]),
    (["sweep.engine.device=['cpu', 'cuda:7']"], ["sweep variant 001", "2 of 4 variants would fail"]),
    (["channel.interference={name='sas', alpha=0}"], ["channel.interference.alpha"]),
    (["sweep.train.lr.eta=[0.1, -1]"], ["sweep variant 001", "train.lr.eta"]),
    (["chanel.scale=1"], ["chanel: unknown key; did you mean channel.scale?"]),
    (["sweep.channel.scal=[1, 2]"], ["channel.scal: unknown key; did you mean channel.scale?"]),
    (["sweep.seed=[0,1"], ["not valid TOML (unclosed array)", "--set 'sweep.seed=[0, 1]'"]),
]


@pytest.mark.parametrize(("overrides", "expected"), BAD_SWEEP)
def test_bad_sweep_exits_2_and_writes_nothing(tmp_path: Path, overrides: list[str], expected: list[str]) -> None:
    out = tmp_path / "runs"
    args = ["run", str(QUICKSTART), "--out", str(out), *SWEEP]
    for o in overrides:
        args += ["--set", o]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    for text in expected:
        assert text in res.output
    assert "Traceback" not in res.output
    assert not out.exists()


def test_unwritable_output_folder_of_a_sweep(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    res = runner.invoke(app, ["run", str(QUICKSTART), "--out", str(blocker / "runs"), *SWEEP])
    assert res.exit_code == 2, res.output
    assert f"cannot create a sweep folder under output.dir = '{blocker / 'runs'}': Not a directory ({blocker})" \
        in res.output
    assert "Traceback" not in res.output and blocker.read_text() == "not a folder"


def test_unwritable_output_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    res = runner.invoke(app, ["run", str(QUICKSTART), "--out", str(blocker / "runs"), *SMALL])
    assert res.exit_code == 2, res.output
    assert "cannot create a run directory" in res.output
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        res = runner.invoke(app, ["run", str(QUICKSTART), "--out", str(ro / "runs"), *SMALL])
        assert res.exit_code == 2 and "cannot create a run directory" in res.output


@pytest.mark.parametrize(("what", "expected"), [("sweep={}", ""), ("rounds=2", "4 of 4 variants would fail")])
def test_unreachable_ray_address_fails_fast(tmp_path: Path, what: str, expected: str) -> None:
    """A single run and the quickstart's 4-variant sweep alike: exit 2 within 30 s, nothing written."""
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    res = runner.invoke(app, ["run", str(QUICKSTART), "--out", str(tmp_path / "runs"), "--set", what,
                              "--engine", "ray", "--ray-address", f"127.0.0.1:{port}", "--quiet"])
    assert res.exit_code == 2, res.output
    assert "cannot reach a Ray cluster" in res.output and expected in res.output
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "runs").exists()


def test_resume_of_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    for target in (tmp_path / "junk", tmp_path / "missing"):
        res = runner.invoke(app, ["run", "--resume", str(target), "--quiet"])
        assert res.exit_code == 2, res.output
        assert "not a fedsim run directory" in res.output or "no such folder" in res.output
    assert sorted(p.name for p in (tmp_path / "junk").iterdir()) == ["notes.txt"]


def _killed_run(tmp_path: Path) -> Path:
    """A run directory that looks interrupted after round 2 (status running)."""
    import json

    res = runner.invoke(app, ["run", str(QUICKSTART), "--out", str(tmp_path / "runs"), *SMALL,
                              "--set", "strategy.name='serverfree-relay'"])
    assert res.exit_code == 0, res.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["status"] = "running"
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def test_resume_with_a_different_workload_is_refused(tmp_path: Path) -> None:
    run_dir = _killed_run(tmp_path)
    before = (run_dir / "metrics.jsonl").read_bytes()
    res = runner.invoke(app, ["run", str(QUICKSTART), "--resume", str(run_dir), *SMALL,
                              "--set", "strategy.name='serverfree-relay'", "--set", "workload.num_ues=4"])
    assert res.exit_code == 2, res.output
    assert "does not match the checkpointed run's workload" in res.output
    assert (run_dir / "metrics.jsonl").read_bytes() == before


def test_resume_with_a_tampered_checkpoint_is_refused(tmp_path: Path) -> None:
    run_dir = _killed_run(tmp_path)
    (pt,) = (run_dir / "checkpoints").glob("state-*.pt")
    pt.write_bytes(pt.read_bytes()[:100])
    before = (run_dir / "metrics.jsonl").read_bytes()
    res = runner.invoke(app, ["run", "--resume", str(run_dir), "--quiet"])
    assert res.exit_code == 2, res.output
    assert "SHA-256" in res.output and "Traceback" not in res.output
    assert (run_dir / "metrics.jsonl").read_bytes() == before
