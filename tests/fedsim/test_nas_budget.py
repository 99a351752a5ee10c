"""Resource budgets (max_params / max_flops) of the gradient searches nas-gdas and nas-dash: the
derived architecture is the most probable one within the budget, checked against brute force."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from pydantic import ValidationError
from scipy import stats

from fedsim.config import EXPERIMENTS_DIR, apply_overrides, validate
from fedsim.runner import run_experiment
from fedsim.workloads import build_workload
from fedsim.workloads.nas.budget import cell_derive_within, cell_genotype_with, cell_random_within
from fedsim.workloads.nas.cells import PARAM_OPS
from fedsim.workloads.nas.dash import DashConfig
from fedsim.workloads.nas.gdas import GdasConfig, GdasWorkload

pytestmark = pytest.mark.usefixtures("one_thread")


def _gdas(**kw) -> GdasWorkload:
    return GdasWorkload(GdasConfig(num_ues=3, total_steps=20, **kw), seed=0)


def _all_genotypes(space):
    """Every genotype of the cell space (two distinct inputs per node, a non-none op on each)."""
    per_node = [[[[o1, i1], [o2, i2]] for i1, i2 in itertools.combinations(range(2 + j), 2)
                 for o1 in space.real_ops for o2 in space.real_ops] for j in range(space.nodes)]
    for choice in itertools.product(*per_node):
        yield {f"node{j}": pairs for j, pairs in enumerate(choice)}


def _score(space, alpha: torch.Tensor, arch) -> float:
    logp = space.probs(alpha).log()
    return sum(float(logp[space.edge(j, i), space.ops.index(op)])
               for j in range(space.nodes) for op, i in arch[f"node{j}"])


def _conv_edges(space, arch) -> int:
    return sum(op in PARAM_OPS for op in space.edge_ops(arch).values())


def test_cell_derivation_without_budget_is_the_darts_rule() -> None:
    space = _gdas().space
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        alpha = torch.randn(space.num_edges, len(space.ops), generator=g)
        assert cell_derive_within(space, alpha, 2 * space.nodes) == space.derive(alpha)


def test_cell_derivation_within_a_budget_is_the_brute_force_optimum() -> None:
    space = _gdas(nodes=2).space  # 1 875 genotypes
    genotypes = list(_all_genotypes(space))
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        alpha = 2 * torch.randn(space.num_edges, len(space.ops), generator=g)
        for budget in range(0, 2 * space.nodes + 1):
            found = cell_derive_within(space, alpha, budget)
            best = max(_score(space, alpha, a) for a in genotypes if _conv_edges(space, a) <= budget)
            assert _conv_edges(space, found) <= budget
            assert _score(space, alpha, found) == pytest.approx(best, abs=1e-12)


def test_cell_resources_depend_only_on_the_number_of_conv_edges() -> None:
    space = _gdas().space
    by_count = {k: space.resources(cell_genotype_with(space, k), latency=False) for k in range(2 * space.nodes + 1)}
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        arch = space.random_architecture(g)
        assert space.resources(arch, latency=False) == by_count[_conv_edges(space, arch)]
    assert [by_count[k].params for k in range(3)] == sorted({by_count[k].params for k in range(3)})  # increasing


def test_random_genotypes_within_a_budget_are_uniform_among_the_feasible_ones() -> None:
    """The exact conditional sampler matches the uniform law on feasible genotypes: the number of
    conv edges follows the truncated Binomial(6, 2/5), and per edge class the ops are uniform."""
    space = _gdas().space
    g = torch.Generator().manual_seed(5)
    n, budget = 6000, 2
    archs = [cell_random_within(space, g, budget) for _ in range(n)]
    for a in archs[:50]:
        assert space.validate(a) == a
    counts = torch.bincount(torch.tensor([_conv_edges(space, a) for a in archs]), minlength=budget + 1)
    assert len(counts) == budget + 1  # never over the budget
    q = 2 / 5
    p = torch.tensor([math.comb(6, c) * q**c * (1 - q) ** (6 - c) for c in range(budget + 1)])
    p = p / p.sum()
    assert stats.chisquare(counts.double().numpy(), (n * p).numpy()).pvalue > 1e-3
    ops = [op for a in archs for pairs in a.values() for op, _ in pairs]
    for group in (["conv3x3", "dil_conv3x3"], ["max_pool3x3", "avg_pool3x3", "skip"]):
        k = torch.tensor([ops.count(o) for o in group], dtype=torch.float64)
        assert stats.chisquare(k.numpy()).pvalue > 1e-3
    inputs = [i for a in archs for _, i in a["node2"]]  # node 2 picks 2 of 4 inputs
    assert stats.chisquare(torch.bincount(torch.tensor(inputs), minlength=4).double().numpy()).pvalue > 1e-3
    with pytest.raises(ValueError, match="no genotype has at most 0 conv edges"):
        cell_random_within(_gdas(ops=("conv3x3", "dil_conv3x3")).space, g, 0)


def test_gdas_budget_binds_derivation_and_random_candidates() -> None:
    free = _gdas().space.resources(cell_genotype_with(_gdas().space, 2), latency=False)
    wl = _gdas(max_params=free.params, search_strategy="random", random_candidates=6)
    assert wl.max_conv_edges == 2
    g = torch.Generator().manual_seed(3)
    for _ in range(10):
        alpha = torch.randn(wl.alpha_shape, generator=g)
        assert wl.space.resources(wl.derive(alpha), latency=False).params <= free.params
    out = wl.search_result(wl.init_params())
    assert out["budget"] == {"max_params": free.params, "max_flops": None, "max_conv_edges": 2, "met": True}
    assert out["resources"]["params"] <= free.params and len(out["candidate_val_accuracy"]) == 6
    flops_wl = _gdas(max_flops=free.flops)
    assert flops_wl.max_conv_edges == 2


@pytest.mark.parametrize("kw, match", [
    ({"max_params": 100}, "no genotype meets max_params = 100: the smallest has 402 parameters"),
    ({"max_flops": 5}, "no genotype meets max_flops = 5"),
    ({"max_params": 0}, "greater than or equal to 1"),
    ({"max_params": 2000, "arch": {"node0": [["conv3x3", 0], ["conv3x3", 1]], "node1": [["skip", 0], ["skip", 1]],
                                   "node2": [["skip", 0], ["skip", 1]]}}, "arch has 2706 parameters"),
])
def test_gdas_budget_errors_name_the_key(kw: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        GdasConfig(num_ues=3, **kw)


def _dash(**kw):
    base = {"dataset": "digits", "channels": (4, 8), "total_steps": 20}
    return build_workload(DashConfig(**{**base, **kw}), seed=0)


def test_dash_derivation_within_a_budget_is_the_brute_force_optimum() -> None:
    ref = _dash()
    names = [d.name for d in ref.space.decisions]
    archs = [{n: {"kernel": k, "dilation": d} for n, (k, d) in zip(names, kd, strict=True)}
             for kd in itertools.product(ref.space.pairs, repeat=len(names))]
    res = {json.dumps(a, sort_keys=True): ref.space.resources(a, latency=False) for a in archs}
    by_kernels = {}
    for a in archs:  # the dilation changes neither params nor FLOPs
        r = res[json.dumps(a, sort_keys=True)]
        assert by_kernels.setdefault(tuple(v["kernel"] for v in a.values()), r) == r
    params = sorted({r.params for r in res.values()})
    g = torch.Generator().manual_seed(4)
    for budget in params[:: max(1, len(params) // 4)]:
        wl = _dash(max_params=budget)
        for _ in range(3):
            w = wl.init_params()
            w[wl.theta_dim:] = 2 * torch.randn(wl.alpha_dim, generator=g)
            logp = torch.log_softmax(wl.split(w)[1].view(len(names), -1).double(), dim=1)
            score = {json.dumps(a, sort_keys=True): sum(
                float(logp[i, ref.space.pairs.index((v["kernel"], v["dilation"]))]) for i, v in enumerate(a.values()))
                for a in archs}
            best = max(s for key, s in score.items() if res[key].params <= budget)
            found = wl.derive(w)
            assert res[json.dumps(found, sort_keys=True)].params <= budget
            assert score[json.dumps(found, sort_keys=True)] == pytest.approx(best, abs=1e-12)
            if budget == params[-1]:
                assert found == ref.derive(w)  # no budget: argmax per layer


def test_dash_budget_errors_name_the_key() -> None:
    with pytest.raises(ValidationError, match="the smallest architecture .every kernel 3. has .* over max_params = 50"):
        DashConfig(dataset="digits", channels=(4, 8), max_params=50)
    with pytest.raises(ValidationError, match="arch has .* over max_flops = 1000"):
        DashConfig(dataset="digits", channels=(4, 8), max_flops=1000,
                   arch={"conv0": {"kernel": 3, "dilation": 1}, "conv1": {"kernel": 3, "dilation": 1}})


@pytest.mark.parametrize("workload", [
    {"name": "nas-gdas", "max_params": 2706, "val_fraction": 0.3},
    {"name": "nas-dash", "dataset": "digits", "channels": [4, 8], "max_params": 1000},
])
def test_federated_search_meets_the_budget_and_retrains(tmp_path, workload: dict) -> None:
    cfg = validate(apply_overrides({"workload": {"num_ues": 3, **workload}}, [
        "engine.name='inline'", "output.plot=false", f"output.dir='{tmp_path}'", "rounds=2", "train.local_steps=2",
        "checkpoint.every=0"]))
    run_dir = run_experiment(cfg, quiet=True)
    found = json.loads((run_dir / "architecture.json").read_text())
    assert found["budget"]["met"] and found["resources"]["params"] <= workload["max_params"]
    assert found["retrain"]["status"] == "completed"


def test_cli_reports_the_budget(tmp_path) -> None:
    from typer.testing import CliRunner

    from fedsim.cli import app

    experiment = EXPERIMENTS_DIR / "nas_gdas.toml"
    res = CliRunner().invoke(app, [
        "run", str(experiment), "--set", "sweep={}", "--set", "workload.max_params=4000",
        "--set", "workload.num_ues=3", "--set", "rounds=1", "--set", "workload.retrain_rounds=0",
        "--out", str(tmp_path), "-q"])
    assert res.exit_code == 0, res.output
    assert "budget max_params = 4000: met" in res.output
