"""Resume continues exactly the run that was checkpointed: any config difference outside
``[engine]`` and ``[output]`` is refused (ConfigError; exit code 2 naming the key, nothing
changed), switching the engine between the two halves changes no number, and
``checkpoint.fsync`` fsyncs every checkpoint file, or none."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import tomli_w
from interrupt import interrupted_run
from typer.testing import CliRunner

from fedsim.cli import app
from fedsim.config import apply_overrides, load_experiment, to_toml_dict, validate
from fedsim.errors import ConfigError
from fedsim.results.rundir import load_run
from fedsim.runner import run_experiment
from fedsim.runtime.checkpoint import load_checkpoint
from fedsim.runtime.resume import RESUMABLE_CHANGES, resume_config

runner = CliRunner()
BASE = ["engine.name='inline'", "output.plot=false", "sweep={}",
        "workload={name='synthetic-logreg', num_ues=6, batch_size=0}"]
NOISY = ["channel.interference={name='sas', alpha=1.5}", "channel.scale=0.05", "channel.fading='rayleigh'",
         "channel.power_control='phase'"]
TIMING_KEYS = {"wall_s", "analytics_ms"}


def config(out: Path, *overrides: str):
    return validate(apply_overrides({}, [*BASE, f"output.dir={str(out)!r}", *overrides]))


def strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A server-ota run of 6 rounds stopped at round 3's row (checkpoint of round 2 on disk)."""
    run_dir = interrupted_run(config(tmp_path_factory.mktemp("stopped"), "rounds=6", "strategy.name='server-ota'"), 4)
    ckpt = load_checkpoint(run_dir)
    assert ckpt is not None and (ckpt.round, ckpt.meta["metrics_lines"]) == (2, 3)
    return run_dir


@pytest.fixture
def run_dir(stopped: Path, tmp_path: Path) -> Path:
    """A private copy of the stopped run (a refusal that fails to refuse must not spoil the others)."""
    return Path(shutil.copytree(stopped, tmp_path / stopped.name))


def files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


# One changed key per section, and every top-level key (rounds included: the docs refuse
# `--set rounds=400`, a run is continued, not extended). The second item is the key the message
# must name: resume reports differences by top-level key.
REFUSED = [
    ("name='renamed'", "name"),
    ("seed=1", "seed"),
    ("rounds=8", "rounds"),
    ("eval_every=2", "eval_every"),
    ("eval_ue_sample=3", "eval_ue_sample"),
    ("workload.num_ues=5", "workload"),
    ("workload.l2=0.02", "workload"),
    ("train.local_steps=2", "train"),
    ("train.lr.eta=0.05", "train"),
    ("strategy.fraction=0.5", "strategy"),
    ("strategy.name='server-digital'", "strategy"),
    ("channel.scale=0.3", "channel"),
    ("timing.tau_cp=0.002", "timing"),
    ("checkpoint.every=2", "checkpoint"),
    ("checkpoint.fsync=true", "checkpoint"),
    ("divergence.max_norm=1e6", "divergence"),
    ("faults.unavailable=0.1", "faults"),
    ("faults.kill_at=5", "faults"),
    ("sweep.seed=[0, 1]", "sweep"),
]


def refusal_pattern(key: str) -> str:
    if key == "workload":
        return r"the given config's workload .* does not match the checkpointed run's workload"
    return rf"differs from the run's config\.toml in {key}; resume with the run's own config"


def test_the_table_covers_every_section() -> None:
    """Every top-level key of the schema outside [engine]/[output] has a refused change above."""
    from fedsim.config import ExperimentConfig

    refused = {key for _, key in REFUSED}
    assert refused == set(ExperimentConfig.model_fields) - set(RESUMABLE_CHANGES)
    assert set(RESUMABLE_CHANGES) == {"engine", "output"}


@pytest.mark.parametrize(("override", "key"), REFUSED)
def test_resume_refuses_a_changed_key(run_dir: Path, tmp_path: Path, override: str, key: str) -> None:
    before = files(run_dir)
    with pytest.raises(ConfigError, match=refusal_pattern(key)):  # --set on the run's own config
        resume_config(run_dir, None, [override])
    exp = tmp_path / "changed.toml"  # an experiment file describing a different run
    exp.write_text(tomli_w.dumps(apply_overrides(to_toml_dict(load_experiment(run_dir / "config.toml")), [override])))
    with pytest.raises(ConfigError, match=refusal_pattern(key)):
        resume_config(run_dir, exp, [])
    for args in (["--set", override], [str(exp)], [str(exp), "--engine", "inline"]):
        res = runner.invoke(app, ["run", "--resume", str(run_dir), *args, "--quiet"])
        assert res.exit_code == 2, res.output
        assert re.search(refusal_pattern(key), " ".join(res.output.split())), res.output
    assert files(run_dir) == before  # nothing changed, not even the metrics cut back


@pytest.mark.parametrize("overrides", [["engine.name='ray'", "engine.num_cpus=2", "engine.object_store_mb=256"],
                                       ["output.dir='/elsewhere'", "output.plot=true"]])
def test_resume_accepts_engine_and_output_changes(run_dir: Path, overrides: list[str]) -> None:
    saved = to_toml_dict(load_experiment(run_dir / "config.toml"))
    cfg = to_toml_dict(resume_config(run_dir, None, [*overrides, "seed=0"]))  # seed as saved: no difference
    assert cfg == apply_overrides(saved, overrides)


# ----------------------------------------------------------------------------- engine switch


@pytest.mark.timeout(600)
def test_engine_switch_inline_then_ray_equals_uninterrupted(tmp_path: Path) -> None:
    """First half inline, stopped after round 5; resumed on Ray (engine.name = 'ray' given on
    resume); the rows equal an uninterrupted inline run, and the summary says Ray ran last.
    (Ray first, inline second: test_reliability.py::test_sigkill_on_ray_and_resume_inline_identical.)"""
    # the per-UE path on both engines (bit-identical; the population path equals it to float tolerance)
    extra = ["rounds=10", "strategy.name='serverfree-relay'", *NOISY, "engine.population=false"]
    ref = strip(load_run(run_experiment(config(tmp_path / "ref", *extra), quiet=True)).metrics)
    assert [r["round"] for r in ref] == list(range(11))
    run_dir = interrupted_run(config(tmp_path / "split", *extra), 6)
    ckpt = load_checkpoint(run_dir)  # lag 1: round 4's row came with exchange 5, checkpointed
    assert ckpt is not None and (ckpt.round, ckpt.meta["metrics_lines"]) == (5, 5)
    config_toml = (run_dir / "config.toml").read_bytes()
    cfg = resume_config(run_dir, None, ["engine.name='ray'", "engine.num_cpus=2"])
    assert cfg.engine.name == "ray"
    run_experiment(cfg, quiet=True, resume=run_dir)
    assert strip(load_run(run_dir).metrics) == ref
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["engine"], summary["resumed_from_round"]) == ("completed", "ray", 5)
    assert (run_dir / "config.toml").read_bytes() == config_toml  # the run's config is left as it was


# ----------------------------------------------------------------------------- fsync


@pytest.mark.parametrize("fsync", [True, False])
def test_checkpoint_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: bool) -> None:
    """With checkpoint.fsync every checkpoint file (the tensors and latest.json, each through its
    temp file) is fsynced before its rename; without it no checkpoint file is. server-digital over
    4 rounds checkpoints exchanges 0..3 (none after the last)."""
    synced: list[str] = []
    original = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        original(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    run_dir = run_experiment(config(tmp_path, "rounds=4", "strategy.name='server-digital'", "checkpoint.every=1",
                                    f"checkpoint.fsync={str(fsync).lower()}"), quiet=True)
    monkeypatch.setattr(os, "fsync", original)
    ckpt_files = [Path(p).name for p in synced if Path(p).parent == run_dir / "checkpoints"]
    assert load_checkpoint(run_dir).round == 3  # checkpoints were written either way
    if not fsync:
        assert ckpt_files == []
        return
    states = [m.group(1) for n in ckpt_files if (m := re.fullmatch(r"\.state-(\d+)\.pt\..+\.tmp", n))]
    latest = [n for n in ckpt_files if re.fullmatch(r"\.latest\.json\..+\.tmp", n)]
    assert states == ["0", "1", "2", "3"] and len(latest) == 4 and len(ckpt_files) == 8
    # each checkpoint: its tensors, then latest.json
    assert [n.split(".")[1] for n in ckpt_files] == [x for e in range(4) for x in (f"state-{e}", "latest")]
