"""nas-spider: masking, hysteresis pruning, budgeted growth, determinism and server-free agreement."""

from __future__ import annotations

import json
import statistics

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from channels.rng import torch_generator
from fedsim.config import apply_overrides, validate
from fedsim.config.loading import read_toml, resolve_experiment_path
from fedsim.runner import run_experiment
from fedsim.runtime.execute import execute
from fedsim.workloads import build_workload
from fedsim.workloads.nas.resources import count_params
from fedsim.workloads.nas.spider import SpiderConfig
from fedsim.workloads.nas.spider_evolve import (
    ALIVE,
    DORMANT,
    PRUNED,
    EvolveRule,
    decode,
    encode,
    evolve,
    grow,
    initial_control,
    prune_mask,
)
from fedsim.workloads.nas.spider_net import SpiderChild


def _wl(**kw):
    base = {"num_ues": 3, "batch_size": 16, "total_steps": 40}
    return SpiderConfig(**{**base, **kw}).build(0)


def _by_hand_params(c: int, convs: int, head_pool: int = 2) -> int:
    """Stem 1→C 3x3 (9C), one [C, C, 3, 3] kernel per alive conv op (9C²), head 10 x (C·pool²) + 10."""
    return 9 * c + 9 * c * c * convs + 10 * c * head_pool**2 + 10


def test_masking_keeps_the_size_and_masked_ops_add_exactly_zero() -> None:
    """One cell, one node with conv3x3(s1) on and skip(s1) alive but gated off, written out in plain
    torch as the conv alone; every other op's weights set to large random values and their gates
    arbitrary: logits bit-for-bit the hand network's, masked weights get an exactly zero gradient. With
    both gates off the node keeps its larger-gate op. Growth/pruning never change the vector's size."""
    wl = _wl(cells=1, nodes=1, init_arch={"cell0": {"node0": [["conv3x3", 1], ["skip", 1]]}})
    sp = wl.space
    w = wl.init_params()
    assert w.numel() == wl.dim == sp.layout.dim + sp.num_ops * (3 + wl.cfg.prune_window)
    theta, ctrl = wl.decoded(w)
    theta = theta.clone()
    masked = ~sp.weight_mask(ctrl.alive)
    assert int(masked.sum()) == 3 * 9 * 8 * 8  # the dil_conv kernel of edge 1 and both kernels of edge 0
    theta[masked] = 100 * torch.randn(int(masked.sum()), generator=torch.Generator().manual_seed(1))
    gates = torch.linspace(-0.05, 0.05, sp.num_ops)
    conv, skip = (int(k) for k in torch.nonzero(ctrl.alive))
    gates[conv], gates[skip] = 0.01, -0.01
    x, y = wl.train_batch(0, 0)
    v = sp.layout.views(theta)
    stem = F.group_norm(F.conv2d(x, v["stem"], padding=1), 1)
    node = F.group_norm(F.conv2d(F.relu(stem), v["cell0.edge1.conv3x3"], padding=1), 1)
    hand = F.linear(F.adaptive_avg_pool2d(F.relu(node), 2).flatten(1), v["head.w"], v["head.b"])
    th = theta.clone().requires_grad_(True)
    z = sp.forward(sp.layout.views(th), x, ctrl.alive, gates)
    assert torch.equal(z, hand)
    conv_only = ctrl.alive.clone()
    conv_only[skip] = False
    assert torch.equal(sp.forward(v, x, conv_only), hand)  # no gates: the alive mask alone
    (g,) = torch.autograd.grad(F.cross_entropy(z, y), th)
    assert torch.count_nonzero(g[masked]) == 0 and torch.count_nonzero(g[~masked]) > 0
    gates[conv], gates[skip] = -0.02, -0.01  # both off: the skip (larger gate) runs alone
    skip_only = F.linear(F.adaptive_avg_pool2d(F.relu(stem), 2).flatten(1), v["head.w"], v["head.b"])
    assert torch.equal(sp.forward(v, x, ctrl.alive, gates), skip_only)
    lr = lambda s: 0.2  # noqa: E731
    for r in range(4):
        w = wl.local_train(w, 0, 2 * r, 2, lr, {})
        assert w.shape == (wl.dim,)


def test_growth_score_is_the_gate_gradient_of_a_switched_off_op() -> None:
    """The probe's score −⟨∂L/∂node, op(input)⟩ equals minus the straight-through gradient of the op's
    gate when the op is alive but off (then the forward is the same network): two different computations."""
    wl = _wl()
    sp = wl.space
    theta, ctrl = wl.decoded(wl.init_params())
    x, y = wl.train_batch(1, 3)
    th = theta.clone().requires_grad_(True)
    record: list = []
    F.cross_entropy(sp.forward(sp.layout.views(th), x, ctrl.alive, ctrl.gates, record), y).backward()
    dormant = ctrl.state == DORMANT
    scores = sp.probe_scores(sp.layout.views(theta), record, dormant)
    gates = torch.where(ctrl.alive, ctrl.gates, torch.full_like(ctrl.gates, -0.01)).requires_grad_(True)
    full = torch.ones_like(ctrl.alive)
    theta_full = wl.space.layout.init(torch_generator(0, "init"))  # dormant weights: any real values
    theta_full[sp.weight_mask(ctrl.alive)] = theta[sp.weight_mask(ctrl.alive)]
    (gg,) = torch.autograd.grad(F.cross_entropy(sp.forward(sp.layout.views(theta_full), x, full, gates), y), gates)
    theta2 = theta.clone()
    theta2[~sp.weight_mask(ctrl.alive)] = theta_full[~sp.weight_mask(ctrl.alive)]
    scores = sp.probe_scores(sp.layout.views(theta2), record, dormant)
    torch.testing.assert_close(scores[dormant], -gg[dormant], rtol=1e-4, atol=1e-6)
    assert torch.count_nonzero(scores[~dormant]) == 0 and torch.count_nonzero(scores) > 0


def test_hysteresis_by_hand() -> None:
    """P = 8, prune below 0.25·8 = 2 observations on: hand-built windows (oldest first)."""
    rows = {
        "11111111": False, "11111101": False,  # on throughout / a brief flicker off
        "10101010": False, "00000011": False,  # flickering half the time / 2 on: not below 2
        "00000001": True, "00000000": True, "10000000": True,  # off for most of the window
    }
    hist = torch.tensor([[c == "1" for c in k] for k in rows])
    got = prune_mask(hist, torch.ones(len(rows), dtype=torch.bool), 0.25)
    assert got.tolist() == list(rows.values())
    assert not prune_mask(hist, torch.zeros(len(rows), dtype=torch.bool), 0.25).any()  # dormant: never


def test_hysteresis_through_the_rounds() -> None:
    """Feeding received gates round by round into evolve: an op whose gate is off for 2 rounds in a row
    survives; one that stays off is pruned exactly at the 7th off round (window 8 starts full: after t
    offs it holds 8 − t ones, and 8 − t < 2 first at t = 7); the other ops are untouched."""
    wl = _wl(prune_window=8, grow_every=1000)
    sp, rule = wl.space, EvolveRule(8, 0.25, 1000, 1, 0, 0.01, 0.05)
    w = wl.init_params()
    theta, raw = wl.split(w)
    k_flick, k_dead = [int(k) for k in torch.nonzero(decode(raw, sp.num_ops, 8, 0.05).alive)[:2]]
    pruned_at = None
    for r in range(1, 12):
        ctrl = decode(raw, sp.num_ops, 8, 0.05)
        ctrl.gates[k_flick] = -0.02 if r in (3, 4) else 0.02
        ctrl.gates[k_dead] = -0.02
        theta, ctrl, ev = evolve(sp, theta, encode(ctrl), rule, 0, r, wl.fits)
        if ev["pruned"]:
            assert ev["pruned"] == [k_dead] and pruned_at is None
            pruned_at = r
        raw = encode(ctrl)
    final = decode(raw, sp.num_ops, 8, 0.05)
    assert pruned_at == 7 and int(final.state[k_dead]) == PRUNED and int(final.state[k_flick]) == ALIVE
    assert int((final.state == ALIVE).sum()) == int(decode(wl.split(w)[1], sp.num_ops, 8, 0.05).alive.sum()) - 1


@pytest.mark.parametrize("trial", range(6))
def test_every_grown_architecture_fits_random_budgets(trial: int) -> None:
    """Random per-UE budgets and random growth scores: every architecture along 40 growth steps fits
    every UE's max_params and activation budget (hand formulas, and params = count_params of the child);
    growth stops only when no positive-score dormant op fits."""
    g = torch.Generator().manual_seed(100 + trial)
    c = int(torch.randint(2, 7, (1,), generator=g))
    init_params, convs_max = _by_hand_params(c, 6), 2 * 9 * 2
    params = [int(torch.randint(init_params, _by_hand_params(c, convs_max), (1,), generator=g)) for _ in range(3)]
    base_kib = 4 * c * 64 * (1 + 2 * 4) / 1024
    act = [base_kib + 4 * c * 64 * float(torch.randint(12, 60, (1,), generator=g)) / 1024 for _ in range(3)]
    # trials 0, 3: params only; 1, 4: activations only; 2, 5: both
    wl = _wl(channels=c, max_params=params if trial % 3 != 1 else None,
             max_activation_kib=act if trial % 3 != 0 else None)
    params = params if trial % 3 != 1 else [10**9]
    act = act if trial % 3 != 0 else [1e9]
    sp = wl.space
    ctrl = initial_control(sp.from_arch(wl.cfg.init_arch) if wl.cfg.init_arch else decode(
        wl.split(wl.init_params())[1], sp.num_ops, 5, 0.05).alive, 5, 0.01)
    for step in range(40):
        ctrl.scores = torch.randn(sp.num_ops, generator=g)
        grown = grow(ctrl, wl.fits, 2, torch_generator(trial, "t", step))
        alive = ctrl.alive
        convs = int((alive & sp.is_param).sum())
        p = _by_hand_params(c, convs)
        assert p == int(sp.params(alive)) == count_params(SpiderChild(sp, alive)) <= min(params)
        assert 4 * c * 64 * (9 + int(alive.sum())) == int(sp.activation_bytes(alive)) <= min(act) * 1024
        if len(grown) < 2:  # nothing else with a positive score fits
            for k in torch.nonzero((ctrl.state == DORMANT) & (ctrl.scores > 0)).flatten().tolist():
                trial_alive = alive.clone()
                trial_alive[k] = True
                assert not wl.fits(trial_alive)


def test_initial_architecture_over_budget_is_refused() -> None:
    with pytest.raises(ValidationError, match="initial architecture.*over the budget"):
        SpiderConfig(num_ues=2, max_params=[5000, _by_hand_params(8, 6) - 1])
    with pytest.raises(ValidationError, match="one per UE"):
        SpiderConfig(num_ues=3, max_params=[5000, 5000])


def test_growth_is_seeded_and_ties_follow_the_seed() -> None:
    """Equal scores: the grown op comes from the seeded permutation: the same seed and round give the
    same op, and over several seeds more than one op is chosen."""
    wl = _wl()
    sp, rule = wl.space, EvolveRule(5, 0.25, 1, 1, 100, 0.01, 0.05)
    theta, raw = wl.split(wl.init_params())
    ctrl = decode(raw, sp.num_ops, 5, 0.05)
    ctrl.scores = torch.ones(sp.num_ops)
    picks = []
    for seed in range(6):
        a = evolve(sp, theta, encode(ctrl), rule, seed, 1, wl.fits)
        b = evolve(sp, theta, encode(ctrl), rule, seed, 1, wl.fits)
        assert a[2] == b[2] and torch.equal(a[0], b[0]) and torch.equal(encode(a[1]), encode(b[1]))
        picks.append(a[2]["grown"][0])
    assert len(set(picks)) > 1


def test_ues_take_the_same_decisions_from_the_same_received_vector() -> None:
    """With lr = 0 a UE's round is its evolution alone: three UEs (different data) given the same
    received vector at a growth round return the same weights, gates, states and windows (only the
    growth scores, measured on their own data, differ)."""
    wl = _wl(grow_every=1, grow_until=1.0, prune_window=2)
    w = wl.init_params()
    w[-wl.space.num_ops :] = torch.rand(wl.space.num_ops, generator=torch.Generator().manual_seed(0))  # scores
    outs = torch.stack([wl.local_train(w, k, 2, 2, lambda s: 0.0, {}) for k in range(3)])
    n = wl.space.num_ops
    same = wl.theta_dim + n * (2 + wl.cfg.prune_window)  # θ, gates, states, windows
    assert torch.equal(outs[0, :same], outs[1, :same]) and torch.equal(outs[0, :same], outs[2, :same])
    grown = wl.decoded(outs[0])[1].alive & ~wl.decoded(w)[1].alive
    assert bool(grown.any()) and not torch.equal(outs[0, same:], outs[1, same:])


def _serverfree(tmp_path, seed: int, noisy: bool = False):
    channel = ["channel.interference={name='sas', alpha=1.5}", "channel.gsnr_db=60.0"] if noisy \
        else ["channel.interference='none'"]
    cfg = validate(apply_overrides({"workload": {"name": "nas-spider", "num_ues": 3, "batch_size": 16,
                                                 "grow_every": 1, "grow_until": 1.0, "prune_window": 2,
                                                 "retrain_rounds": 0}}, [
        "engine.name='inline'", "output.plot=false", f"output.dir='{tmp_path}'", "rounds=4", "checkpoint.every=0",
        "train.local_steps=2", "train.lr.eta=0.2", f"seed={seed}", "eval_every=4",
        "strategy.name='serverfree-relay'", "strategy.transmit='update'", *channel]))
    return execute(cfg, quiet=True)


def test_serverfree_ues_take_identical_decisions_and_runs_repeat(tmp_path) -> None:
    """Server-free (relay, no interference), 3 UEs, growth every round: every UE's held vector decodes to
    the same states, windows and gates after 4 rounds, at least one op grew, and a second run with the
    same seed gives the same vectors bit for bit."""
    a, b = _serverfree(tmp_path / "a", 3), _serverfree(tmp_path / "b", 3)
    wl = a.experiment.cpu_workload
    models = a.final.models.cpu()
    assert a.final.holders is not None and models.shape == (3, wl.dim)
    ctrls = [wl.decoded(m)[1] for m in models]
    for c in ctrls[1:]:
        assert torch.equal(c.state, ctrls[0].state) and torch.equal(c.history, ctrls[0].history)
        torch.testing.assert_close(c.gates, ctrls[0].gates, rtol=0, atol=1e-6)
    init = wl.decoded(wl.init_params())[1]
    assert int((ctrls[0].state != DORMANT).sum()) > int(init.alive.sum())
    assert torch.equal(models, b.final.models.cpu())


def test_shipped_experiment_tiny(tmp_path) -> None:
    """The shipped nas_spider (its analog arm, 2 rounds, 3 UEs): the found architecture meets the
    budget and its parameters equal the hand count."""
    data = read_toml(resolve_experiment_path("nas_spider"))
    for strategy in ("server-ota",):
        cfg = validate(apply_overrides(data, [
            "rounds=2", "sweep={}", "eval_every=1", "train.local_steps=2", "workload.num_ues=3",
            "workload.retrain_rounds=1", f"strategy.name={strategy!r}", "engine.name='inline'",
            "output.plot=false", f"output.dir={str(tmp_path)!r}", "checkpoint.every=0"]))
        run_dir = run_experiment(cfg, quiet=True)
        found = json.loads((run_dir / "architecture.json").read_text())
        convs = sum(op in ("conv3x3", "dil_conv3x3") for cell in found["architecture"].values()
                    for pairs in cell.values() for op, _ in pairs)
        assert found["resources"]["params"] == _by_hand_params(8, convs) <= 5000
        assert found["budget"]["met"] and found["retrain"]["status"] == "completed"


def test_serverfree_noisy_channel_decodes_the_same_architecture_on_every_ue(tmp_path) -> None:
    """Server-free under alpha = 1.5 interference (60 dB): the UEs' vectors differ (channel noise on
    every entry), but the re-quantised states and windows agree on every UE."""
    run = _serverfree(tmp_path, 5, noisy=True)
    wl, models = run.experiment.cpu_workload, run.final.models.cpu()
    assert not torch.equal(models[0], models[1])
    ctrls = [wl.decoded(m)[1] for m in models]
    for c in ctrls[1:]:
        assert torch.equal(c.state, ctrls[0].state) and torch.equal(c.history, ctrls[0].history)


@pytest.mark.slow
def test_found_architecture_against_random_of_the_same_size(tmp_path) -> None:
    """Digits, 10 UEs, FedAvg, 30 search rounds x 10 steps + 30 retraining rounds, max_params = 5000,
    seeds 0-2: the found architecture's retrained accuracy (median >= 0.96, every one within budget)
    and, printed, random GDAS-style cells with the same number of conv ops (the same parameter
    count), median of 3 draws per seed.

    Measured (2026-12-07, about 25 min on 2 busy cores): found 0.944 / 0.969 / 0.967 (median 0.967,
    3 858 params each); random same size 0.939 / 0.975 / 0.972 (medians of 3 draws; median 0.972). The
    search does NOT beat random cells of its size here, so that is printed, not asserted."""
    found, rand = [], []
    common = ["engine.name='inline'", "output.plot=false", f"output.dir='{tmp_path}'", "rounds=30",
              "checkpoint.every=0", "train.local_steps=10", "train.lr.eta=0.2", "eval_every=5"]
    for seed in (0, 1, 2):
        cfg = validate(apply_overrides({"workload": {"name": "nas-spider", "max_params": 5000}},
                                       [*common, f"seed={seed}"]))
        s = json.loads((run_experiment(cfg, quiet=True) / "summary.json").read_text())["search"]
        assert s["budget"]["met"] and s["resources"]["params"] <= 5000
        found.append(s["retrain"]["final"]["accuracy"])
        wl = build_workload(cfg.workload, seed)
        g, accs = torch_generator(seed, "random-like"), []
        for _ in range(3):
            arch = wl.random_architecture(g, params=s["resources"]["params"])
            rc = validate(apply_overrides({"workload": wl.retrain_config(arch)}, [*common, f"seed={seed}"]))
            accs.append(json.loads((run_experiment(rc, quiet=True) / "summary.json").read_text())["final"]["accuracy"])
        rand.append(statistics.median(accs))
    print("found", found, "random same size (median of 3)", rand)
    assert statistics.median(found) >= 0.96


def test_latency_budget_holds_on_every_ues_profile() -> None:
    """Per-UE max_latency_ms on per-UE device profiles (UE n -> profiles[n % 2]), random growth scores:
    every grown network's cost-model latency on each UE's own profile (predict_ms, by hand per UE) is
    within that UE's limit, and a positive-score dormant op that would keep every UE within its limit
    is accepted by the budget check."""
    from fedsim.workloads.latency import PROFILES, op_summary, predict_ms

    profiles = [PROFILES[0].name, PROFILES[3].name]
    wl0 = _wl()
    init = decode(wl0.split(wl0.init_params())[1], wl0.space.num_ops, 5, 0.05).alive
    example = wl0.space.cs.example_input()
    start = [predict_ms(op_summary(SpiderChild(wl0.space, init), example), p) for p in profiles]
    limits = [1.6 * start[0], 1.3 * start[1], 2.0 * start[0]]  # UE 0, 1, 2 -> profiles 0, 1, 0
    wl = _wl(max_latency_ms=limits, latency_profiles=profiles)
    sp, g = wl.space, torch.Generator().manual_seed(7)
    ctrl = initial_control(init, 5, 0.01)
    for step in range(6):
        ctrl.scores = torch.randn(sp.num_ops, generator=g)
        grow(ctrl, wl.fits, 4, torch_generator(0, "t", step))
        summary = op_summary(SpiderChild(sp, ctrl.alive), example)
        for n, lim in enumerate(limits):
            assert predict_ms(summary, profiles[n % 2]) <= lim
    assert int(ctrl.alive.sum()) > int(init.sum())  # something grew
    for k in torch.nonzero(ctrl.state == DORMANT).flatten().tolist()[:4]:
        trial = ctrl.alive.clone()
        trial[k] = True
        s = op_summary(SpiderChild(sp, trial), example)
        assert wl.fits(trial) == all(predict_ms(s, profiles[n % 2]) <= lim for n, lim in enumerate(limits))
