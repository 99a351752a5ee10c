"""Bad input stops the run with a clear message, exit code 2, and nothing on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedsim.cli import app
from fedsim.config import QUICKSTART, apply_overrides, load_experiment, parse_override
from fedsim.errors import ConfigError

runner = CliRunner()

BAD_OVERRIDES = [
    (["bogus=1"], "bogus: unknown key"),
    (["workload.alphaa=1"], "workload.alphaa: unknown key"),
    (["rounds=\"many\""], "rounds"),
    (["rounds=0"], "greater than or equal to 1"),
    (["workload.num_ues=-3"], "workload.num_ues"),
    (["workload.name=\"resnet\""], "workload.name: unknown workload 'resnet'"),
    (["strategy.name=\"fedmagic\""], "strategy.name"),
    (["train.lr.eta=nan"], "NaN and infinity are not allowed"),
    (["train.lr.eta=inf"], "NaN and infinity are not allowed"),
    (["train.lr.eta=-0.1"], "train.lr.eta"),
    (["engine.name=\"spark\""], "engine.name"),
    (["strategy.fraction=1.5"], "strategy.fraction"),
    (["rounds"], "expected KEY.PATH=VALUE"),
    (["name=\"../escape\""], "name"),
    (["train.lr.schedule=\"cosine\"", "train.lr.eta_min=1.0", "train.lr.eta=0.1"], "eta_min"),
    (["seed=-1"], "seed"),
    (["train.local_steps=2.5"], "train.local_steps"),
    (["rounds.x=1"], "is a value, not a section"),
]


@pytest.mark.parametrize(("overrides", "expected"), BAD_OVERRIDES)
def test_bad_override_exits_2_and_writes_nothing(tmp_path: Path, overrides: list[str], expected: str) -> None:
    out = tmp_path / "runs"
    args = ["run", str(QUICKSTART), "--out", str(out), "--quiet"]
    for o in overrides:
        args += ["--set", o]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert expected in res.output
    assert not out.exists()


def test_missing_file(tmp_path: Path) -> None:
    res = runner.invoke(app, ["run", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "runs")])
    assert res.exit_code == 2
    assert "not found" in res.output
    assert not (tmp_path / "runs").exists()


def test_malformed_toml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = [1, \n name = ")
    res = runner.invoke(app, ["run", str(bad), "--out", str(tmp_path / "runs")])
    assert res.exit_code == 2
    assert "malformed TOML" in res.output
    assert not (tmp_path / "runs").exists()


def test_unknown_key_in_file_lists_allowed_keys(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlocal_step = 3\n")
    with pytest.raises(ConfigError) as info:
        load_experiment(bad)
    assert "train.local_step: unknown key" in str(info.value)
    assert "local_steps" in str(info.value)


def test_engine_option_is_validated(tmp_path: Path) -> None:
    res = runner.invoke(app, ["run", str(QUICKSTART), "--engine", "threads", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "engine.name" in res.output


def test_defaults_fill_every_section(tmp_path: Path) -> None:
    f = tmp_path / "minimal.toml"
    f.write_text("rounds = 3\n")
    cfg = load_experiment(f)
    assert cfg.rounds == 3
    assert cfg.workload.name == "synthetic-logreg"
    assert cfg.engine.name == "ray"


def test_override_parsing() -> None:
    assert parse_override("a.b=1.5") == (["a", "b"], 1.5)
    assert parse_override("a=hello") == (["a"], "hello")
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    data = apply_overrides({"a": {"b": 1}}, ["a.c=true", "d=2"])
    assert data == {"a": {"b": 1, "c": True}, "d": 2}
