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
from fedsim.workloads.nas.budget import cell_conv_edge_budget, cell_derive_within, cell_genotype_with
from fedsim.workloads.nas.dash import DashConfig
from fedsim.workloads.nas.gdas import GdasConfig, GdasWorkload
from fedsim.workloads.nas.resources import measure
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


def test_gdas_found_genotype_meets_every_ue() -> None:
    space = GdasWorkload(GdasConfig(num_ues=3, total_steps=20), seed=0).space
    lat = [_ms(space, cell_genotype_with(space, k, "conv3x3", "skip"), "t1-b1") for k in (0, 6)]
    rng, g = np.random.default_rng(2), torch.Generator().manual_seed(2)
    for _ in range(4):
        budget = LatencyBudget(("t1-b1", "t1-b4"), (float(rng.uniform(*lat)), float(rng.uniform(lat[0], 4 * lat[1]))))
        try:
            k = cell_conv_edge_budget(space, None, None, lambda a: measure(space.child(a), space.example_input(),
                                                                           latency=False, ops=True), budget)
        except ValueError:
            continue
        for _ in range(3):
            arch = cell_derive_within(space, torch.randn(space.num_edges, len(space.ops), generator=g), k)
            assert all(_ms(space, arch, p) <= lim for p, lim in zip(budget.profiles, budget.limits, strict=True))


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
