"""Per-UE latency budgets in the NAS searches: every found architecture meets every UE's limit (a
property over random budgets, checked by counting the ops of the real child), and the feasible set
of several UEs is the intersection of the single-UE sets, so the strictest UE binds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from fedsim.workloads import build_workload
from fedsim.workloads.latency import LatencyBudget, cost_model, op_summary, predict_ms
from fedsim.workloads.latency.costmodel import mlp_features
from fedsim.workloads.latency.space import PROFILES
from fedsim.workloads.nas.budget import cell_derive_within, cell_latency_costs, cell_random_within
from fedsim.workloads.nas.dash import DashConfig
from fedsim.workloads.nas.gdas import GdasConfig, GdasWorkload
from fedsim.workloads.nas.tabnas import TabNasConfig

pytestmark = pytest.mark.usefixtures("one_thread")
NAMES = [p.name for p in PROFILES]


def _ms(space, arch, profile: str) -> float:
    """Latency of ``arch``'s real child by counting its ops (independent of the closed forms)."""
    return predict_ms(op_summary(space.child(arch), space.example_input()), profile)


def test_per_ue_budget_validation() -> None:
    b = LatencyBudget.per_ue([1.0, 2.0, 3.0], ["t1-b1", "t1-b4"], 3)
    assert b.profiles == ("t1-b1", "t1-b4", "t1-b1") and b.limits == (1.0, 2.0, 3.0)
    assert LatencyBudget.per_ue(0.5, None, 9).profiles == (*NAMES, NAMES[0])
    with pytest.raises(ValueError, match="one per UE"):
        LatencyBudget.per_ue([1.0, 2.0], None, 3)
    with pytest.raises(ValidationError, match="unknown device profile"):
        TabNasConfig(max_latency_ms=1.0, latency_profiles=["phone"])


def _mlp_ms(wl, widths: torch.Tensor, profile: str) -> np.ndarray:
    p, coef = cost_model().profile(profile)
    return (mlp_features(widths, wl.space.d_in, wl.space.num_classes, p) @ torch.as_tensor(coef)).numpy()


def test_strictest_ue_binds_mlp() -> None:
    wl = build_workload(TabNasConfig(num_ues=3, max_params=10**6), seed=0)
    widths = torch.tensor(wl.space.widths)[torch.tensor(list(itertools.product(range(5), repeat=3)))]
    ms = {p: _mlp_ms(wl, widths, p) for p in ("t1-b1", "t1-b4")}
    rng, mixed = np.random.default_rng(0), 0
    for _ in range(20):
        lims = [rng.uniform(ms["t1-b1"].min(), ms["t1-b1"].max()), rng.uniform(ms["t1-b4"].min(), ms["t1-b4"].max()),
                rng.uniform(ms["t1-b1"].min(), ms["t1-b1"].max())]
        got = LatencyBudget(("t1-b1", "t1-b4", "t1-b1"), tuple(lims)).mlp_fits(
            widths, wl.space.d_in, wl.space.num_classes).numpy()
        singles = [LatencyBudget((p,), (lim,)).mlp_fits(widths, wl.space.d_in, wl.space.num_classes).numpy()
                   for p, lim in zip(("t1-b1", "t1-b4", "t1-b1"), lims, strict=True)]
        assert np.array_equal(got, singles[0] & singles[1] & singles[2])  # the intersection of single UEs
        assert np.array_equal(got, (ms["t1-b1"] <= min(lims[0], lims[2])) & (ms["t1-b4"] <= lims[1]))
        mixed += 0 < got.sum() < len(got)
    assert mixed >= 10  # most draws cut the space


def test_tabnas_found_architecture_meets_every_ue() -> None:
    rng, g = np.random.default_rng(1), torch.Generator().manual_seed(1)
    ref = build_workload(TabNasConfig(num_ues=3, max_params=10**6), seed=0)
    widths = torch.tensor(ref.space.widths)[torch.tensor(list(itertools.product(range(5), repeat=3)))]
    found = 0
    for _ in range(6):
        profiles = [str(p) for p in rng.choice(NAMES, size=3)]
        lims = [float(rng.uniform(_mlp_ms(ref, widths, p).min(), _mlp_ms(ref, widths, p).max())) for p in profiles]
        try:
            wl = build_workload(TabNasConfig(num_ues=3, max_params=10**6, latency_profiles=profiles,
                                             max_latency_ms=lims), seed=0)
        except ValueError:  # even the smallest MLP is too slow for some UE
            continue
        found += 1
        w = wl.init_params()
        w[wl.net_dim:] = 3 * torch.randn(wl.dim - wl.net_dim, generator=g)
        arch = wl.architecture(wl.derive(w))
        for prof, lim in zip(profiles, lims, strict=True):
            assert _ms(wl.space, arch, prof) <= lim
        assert wl.search_result(w)["latency_ms_per_ue"] == pytest.approx([_ms(wl.space, arch, p) for p in profiles],
                                                                         abs=1e-5)
    assert found >= 2


def _all_genotypes(space):
    per_node = [[[[o1, i1], [o2, i2]] for i1, i2 in itertools.combinations(range(2 + j), 2)
                 for o1 in space.real_ops for o2 in space.real_ops] for j in range(space.nodes)]
    for choice in itertools.product(*per_node):
        yield {f"node{j}": pairs for j, pairs in enumerate(choice)}


@pytest.mark.slow
def test_gdas_latency_is_additive_and_derivation_is_the_brute_force_optimum() -> None:
    space = GdasWorkload(GdasConfig(num_ues=3, total_steps=20, nodes=2), seed=0).space  # 1 875 genotypes
    genotypes = list(_all_genotypes(space))
    budget = LatencyBudget(("t1-b1", "t1-b2-slowk3"), (1.0, 1.0))
    base, delta, _ = cell_latency_costs(space, budget)

    def additive(arch) -> np.ndarray:
        idx = [space.real_ops.index(op) for j in range(space.nodes) for op, _ in arch[f"node{j}"]]
        return base + delta[:, idx].sum(1)

    rng, g = np.random.default_rng(2), torch.Generator().manual_seed(2)
    for i in rng.choice(len(genotypes), 6, replace=False):  # the additive cost is the counted cost
        assert additive(genotypes[i]) == pytest.approx([_ms(space, genotypes[i], p) for p in budget.profiles],
                                                       rel=1e-9)
    costs = np.array([additive(a) for a in genotypes])
    for _ in range(5):
        lims = tuple(float(rng.uniform(*np.quantile(costs[:, p], [0.02, 0.9]))) for p in range(2))
        b = LatencyBudget(budget.profiles, lims)
        alpha = torch.randn(space.num_edges, len(space.ops), generator=g)
        logp = space.probs(alpha).log()
        score = [sum(float(logp[space.edge(j, i), space.ops.index(op)]) for j in range(space.nodes)
                     for op, i in a[f"node{j}"]) for a in genotypes]
        ok = (costs <= np.array(lims)).all(1)
        found = cell_derive_within(space, alpha, 2 * space.nodes, b)
        assert all(_ms(space, found, p) <= lim for p, lim in zip(b.profiles, lims, strict=True))  # counted
        k = genotypes.index(found)
        assert score[k] == pytest.approx(max(s for s, o in zip(score, ok, strict=True) if o), abs=1e-9)
        drawn = cell_random_within(space, g, 2 * space.nodes, b)
        assert all(_ms(space, drawn, p) <= lim for p, lim in zip(b.profiles, lims, strict=True))


@pytest.mark.slow
def test_dash_found_architecture_meets_every_ue() -> None:
    base = {"dataset": "digits", "channels": (4, 8), "total_steps": 20, "num_ues": 2}
    ref = build_workload(DashConfig(**base), seed=0)
    names = [d.name for d in ref.space.decisions]
    small = {n: {"kernel": min(k for k, _ in ref.space.pairs), "dilation": 1} for n in names}
    big = {n: {"kernel": max(k for k, _ in ref.space.pairs), "dilation": 1} for n in names}
    profiles = ["t1-b1", "t1-b2-slowk3"]
    rng, g, found = np.random.default_rng(3), torch.Generator().manual_seed(3), 0
    for _ in range(6):
        lims = [float(rng.uniform(*sorted([_ms(ref.space, small, p), _ms(ref.space, big, p)]))) for p in profiles]
        try:
            wl = build_workload(DashConfig(**base, max_latency_ms=lims, latency_profiles=profiles), 0)
        except ValidationError:
            continue
        found += 1
        w = wl.init_params()
        w[wl.theta_dim:] = 2 * torch.randn(wl.alpha_dim, generator=g)
        arch = wl.derive(w)
        assert _ms(wl.space, arch, "t1-b1") <= lims[0] and _ms(wl.space, arch, "t1-b2-slowk3") <= lims[1]
    assert found >= 2


@pytest.mark.slow
@pytest.mark.parametrize("workload", [
    {"name": "nas-gdas", "val_fraction": 0.3, "max_latency_ms": [0.9, 1.2, 1.5]},
    {"name": "nas-dash", "dataset": "digits", "channels": [4, 8], "max_latency_ms": 1.0},
    {"name": "nas-tabnas", "max_latency_ms": 1.0, "latency_profiles": ["t1-b4"]},
])
def test_federated_search_meets_every_ue_budget(tmp_path, workload: dict) -> None:
    import json

    from fedsim.config import apply_overrides, validate
    from fedsim.runner import run_experiment

    base = validate(apply_overrides({"workload": {"num_ues": 3, **workload}}, []))
    lat = base.workload.latency_budget
    cfg = validate(apply_overrides({"workload": {"num_ues": 3, **workload}}, [
        "engine.name='inline'", "output.plot=false", f"output.dir='{tmp_path}'", "rounds=2", "train.local_steps=2",
        "checkpoint.every=0", "workload.retrain_rounds=1"]))
    found = json.loads((run_experiment(cfg, quiet=True) / "architecture.json").read_text())
    per_ue = found.get("latency_ms_per_ue") or found["budget"]["latency_ms_per_ue"]
    assert all(t <= lim for t, lim in zip(per_ue, lat.limits, strict=True))
    assert found["retrain"]["status"] == "completed"
