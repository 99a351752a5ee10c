"""Importing fedsim, running it and plotting leave the caller's process as it was: the same
os.environ, the same matplotlib backend, no Flower or Ray imported by ``import fedsim``; Flower's
and Ray's variables are set only while an engine runs (fedsim.engines.env), and a Ray run does not
print Flower's deprecation notice for run_simulation."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fedsim.config import load_experiment, validate
from fedsim.config.experiment import EngineConfig
from fedsim.engines.env import HideRunSimulationDeprecation, defaults, engine_environment, flwr_home
from fedsim.parallel import sweep_init_args
from fedsim.results.rundir import PROJECT_ROOT
from fedsim.runner import run_experiment
from fedsim.sweep import expand_sweep, run_sweep

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["rounds=2", "workload.num_ues=3", "sweep={}", "output.plot=false"]

PROBE = """
import json, os, sys
import matplotlib
env, backend = dict(os.environ), matplotlib.get_backend()
import fedsim, fedsim.plots, fedsim.report, fedsim.figstyle
after = dict(os.environ)
print(json.dumps({"changed": sorted(k for k in set(env) | set(after) if env.get(k) != after.get(k)),
                  "backend": [backend, matplotlib.get_backend()],
                  "modules": [m for m in ("flwr", "ray", "matplotlib.pyplot") if m in sys.modules]}))
"""


def _clean_env() -> dict[str, str]:
    """This process's environment without the variables fedsim's engines set."""
    return {k: v for k, v in os.environ.items() if k not in defaults() and k != "MPLBACKEND"}


def test_import_changes_nothing() -> None:
    env = {**_clean_env(), "MPLBACKEND": "svg"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["changed"] == []
    assert got["backend"] == ["svg", "svg"]
    assert got["modules"] == []


def environ() -> dict[str, str]:
    """os.environ, without the variable pytest itself changes between a test's phases."""
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


@pytest.fixture
def bare_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in defaults():
        monkeypatch.delenv(key, raising=False)


def test_engine_environment_sets_and_restores(bare_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.supercore import telemetry

    monkeypatch.setenv("FLWR_LOG_LEVEL", "ERROR")  # the caller's own value wins
    before, cached = environ(), telemetry.FLWR_TELEMETRY_ENABLED
    with engine_environment():
        assert os.environ["FLWR_TELEMETRY_ENABLED"] == "0" and os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
        assert os.environ["FLWR_LOG_LEVEL"] == "ERROR"
        assert os.environ["FLWR_HOME"] == flwr_home() and str(os.getuid()) in flwr_home()
        assert stat.S_IMODE(os.stat(flwr_home()).st_mode) == 0o700
        assert telemetry.FLWR_TELEMETRY_ENABLED == "0"  # also in a Flower imported before
        os.environ["PYTHONPATH"] = "/somewhere"  # as Flower's Ray backend does
    assert environ() == before and telemetry.FLWR_TELEMETRY_ENABLED == cached
    with pytest.raises(RuntimeError), engine_environment():
        raise RuntimeError("a failing run")
    assert environ() == before


def test_only_the_run_simulation_deprecation_is_hidden(caplog: pytest.LogCaptureFixture) -> None:
    from flwr.supercore.logger import warn_deprecated_feature

    record = logging.LogRecord("flwr", logging.WARNING, "", 0, "DEPRECATED FEATURE: %s", ("`run_simulation`",), None)
    assert not HideRunSimulationDeprecation().filter(record)
    with engine_environment():
        warn_deprecated_feature("The `run_simulation` function is deprecated")
        warn_deprecated_feature("The `other_thing` function is deprecated")
    assert "run_simulation" not in caplog.text and "other_thing" in caplog.text


def test_inline_run_leaves_the_environment_as_it_was(bare_env: None, tmp_path: Path) -> None:
    before = environ()
    cfg = load_experiment(None, [*SMALL, "engine.name='inline'", f"output.dir={str(tmp_path)!r}"])
    run_experiment(cfg, quiet=True)
    assert environ() == before


def test_inline_sweep_leaves_the_environment_as_it_was(bare_env: None, tmp_path: Path) -> None:
    data = {"name": "env", "rounds": 2, "workload": {"name": "quadratic", "num_ues": 3, "dim": 2},
            "engine": {"name": "inline"}, "output": {"dir": str(tmp_path)},
            "sweep": {"strategy.name": ["server-ota", "serverfree-relay"]}}
    before = environ()
    folder = run_sweep(expand_sweep(data, []), validate({**data, "sweep": {}}), quiet=True)
    assert (folder / "figures" / "convergence.pdf").exists()
    assert environ() == before


def test_sweep_workers_get_pythonpath_from_ray_not_from_os_environ(bare_env: None) -> None:
    before = environ()
    args = sweep_init_args(EngineConfig(name="ray", num_cpus=1), "/tmp/x")
    assert args["runtime_env"]["env_vars"]["PYTHONPATH"].split(os.pathsep)[0] == str(PROJECT_ROOT)
    assert environ() == before


RAY_RUN = """
import json, os
from fedsim.config import load_experiment
from fedsim.runner import run_experiment
env = dict(os.environ)
cfg = load_experiment(None, {items!r})
run_experiment(cfg, quiet=True)
print("ENV", json.dumps(sorted(k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k))))
"""


@pytest.mark.timeout(600)
def test_ray_run_prints_no_deprecation_and_restores_the_environment(tmp_path: Path) -> None:
    items = [*SMALL, "engine.name='ray'", "engine.num_cpus=1", "engine.object_store_mb=128",
             f"output.dir={str(tmp_path)!r}"]
    out = subprocess.run([sys.executable, "-c", RAY_RUN.format(items=items)], env=_clean_env(), cwd=tmp_path,
                         capture_output=True, text=True, timeout=540)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "DEPRECATED FEATURE" not in text and "run_simulation" not in text, text
    assert "\x1b[" not in text  # no raw colour codes in a captured log
    assert json.loads(text.split("ENV", 1)[1].strip().splitlines()[0]) == []
