"""The sweep command line keeps a single run's promises: bad input exits 2 with nothing written
(test_hostile_input.py holds the table), a variant that fails while running makes the sweep exit 1,
Ctrl-C exits 130 naming the folder, and ``fedsim run --resume SWEEP_DIR`` finishes a killed sweep
with the rows of an uninterrupted one. Also the command line's own texts: --version,
``python -m fedsim``, run --help, fedsim list, did-you-mean and malformed --set values."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from typer.testing import CliRunner

import fedsim
import fedsim.parallel as par
from fedsim.cli import app
from fedsim.config import EXPERIMENTS_DIR, parse_override, read_toml, to_toml_dict
from fedsim.errors import ConfigError, RunDirError
from fedsim.results.rundir import load_run
from fedsim.runtime import faults
from fedsim.sweep import base_config, expand_sweep, new_sweep_dir, read_index

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
EXP = """name = "swc"
rounds = 4
[workload]
name = "synthetic-logreg"
num_ues = 3
[engine]
name = "inline"
[output]
plot = false
[sweep]
seed = [0, 1]
"""


def _exp(tmp_path: Path) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(EXP)
    return path


def _only_dir(parent: Path) -> Path:
    (d,) = [p for p in parent.iterdir() if p.is_dir()]
    return d


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    """Metrics rows without the simulator's own wall-clock measurements."""
    return [{k: v for k, v in r.items() if not k.endswith("_ms") and k != "wall_s"}
            for r in load_run(run_dir).metrics]


def _by_id(sweep_dir: Path) -> dict[str, Path]:
    return {e["id"]: sweep_dir / e["run_dir"] for e in read_index(sweep_dir)["variants"]}


def _fedsim(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "fedsim", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


# --------------------------------------------------------------------------- texts


def test_version_and_python_dash_m(tmp_path: Path) -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"fedsim {fedsim.__version__}"
    proc = _fedsim("--version", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"fedsim {fedsim.__version__}"


def test_run_help_says_how_sweep_variants_run() -> None:
    res = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "100", "NO_COLOR": "1"})
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", res.output).split())
    assert "Sweep variants run in parallel as Ray tasks" in text
    assert "--engine inline they run one after another" in text
    assert "Exit codes: 0 done; 1 a sweep variant failed while running" in text
    assert "or SWEEP_DIR" in text  # --resume takes a sweep folder


def test_list_shows_whole_first_sentences() -> None:
    res = runner.invoke(app, ["list"], env={"COLUMNS": "100"})
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()[1:]
    assert all(len(line) <= 100 for line in lines)
    start = lines[0].index(lines[0].split()[2])  # where the description column starts
    described: dict[str, str] = {}
    for line in lines:
        if line[:start].strip():
            stem = line.split()[0]
            described[stem] = line[start:].strip()
        else:
            described[stem] += " " + line.strip()
    files = {f.stem: f for f in EXPERIMENTS_DIR.glob("*.toml")}
    assert set(described) == set(files)
    for stem, desc in described.items():
        comment = " ".join(ln[1:].strip() for ln in files[stem].read_text().splitlines()[:12] if ln.startswith("#"))
        assert comment.startswith(desc), stem  # the file's own words, from its start
        assert desc.endswith((".", ".)")) or desc == comment, stem  # cut at a sentence end, never inside one
    assert described["augment_mnist"].endswith("(AutoAugment-style policies by REINFORCE; MoEx: Li et al., CVPR 2021).")
    assert described["daas_mnist"].endswith("FedAvg of weights, α and β.")
    assert described["heavy_tail"].endswith("the UE models stall; docs/results/claims.md).")  # not cut at "fig. 2"


@pytest.mark.parametrize(("item", "guess"), [
    ("chanel.scale=1", "did you mean channel.scale?"),
    ("channel.scal=1", "did you mean channel.scale?"),
    ("workload.num_ue=3", "did you mean workload.num_ues?"),
    ("strategy.fractoin=0.5", "did you mean strategy.fraction?"),
    ("zzz=1", None),
])
def test_key_typos_get_a_guess(tmp_path: Path, item: str, guess: str | None) -> None:
    res = runner.invoke(app, ["run", str(_exp(tmp_path)), "--out", str(tmp_path / "runs"), "--set", item])
    assert res.exit_code == 2, res.output
    assert "unknown key" in res.output
    if guess is None:
        assert "did you mean" not in res.output
    else:
        assert guess in res.output
    assert "sweep variant" not in res.output  # a typo in the base is reported once, not per variant
    assert not (tmp_path / "runs").exists()


def test_malformed_set_values_get_a_hint() -> None:
    with pytest.raises(ConfigError) as info:
        parse_override("sweep.seed=[0,1")
    msg = str(info.value)
    assert "not valid TOML (unclosed array)" in msg and "--set 'sweep.seed=[0, 1]'" in msg
    with pytest.raises(ConfigError, match="unclosed inline table"):
        parse_override("channel.interference={name='sas'")
    with pytest.raises(ConfigError, match="a string"):
        parse_override("strategy.name='server-ota")
    assert parse_override("strategy.name=server-ota") == (["strategy", "name"], "server-ota")  # bare words


@pytest.mark.parametrize("text", ["", "# nothing but a comment\n", "[workload]\n[sweep]\n"])
def test_an_empty_experiment_file_is_refused(tmp_path: Path, text: str) -> None:
    exp = tmp_path / "empty.toml"
    exp.write_text(text)
    res = runner.invoke(app, ["run", str(exp), "--out", str(tmp_path / "runs"), "--engine", "inline"])
    assert res.exit_code == 2, res.output
    assert "sets nothing (no keys)" in res.output
    assert not (tmp_path / "runs").exists()


def test_new_sweep_dir_turns_os_errors_into_a_message(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(RunDirError, match="cannot create a sweep folder under output.dir"):
        new_sweep_dir(tmp_path / "a-file" / "runs", "x")


# --------------------------------------------------------------------------- exit codes


def _flaky(bad_seeds: set[int], error: type[BaseException] = RuntimeError):
    real = par.run_experiment

    def run(cfg: Any, *, quiet: bool = False, resume: Path | None = None) -> Path:
        if cfg.seed in bad_seeds:
            raise error("boom")
        return real(cfg, quiet=quiet, resume=resume)

    return run


@pytest.mark.parametrize(("bad", "statuses"), [({1}, ["completed", "failed"]), ({0, 1}, ["failed", "failed"])])
def test_a_sweep_with_a_failed_variant_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                bad: set[int], statuses: list[str]) -> None:
    monkeypatch.setattr(par, "run_experiment", _flaky(bad))
    res = runner.invoke(app, ["run", str(_exp(tmp_path)), "--out", str(tmp_path / "runs"), "--quiet"])
    assert res.exit_code == 1, res.output
    sweep_dir = _only_dir(tmp_path / "runs")
    assert f"{len(bad)} of 2 variants did not finish" in res.output
    assert f"fedsim run --resume {sweep_dir}" in res.output
    assert [e["status"] for e in read_index(sweep_dir)["variants"]] == statuses
    monkeypatch.undo()  # the cause is gone: a resume reruns the failed variants and exits 0
    res = runner.invoke(app, ["run", "--resume", str(sweep_dir), "--quiet"])
    assert res.exit_code == 0, res.output
    assert [e["status"] for e in read_index(sweep_dir)["variants"]] == ["completed", "completed"]


def test_ctrl_c_exits_130_naming_the_sweep_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(par, "run_experiment", _flaky({1}, KeyboardInterrupt))
    res = runner.invoke(app, ["run", str(_exp(tmp_path)), "--out", str(tmp_path / "runs"), "--quiet"])
    assert res.exit_code == 130, res.output
    sweep_dir = _only_dir(tmp_path / "runs")
    assert f"continue with: fedsim run --resume {sweep_dir}" in res.output
    assert [e["status"] for e in read_index(sweep_dir)["variants"]] == ["completed", "interrupted"]


# --------------------------------------------------------------------------- resume


def test_resume_a_killed_sweep_from_the_command_line(tmp_path: Path) -> None:
    """Each variant SIGKILLs the sweep's process after round 2 (faults.kill_at), as kill -9 would;
    two resumes finish the sweep, each killed variant continuing from its checkpoint."""
    exp = _exp(tmp_path)
    killed = _fedsim("run", str(exp), "--out", "killed", "--quiet", "--set", "faults.kill_at=2", cwd=tmp_path)
    assert killed.returncode == -9, killed.stderr
    sweep_dir = _only_dir(tmp_path / "killed")
    assert [e["status"] for e in read_index(sweep_dir)["variants"]] == ["running", "pending"]
    again = _fedsim("run", "--resume", str(sweep_dir), "--quiet", cwd=tmp_path)
    assert again.returncode == -9, again.stderr  # variant 0 continued and finished, variant 1 killed
    entries = read_index(sweep_dir)["variants"]
    assert [e["status"] for e in entries] == ["completed", "running"]
    first = sweep_dir / entries[0]["run_dir"] / "metrics.jsonl"
    kept = (first.read_bytes(), first.stat().st_mtime_ns)
    done = _fedsim("run", "--resume", str(sweep_dir), "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (first.read_bytes(), first.stat().st_mtime_ns) == kept  # a finished variant is not rerun

    res = runner.invoke(app, ["run", str(exp), "--out", str(tmp_path / "whole"), "--quiet"])
    assert res.exit_code == 0, res.output
    whole = _only_dir(tmp_path / "whole")
    resumed, reference = _by_id(sweep_dir), _by_id(whole)
    assert list(resumed) == list(reference) == ["000-seed=0", "001-seed=1"]
    assert [e["status"] for e in read_index(sweep_dir)["variants"]] == ["completed", "completed"]
    for vid, run_dir in resumed.items():
        assert _rows(run_dir) == _rows(reference[vid]), vid
        assert [r["round"] for r in load_run(run_dir).metrics] == [0, 1, 2, 3, 4]  # each round exactly once
        summary = load_run(run_dir).summary
        assert (summary["resumed"], summary["resumed_from_round"]) == (1, 2), vid  # from its checkpoint
    # resumed in place: one run directory per variant, no leftovers
    run_dirs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name != "figures")
    assert run_dirs == sorted(p.name for p in resumed.values())


def test_resume_refusals_write_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(par, "run_experiment", _flaky({1}))
    res = runner.invoke(app, ["run", str(_exp(tmp_path)), "--out", str(tmp_path / "runs"), "--quiet"])
    assert res.exit_code == 1, res.output
    monkeypatch.undo()
    sweep_dir = _only_dir(tmp_path / "runs")
    before = {p: p.read_bytes() for p in sweep_dir.rglob("*") if p.is_file()}
    cases = [
        (["--set", "rounds=5"], "differs from the sweep's sweep.toml in rounds"),
        (["--set", "sweep.seed=[0, 1, 2]"], "differs from the sweep's sweep.toml in sweep"),
        (["--set", "workload.num_ues=1000000000", str(tmp_path / "exp.toml")], "differs"),
    ]
    for extra, expected in cases:
        res = runner.invoke(app, ["run", "--resume", str(sweep_dir), "--quiet", *extra])
        assert res.exit_code == 2, res.output
        assert expected in res.output
    assert {p: p.read_bytes() for p in sweep_dir.rglob("*") if p.is_file()} == before
    # engine and output may change; the same experiment file may be named again
    res = runner.invoke(app, ["run", str(tmp_path / "exp.toml"), "--resume", str(sweep_dir), "--quiet",
                              "--engine", "inline", "--out", str(tmp_path / "elsewhere")])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "elsewhere").exists()
    res = runner.invoke(app, ["run", "--resume", str(sweep_dir), "--quiet"])
    assert res.exit_code == 2 and "nothing to resume" in res.output


def test_sweep_toml_rebuilds_every_shipped_sweep() -> None:
    """A resume rebuilds the variants from sweep.toml (the resolved base): for every shipped
    experiment they equal the ones expanded from the file itself."""
    for f in sorted(EXPERIMENTS_DIR.glob("*.toml")):
        data = read_toml(f)
        saved = tomllib.loads(tomli_w.dumps(to_toml_dict(base_config(data, []))))
        again = [(v.id, v.assignments, v.config) for v in expand_sweep(saved, [])]
        assert again == [(v.id, v.assignments, v.config) for v in expand_sweep(data, [])], f.stem


def test_index_records_the_variant_being_resumed(tmp_path: Path) -> None:
    """While a variant continues, index.json names the run directory it continues."""
    exp = _exp(tmp_path)
    assert _fedsim("run", str(exp), "--out", "k", "--quiet", "--set", "faults.kill_at=3",
                   "--set", "sweep.seed=[5]", cwd=tmp_path).returncode == -9
    sweep_dir = _only_dir(tmp_path / "k")
    partial = _only_dir(sweep_dir)
    seen: list[Any] = []
    real = par.run_experiment

    def spy(cfg: Any, *, quiet: bool = False, resume: Path | None = None) -> Path:
        seen.append((resume, json.loads((sweep_dir / "index.json").read_text())["variants"][0]["run_dir"]))
        return real(cfg, quiet=quiet, resume=resume)

    def no_kill(cfg: Any, round: int, resumed: bool) -> None:  # a fresh start would SIGKILL pytest
        if cfg.faults.kill_at == round and not resumed:
            raise RuntimeError("started again instead of continuing")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(par, "run_experiment", spy)
        mp.setattr(faults, "kill_if_due", no_kill)
        res = runner.invoke(app, ["run", "--resume", str(sweep_dir), "--quiet"])
    assert res.exit_code == 0, res.output
    assert seen == [(partial, partial.name)]
    assert load_run(partial).summary["resumed_from_round"] == 3
