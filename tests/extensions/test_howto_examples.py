"""The how-to pages' examples, each one file plus one registry line, run end to end and checked
against independent references: a Nakagami-m fading law against its closed forms and Rayleigh,
a coordinate-wise median strategy against numpy's median of independently trained models, and a
ridge-regression workload against the exact gradient-descent recursion."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from channels import FADING, Channel, ChannelConfig
from channels.rng import torch_generator
from fedsim.config import apply_overrides, validate
from fedsim.results.rundir import load_run
from fedsim.runner import run_experiment
from fedsim.runtime.schedule import make_lr
from fedsim.workloads import WORKLOADS
from strategies import STRATEGIES

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def load_example(name: str):
    """Import ``docs/examples/<name>.py`` (which registers its part) as a module."""
    spec = importlib.util.spec_from_file_location(f"howto_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def nakagami():
    yield load_example("nakagami")
    FADING.unregister("nakagami")  # other tests must not see an example's registration


@pytest.fixture(scope="module")
def median():
    yield load_example("median_strategy")
    STRATEGIES.unregister("server-median")


@pytest.fixture(scope="module")
def linreg():
    yield load_example("linreg_workload")
    WORKLOADS.unregister("linreg")


def run(tmp_path: Path, *overrides: str, result: dict | None = None) -> list[dict]:
    cfg = validate(apply_overrides({}, ["engine.name='inline'", "output.plot=false", f"output.dir={str(tmp_path)!r}",
                                        *overrides]))
    return load_run(run_experiment(cfg, quiet=True, result=result)).metrics


# ----------------------------------------------------------------------------- a fading law


def test_nakagami_matches_its_closed_forms_and_rayleigh_at_m_1(nakagami) -> None:
    law = FADING.get("nakagami")
    h = law(law.Params(name="nakagami", m=2.5)).sample((200_000,), torch_generator(0, "fading"), torch.float64)
    amp = h.abs().numpy()
    assert float(np.mean(amp**2)) == pytest.approx(1.0, abs=0.01)  # unit mean power
    fading = law(law.Params(name="nakagami", m=2.5))
    assert float(np.mean(amp)) == pytest.approx(fading.mean_abs(), abs=3e-3)
    assert float(np.mean(amp < 0.5)) == pytest.approx(fading.dropout_probability(0.5), abs=3e-3)
    assert stats.kstest(amp**2, stats.gamma(2.5, scale=1 / 2.5).cdf).pvalue > 1e-3
    assert abs(float(np.mean(np.angle(h.numpy())))) < 0.02  # uniform phase
    ray = law(law.Params(name="nakagami", m=1.0))
    amp1 = ray.sample((100_000,), torch_generator(1, "fading"), torch.float64).abs().numpy()
    assert stats.kstest(amp1, stats.rayleigh(scale=math.sqrt(0.5)).cdf).pvalue > 1e-3
    assert ray.mean_abs() == pytest.approx(math.sqrt(math.pi) / 2)  # Rayleigh's E|h|


def test_nakagami_runs_in_a_channel_and_an_experiment(nakagami, tmp_path: Path) -> None:
    cfg = ChannelConfig(fading={"name": "nakagami", "m": 3.0}, power_control="phase")
    assert cfg.model_dump(mode="json")["fading"] == {"name": "nakagami", "m": 3.0}
    v = torch.ones(4000, 1, dtype=torch.float64)
    est = Channel(cfg, "server").transmit(v, seed=0, round=1).estimate
    assert float(est) == pytest.approx(1.0, abs=0.02)  # phase-only decoding is unbiased: E|h|/μ_h = 1
    rows = run(tmp_path, "rounds=3", "workload={name='quadratic', num_ues=4}", "strategy.name='server-ota'",
               "channel.fading={name='nakagami', m=2.0}", "channel.power_control='phase'")
    assert [r["round"] for r in rows] == [0, 1, 2, 3] and rows[-1]["gap"] < rows[0]["gap"]


# ----------------------------------------------------------------------------- a strategy


def test_median_strategy_takes_the_median_of_independently_trained_models(median, tmp_path: Path) -> None:
    """5 UEs, 3 local steps, 2 rounds: each round the server model becomes numpy's median of the
    UEs' models, each trained here directly with the workload's own local SGD."""
    from fedsim.workloads import build_workload, parse_workload_config

    wl_cfg = {"name": "quadratic", "num_ues": 5, "dim": 6, "hessian": "heterogeneous"}
    workload = "workload={name='quadratic', num_ues=5, dim=6, hessian='heterogeneous'}"
    result: dict = {}
    run(tmp_path, "rounds=2", workload, "strategy.name='server-median'", "train.local_steps=3", "train.lr.eta=0.05",
        result=result)
    wl = build_workload(parse_workload_config(wl_cfg), 0)
    lr = make_lr(validate({"train": {"lr": {"eta": 0.05}}}).train.lr, 6)
    w = wl.init_params()
    for r in range(2):
        models = np.stack([wl.local_sgd(w, n, 3 * r, 3, lr).numpy() for n in range(5)])
        w = torch.from_numpy(np.median(models, axis=0))
    assert torch.equal(result["final_model"], w)
    mean_result: dict = {}
    run(tmp_path, "rounds=2", workload, "train.local_steps=3", "train.lr.eta=0.05", result=mean_result)
    assert not torch.allclose(mean_result["final_model"], w)  # the median is not FedAvg's mean


def test_median_strategy_refuses_an_overlapped_schedule(median) -> None:
    from fedsim.errors import ConfigError

    with pytest.raises(ConfigError, match="no overlapped schedule"):
        validate({"strategy": {"name": "server-median", "overlap": {"enabled": True}}})


# ----------------------------------------------------------------------------- a workload


def test_linreg_follows_the_exact_gradient_descent_recursion(linreg, tmp_path: Path) -> None:
    """Digital FedAvg with full-batch gradients (K = 1) is gradient descent on f:
    w_R − w* = (I − ηH)^R (w0 − w*) exactly."""
    eta, R = 0.2, 12
    rows = run(tmp_path, f"rounds={R}", "workload={name='linreg', num_ues=4, dim=5}", "train.lr.eta=0.2",
               "strategy.transmit='gradient'")
    wl = linreg.LinRegConfig(num_ues=4, dim=5).build(0)
    contraction = torch.linalg.matrix_power(torch.eye(5, dtype=torch.float64) - eta * wl.H, R)
    expected = float((contraction @ (wl.init_params() - wl.w_star)).norm())
    assert rows[-1]["dist"] == pytest.approx(expected, rel=1e-9)
    assert rows[0]["constants"]["mu"]["source"] == "exact: λ_min(H)"
