"""Sweeps: deterministic expansion, validation before anything runs, exact equality with
single runs, resume, and plots over a sweep folder."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import fedsim.parallel as par
from fedsim.cli import app
from fedsim.config import apply_overrides, validate
from fedsim.errors import ConfigError
from fedsim.plots import plot_runs
from fedsim.results.rundir import load_run
from fedsim.runner import run_experiment
from fedsim.sweep import (
    base_config,
    expand_run_dirs,
    expand_sweep,
    read_index,
    run_sweep,
    sweep_table,
)

SMALL: dict[str, Any] = {
    "name": "sw",
    "rounds": 3,
    "workload": {"name": "synthetic-logreg", "num_ues": 3},
    "engine": {"name": "inline"},
    "output": {"plot": False},
}
TOML = """name = "sw"
rounds = 3
[workload]
name = "synthetic-logreg"
num_ues = 3
[engine]
name = "inline"
[output]
plot = false
[sweep]
"train.lr.eta" = [0.1, 0.3]
seed = [0, 1]
"""

cli = CliRunner()


def _data(sweep: dict[str, list[Any]], out: Path | None = None) -> dict[str, Any]:
    data = json.loads(json.dumps(SMALL))
    data["sweep"] = sweep
    if out is not None:
        data["output"]["dir"] = str(out)
    return data


def _sweep(tmp_path: Path, sweep: dict[str, list[Any]]) -> tuple[Path, list, Any]:
    data = _data(sweep, tmp_path / "runs")
    variants = expand_sweep(data, [])
    base = base_config(data, [])
    return run_sweep(variants, base, quiet=True), variants, base


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    return load_run(run_dir).metrics


# --------------------------------------------------------------------------- expansion


def test_expansion_order_ids_assignments_and_seeds() -> None:
    sweep = {"strategy.fraction": [1.0, 0.5], "train.lr.eta": [0.1, 0.3], "seed": [0, 1, 2]}
    variants = expand_sweep(_data(sweep), [])
    assert len(variants) == 12
    # keys in file order, values in list order, last key fastest
    expected = [(f, e, s) for f in (1.0, 0.5) for e in (0.1, 0.3) for s in (0, 1, 2)]
    got = [(v.config.strategy.fraction, v.config.train.lr.eta, v.config.seed) for v in variants]
    assert got == expected
    assert [v.index for v in variants] == list(range(12))
    ids = [v.id for v in variants]
    assert len(set(ids)) == 12
    assert all(re.fullmatch(r"[A-Za-z0-9._+=,-]+", i) for i in ids)
    assert ids[4] == "004-strategy.fraction=1.0,train.lr.eta=0.3,seed=1"
    assert variants[4].assignments == ["strategy.fraction=1.0", "train.lr.eta=0.3", "seed=1"]
    assert all(v.config.sweep == {} for v in variants)
    # untouched settings come from the base
    assert {v.config.rounds for v in variants} == {3}
    # assignments are --set overrides that reproduce the variant exactly; only its folder name
    # (output.run_name, the variant id) is added by the sweep
    for v in variants:
        assert v.config.output.run_name == v.id
        assert validate(apply_overrides(SMALL, [*v.assignments, f"output.run_name={v.id!r}"])) == v.config


def test_set_overrides_apply_before_expansion_and_can_add_sweep_keys() -> None:
    data = _data({"seed": [0, 1]})
    variants = expand_sweep(data, ["rounds=5", "sweep.train.lr.eta=[0.2, 0.4]", "seed=9"])
    assert [(v.config.seed, v.config.train.lr.eta) for v in variants] == [
        (0, 0.2), (0, 0.4), (1, 0.2), (1, 0.4)]
    assert {v.config.rounds for v in variants} == {5}  # base override reaches every variant
    # TOML's nested form of dotted keys is the same sweep
    nested = _data({})
    nested["sweep"] = {"train": {"lr": {"eta": [0.2, 0.4]}}}
    assert [v.config.train.lr.eta for v in expand_sweep(nested, [])] == [0.2, 0.4]
    # --set 'sweep={}' clears the table: one variant, the base
    assert len(expand_sweep(data, ["sweep={}"])) == 1


def test_invalid_variant_raises_naming_variant_and_key() -> None:
    with pytest.raises(ConfigError) as exc:
        expand_sweep(_data({"seed": [0, 1], "train.lr.eta": [0.1, -1]}), [])
    msg = str(exc.value)
    assert "sweep variant 001-seed=0,train.lr.eta=-1" in msg
    assert "train.lr.eta" in msg and "greater than 0" in msg
    with pytest.raises(ConfigError, match="sweep.seed: expected a list"):
        expand_sweep(_data({"seed": 3}), [])  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="output.dir: cannot be swept"):
        expand_sweep(_data({"output.dir": ["a", "b"]}), [])


@pytest.mark.parametrize(
    ("sweep_set", "expected"),
    [
        ("sweep.train.lr.eta=[0.1, -1]", "train.lr.eta: Input should be greater than 0"),
        ("sweep.train.bogus=[1, 2]", "train.bogus: unknown key; allowed keys here: local_steps"),
        ("sweep.strategy.name=['server-digital', 'nope']", "strategy.name"),
    ],
)
def test_cli_invalid_sweep_exits_2_and_writes_nothing(tmp_path: Path, sweep_set: str,
                                                      expected: str) -> None:
    exp = tmp_path / "exp.toml"
    exp.write_text(TOML)
    out = tmp_path / "runs"
    res = cli.invoke(app, ["run", str(exp), "--out", str(out), "--quiet", "--set", sweep_set])
    assert res.exit_code == 2, res.output
    assert expected in res.output
    assert "sweep variant" in res.output
    assert not out.exists()


# --------------------------------------------------------------------------- running


def test_sweep_runs_and_matches_single_runs(tmp_path: Path) -> None:
    sweep_dir, variants, _ = _sweep(tmp_path, {"train.lr.eta": [0.1, 0.3], "seed": [0, 1]})
    index = read_index(sweep_dir)
    assert index["name"] == "sw" and index["total"] == 4
    assert [e["status"] for e in index["variants"]] == ["completed"] * 4
    assert [e["id"] for e in index["variants"]] == [v.id for v in variants]
    run_dirs = [sweep_dir / e["run_dir"] for e in index["variants"]]
    assert len(set(run_dirs)) == 4
    for rd, v in zip(run_dirs, variants, strict=True):
        assert rd.parent == sweep_dir
        run = load_run(rd)  # a valid run directory
        assert run.summary["status"] == "completed" and run.summary["rounds"] == 3
        assert [r["round"] for r in run.metrics] == [0, 1, 2, 3]
        assert run.config["seed"] == v.config.seed
        assert run.config["train"]["lr"]["eta"] == v.config.train.lr.eta
    # the same config run alone gives identical rows (metrics hold no wall-clock fields)
    for rd, v in zip(run_dirs, variants, strict=True):
        alone = v.config.model_copy(deep=True)
        alone.output.dir = str(tmp_path / "alone")
        assert _rows(run_experiment(alone, quiet=True)) == _rows(rd)
    # seeds matter: same eta, different seed, different numbers
    assert _rows(run_dirs[0]) != _rows(run_dirs[1])
    # the overall figures, against round and against simulated time
    for stem in ("convergence", "convergence-sim_time"):
        for ext in ("png", "pdf"):
            assert (sweep_dir / "figures" / f"{stem}.{ext}").stat().st_size > 0
    assert [r["status"] for r in sweep_table(sweep_dir)] == ["completed"] * 4
    assert (sweep_dir / "sweep.toml").exists()


def test_failing_variant_is_recorded_and_sweep_continues(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    real = par.run_experiment

    def flaky(cfg: Any, *, quiet: bool = False) -> Path:
        if cfg.seed == 1:
            raise RuntimeError("boom")
        return real(cfg, quiet=quiet)

    monkeypatch.setattr(par, "run_experiment", flaky)
    sweep_dir, _, _ = _sweep(tmp_path, {"seed": [0, 1, 2]})
    entries = read_index(sweep_dir)["variants"]
    assert [e["status"] for e in entries] == ["completed", "failed", "completed"]
    assert "boom" in entries[1]["error"]


def test_resume_reruns_only_unfinished_variants(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    sweep_dir, variants, base = _sweep(tmp_path, {"train.lr.eta": [0.1, 0.3], "seed": [0, 1]})
    index = read_index(sweep_dir)
    before = {e["id"]: _rows(sweep_dir / e["run_dir"]) for e in index["variants"]}
    mtimes = {e["id"]: (sweep_dir / e["run_dir"] / "metrics.jsonl").stat().st_mtime_ns
              for e in index["variants"]}
    victim = index["variants"][2]
    shutil.rmtree(sweep_dir / victim["run_dir"])
    victim["status"] = "failed"
    (sweep_dir / "index.json").write_text(json.dumps(index))

    calls: list[str] = []
    real = par.run_experiment

    def counting(cfg: Any, *, quiet: bool = False) -> Path:
        calls.append(f"seed={cfg.seed},eta={cfg.train.lr.eta}")
        return real(cfg, quiet=quiet)

    monkeypatch.setattr(par, "run_experiment", counting)
    again = run_sweep(variants, base, quiet=True, resume=sweep_dir, plot=False)
    assert again == sweep_dir
    assert calls == ["seed=0,eta=0.3"]
    after = read_index(sweep_dir)
    assert [e["status"] for e in after["variants"]] == ["completed"] * 4
    assert {e["id"]: _rows(sweep_dir / e["run_dir"]) for e in after["variants"]} == before
    for e in after["variants"]:
        if e["id"] != victim["id"]:
            mtime = (sweep_dir / e["run_dir"] / "metrics.jsonl").stat().st_mtime_ns
            assert mtime == mtimes[e["id"]]
    # a resume with a different grid is refused
    with pytest.raises(ConfigError, match="cannot resume"):
        run_sweep(variants[:3], base, quiet=True, resume=sweep_dir)


def test_plot_runs_and_cli_accept_a_sweep_folder(tmp_path: Path) -> None:
    exp = tmp_path / "exp.toml"
    exp.write_text(TOML.replace('seed = [0, 1]', 'seed = [0, 1, 2]'))
    res = cli.invoke(app, ["run", str(exp), "--out", str(tmp_path / "runs"), "--quiet"])
    assert res.exit_code == 0, res.output
    (sweep_dir,) = (tmp_path / "runs").iterdir()
    assert f"sweep folder: {sweep_dir}" in res.output
    assert "005-train.lr.eta=0.3,seed=2" in res.output and "completed" in res.output
    assert len(expand_run_dirs([sweep_dir])) == 6
    written = plot_runs([sweep_dir], x="sim_time", out=tmp_path / "figs" / "sweep")
    assert sorted(p.suffix for p in written) == [".pdf", ".png"]
    assert all(p.stat().st_size > 0 for p in written)
    res = cli.invoke(app, ["plot", str(sweep_dir), "--metric", "gap"])
    assert res.exit_code == 0, res.output
    assert (sweep_dir / "figures" / "gap-vs-round.png").exists()
    assert (sweep_dir / "figures" / "gap-vs-round.pdf").exists()


def test_run_without_sweep_is_unchanged(tmp_path: Path) -> None:
    exp = tmp_path / "exp.toml"
    exp.write_text(TOML.split("[sweep]")[0])
    res = cli.invoke(app, ["run", str(exp), "--out", str(tmp_path / "runs"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "run directory:" in res.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert load_run(run_dir).summary["status"] == "completed"
