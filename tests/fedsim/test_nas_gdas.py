"""``nas-gdas``: Gumbel single-path sampling, the cell space, genotypes and the workload."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch
from pydantic import ValidationError

from channels.rng import torch_generator
from fedsim.config import apply_overrides, validate
from fedsim.runner import run_experiment
from fedsim.workloads import build_workload, parse_workload_config
from fedsim.workloads.nas import cells
from fedsim.workloads.nas.gdas import GdasConfig, GdasWorkload
from fedsim.workloads.nas.gumbel import gumbel_softmax

OPS = cells.OP_NAMES  # conv3x3, dil_conv3x3, max_pool3x3, avg_pool3x3, skip, none
CONV_ARCH = {"node0": [["conv3x3", 0], ["conv3x3", 1]], "node1": [["conv3x3", 1], ["dil_conv3x3", 2]],
             "node2": [["skip", 2], ["conv3x3", 3]]}


pytestmark = pytest.mark.usefixtures("one_thread")


def _wl(**kw) -> GdasWorkload:
    return GdasWorkload(GdasConfig(num_ues=3, total_steps=20, **kw), seed=0)


# ----------------------------------------------------------------------------- Gumbel-softmax


@pytest.mark.parametrize("tau", [0.1, 1.0, 10.0])
def test_straight_through_forward_is_one_hot_and_backward_is_soft(tau: float) -> None:
    alpha = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    v = torch.randn(5, 6, generator=torch.Generator().manual_seed(2))
    a_hard, a_soft = alpha.clone().requires_grad_(True), alpha.clone().requires_grad_(True)
    hard, idx = gumbel_softmax(a_hard, tau, torch.Generator().manual_seed(3), hard=True)
    soft, idx_soft = gumbel_softmax(a_soft, tau, torch.Generator().manual_seed(3), hard=False)
    assert torch.equal(idx, idx_soft) and torch.equal(idx, soft.argmax(1))
    assert torch.equal(hard.detach(), torch.nn.functional.one_hot(idx, 6).float())  # exactly one-hot
    (g_hard,) = torch.autograd.grad((hard * v).sum(), a_hard)
    (g_soft,) = torch.autograd.grad((soft * v).sum(), a_soft)
    assert g_hard.abs().sum() > 0
    torch.testing.assert_close(g_hard, g_soft, rtol=0, atol=1e-7)


@pytest.mark.parametrize("tau", [0.1, 1.0, 10.0])
def test_sampled_op_frequencies_follow_softmax_alpha_at_any_temperature(tau: float) -> None:
    alpha = torch.tensor([1.5, 0.5, 0.0, -1.0, 0.2, -0.5])
    n = 40_000
    _, idx = gumbel_softmax(alpha.expand(n, 6), tau, torch_generator(0, "gumbel-test", int(10 * tau)), hard=True)
    freq = torch.bincount(idx, minlength=6).double() / n
    p = torch.softmax(alpha.double(), 0)
    sigma = (p * (1 - p) / n).sqrt()
    assert ((freq - p).abs() < 4 * sigma).all(), (freq, p)


# ----------------------------------------------------------------------------- single path


def test_only_the_sampled_op_of_each_edge_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    wl = _wl()
    calls: dict[str, int] = {}

    def counting(name, fn):
        def f(x, k):
            calls[name] = calls.get(name, 0) + 1
            return fn(x, k)
        return f

    for name, fn in list(cells.OPS.items()):
        monkeypatch.setitem(cells.OPS, name, counting(name, fn))
    w = wl.init_params()
    theta, alpha = wl.split(w)
    alpha = alpha.clone().requires_grad_(True)
    path = wl.sample_path(alpha, torch_generator(0, "gumbel", 3, 0), 3)
    th = theta.clone().requires_grad_(True)
    x, y = wl.train_batch(0, 3)
    g_theta, g_alpha = torch.autograd.grad(wl.loss(th, x, y, path), (th, alpha))
    chosen = [op for op, _ in path]
    expected = {op: wl.cfg.cells * chosen.count(op) for op in set(chosen) if op != "none"}
    assert calls == expected  # one call per edge per cell, only the sampled op; "none" never runs
    views = wl.super_layout.views(g_theta)
    for c in range(wl.cfg.cells):
        for e, op in enumerate(chosen):
            for p in cells.PARAM_OPS:
                grad = views[f"cell{c}.edge{e}.{p}"]
                assert (grad.abs().sum() > 0) == (p == op), (c, e, p, op)
    for e, op in enumerate(chosen):  # α learns through hard[idx] of the edges whose op ran
        assert (g_alpha[e].abs().sum() > 0) == (op != "none"), (e, op)


# ----------------------------------------------------------------------------- genotypes


def test_darts_genotype_of_hand_set_alpha() -> None:
    wl = _wl()
    sp = wl.space
    alpha = torch.zeros(sp.num_edges, 6)
    # node0 (edges 0, 1): both inputs kept; best non-none op each, even where 'none' dominates
    alpha[0] = torch.tensor([0.0, 3.0, 0.0, 0.0, 0.0, 9.0])  # none largest, dil_conv best real op
    alpha[1] = torch.tensor([2.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # conv3x3
    # node1 (edges 2, 3, 4): strongest are input 2 (skip) and input 0 (avg_pool)
    alpha[2] = torch.tensor([0.0, 0.0, 0.0, 4.0, 0.0, 0.0])
    alpha[3] = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    alpha[4] = torch.tensor([0.0, 0.0, 0.0, 0.0, 5.0, 0.0])
    # node2 (edges 5..8): inputs 3 (max_pool) and 1 (conv3x3); input 0's 'none' is ignored
    alpha[5] = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 20.0])
    alpha[6] = torch.tensor([3.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    alpha[7] = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    alpha[8] = torch.tensor([0.0, 0.0, 3.5, 0.0, 0.0, 0.0])
    assert sp.derive(alpha.flatten()) == {
        "node0": [["dil_conv3x3", 0], ["conv3x3", 1]],
        "node1": [["avg_pool3x3", 0], ["skip", 2]],
        "node2": [["conv3x3", 1], ["max_pool3x3", 3]],
    }


@pytest.mark.parametrize(("arch", "match"), [
    ({**CONV_ARCH, "node7": [["skip", 0], ["skip", 1]]}, r"unknown key.*node7.*allowed keys.*node0"),
    ({k: v for k, v in CONV_ARCH.items() if k != "node2"}, r"missing 'node2'"),
    ({**CONV_ARCH, "node1": [["conv5x5", 0], ["skip", 1]]}, r"node1.*'conv5x5'.*allowed ops.*conv3x3.*skip"),
    ({**CONV_ARCH, "node1": [["none", 0], ["skip", 1]]}, r"'none'.*allowed ops"),
    ({**CONV_ARCH, "node0": [["skip", 0], ["skip", 2]]}, r"node0.*input 2.*allowed inputs: \[0, 1\]"),
    ({**CONV_ARCH, "node2": [["skip", 3], ["conv3x3", 3]]}, r"node2.*input 3 twice"),
    ({**CONV_ARCH, "node2": [["skip", 3]]}, r"two \[op, input\] pairs"),
])
def test_fixed_arch_validation_names_key_and_allowed_values(arch: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        GdasConfig(arch=arch)


def test_arch_ops_must_be_in_the_configured_ops() -> None:
    with pytest.raises(ValidationError, match=r"'dil_conv3x3'.*allowed ops: \['conv3x3', 'skip'\]"):
        GdasConfig(ops=("conv3x3", "skip", "none"), arch=CONV_ARCH)
    with pytest.raises(ValidationError, match="val_fraction > 0"):
        GdasConfig(val_fraction=0.0)
    GdasConfig(val_fraction=0.0, arch=CONV_ARCH)  # retraining needs no validation split


def test_random_architectures_are_valid_uniform_and_size_matched() -> None:
    sp = _wl().space
    g = torch.Generator().manual_seed(0)
    archs = [sp.random_architecture(g) for _ in range(600)]
    for a in archs:
        assert sp.validate(a) == a
    ops = [op for a in archs for pairs in a.values() for op, _ in pairs]
    for op in sp.real_ops:  # uniform over the 5 real ops: 3600 draws, p = 0.2
        assert abs(ops.count(op) / len(ops) - 0.2) < 4 * math.sqrt(0.2 * 0.8 / len(ops))
    node2_inputs = [tuple(i for _, i in a["node2"]) for a in archs]
    assert len(set(node2_inputs)) == 6  # all C(4, 2) input pairs occur
    target = sp.layout(CONV_ARCH).dim
    a = sp.random_architecture_like(target, torch.Generator().manual_seed(1), tol=0.3)
    assert abs(sp.layout(a).dim - target) <= 0.3 * target
    assert sp.random_architecture(torch.Generator().manual_seed(5)) == sp.random_architecture(
        torch.Generator().manual_seed(5))


# ----------------------------------------------------------------------------- workload


def test_dimensions_split_and_child_weights() -> None:
    wl = _wl()
    c, e = 8, wl.space.num_edges
    conv = c * c * 9
    assert e == 9
    assert wl.theta_dim == c * 9 + 2 * e * 2 * conv + 10 * c * 4 + 10
    assert wl.alpha_dim == e * 6 and wl.dim == wl.theta_dim + wl.alpha_dim
    w = wl.init_params()
    theta, alpha = wl.split(w)
    assert alpha.shape == (e, 6) and alpha.abs().max() < 1e-2  # GDAS init 1e-3·N(0, 1)
    assert theta.data_ptr() == w.data_ptr() and alpha.data_ptr() == w[wl.theta_dim:].data_ptr()
    fixed = GdasWorkload(GdasConfig(num_ues=3, arch=CONV_ARCH), seed=0)
    assert fixed.dim == fixed.theta_dim == c * 9 + 2 * 5 * conv + 10 * c * 4 + 10  # 5 conv edges per cell
    w_child = fixed.init_params()
    assert torch.equal(w_child, wl.child_weights(theta, CONV_ARCH))  # the supernet init's entries
    views = fixed.layout.views(w_child)
    assert torch.equal(views["cell1.edge8.conv3x3"], wl.super_layout.views(theta)["cell1.edge8.conv3x3"])
    # the child network equals the supernet along the genotype's path
    x, y = wl.train_batch(0, 0)
    torch.testing.assert_close(fixed.loss(w_child, x, y, fixed._fixed_path),
                               wl.loss(theta, x, y, wl.space.arch_path(CONV_ARCH)))


def test_local_train_is_deterministic_and_learns_alpha() -> None:
    wl = _wl()
    w = wl.init_params()
    lr = lambda s: 0.1  # noqa: E731
    st1, st2, st3 = {}, {}, {}
    a = wl.local_train(w, 1, 4, 3, lr, st1)
    b = wl.local_train(w, 1, 4, 3, lr, st2)
    c = wl.local_train(w, 2, 4, 3, lr, st3)
    assert torch.equal(a, b) and all(torch.equal(st1[k], st2[k]) for k in st1)
    assert not torch.equal(a, c)
    assert set(st1) == {"gdas.m", "gdas.v", "gdas.t"} and float(st1["gdas.t"]) == 3
    assert not torch.equal(wl.split(a)[1], wl.split(w)[1])  # α moved (Adam, |step| <= arch_lr)
    assert (wl.split(a)[1] - wl.split(w)[1]).abs().max() <= 3 * wl.cfg.arch_lr * 1.01
    assert not torch.equal(wl.split(a)[0], wl.split(w)[0])
    again = wl.local_train(a, 1, 7, 2, lr, st1)  # moments carry over
    assert float(st1["gdas.t"]) == 5 and again.shape == w.shape
    other_seed = GdasWorkload(GdasConfig(num_ues=3, total_steps=20), seed=1)
    assert not torch.equal(other_seed.local_train(w, 1, 4, 3, lr, {}), a)


def test_all_none_path_gives_alpha_a_zero_gradient_instead_of_crashing() -> None:
    """A path whose every edge is ``none`` makes the loss independent of α (it once raised in
    autograd); α then moves by its weight decay only, through Adam."""
    wl = _wl(ops=("none", "skip"), arch_weight_decay=0.0, tau_max=0.1)
    w = wl.init_params()
    wl.split(w)[1][:, 0] = 60.0  # "none" on every edge, with certainty
    out = wl.local_train(w, 0, 0, 2, lambda s: 0.1, {})
    assert torch.equal(wl.split(out)[1], wl.split(w)[1])  # zero gradient, no decay: α unchanged
    assert not torch.equal(wl.split(out)[0], wl.split(w)[0])  # the head bias still learns


def test_random_strategy_freezes_alpha_and_picks_the_best_shared_weight_candidate() -> None:
    wl = _wl(search_strategy="random", random_candidates=4)
    w = wl.init_params()
    st: dict[str, torch.Tensor] = {}
    out = wl.local_train(w, 0, 0, 3, lambda s: 0.1, st)
    assert torch.equal(wl.split(out)[1], wl.split(w)[1]) and st == {}
    res = wl.search_result(out)
    scores = res["candidate_val_accuracy"]
    arch = res["architecture"]
    assert len(scores) == 4 and wl.space.validate(arch) == arch
    # independent score of the pick: the standalone child network (its own layout, only the genotype's
    # edges) with the supernet's shared weights, on every UE's validation split pooled
    xs, ys = zip(*(wl.data.ue_validation_data(n) for n in range(3)), strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    child = GdasWorkload(GdasConfig(num_ues=3, arch=arch), seed=0)
    with torch.no_grad():
        logits = child.space.forward(child.layout.views(wl.child_weights(wl.split(out)[0], arch)), x,
                                     child._fixed_path)
    acc = float((logits.argmax(1) == y).double().mean())
    assert len(set(scores)) > 1  # the candidates are told apart after 3 steps
    assert acc == pytest.approx(max(scores), abs=1e-6)  # the best-scoring candidate is the one returned
    for sc in scores:  # accuracies on len(y) examples
        assert abs(sc * len(y) - round(sc * len(y))) < 1e-3


def test_search_result_and_retrain_config_follow_the_contract() -> None:
    wl = _wl()
    w = wl.init_params()
    w = wl.local_train(w, 0, 0, 2, lambda s: 0.1, {})
    res = wl.search_result(w)
    assert json.loads(json.dumps(res)) == res
    arch = res["architecture"]
    assert arch == wl.space.derive(wl.split(w)[1])
    r = res["resources"]
    assert r["params"] == wl.space.layout(arch).dim and r["flops"] > 0 and r["latency_ms"] > 0
    assert set(res["op_probs"]["edge0"]) == set(OPS)
    assert abs(sum(res["op_probs"]["edge4"].values()) - 1) < 1e-5
    rc = wl.retrain_config(arch)
    assert "total_steps" not in rc and rc["retrain_rounds"] == 0 and rc["arch"] == arch
    assert rc["val_fraction"] == 0.0 and rc["num_ues"] == 3 and rc["dataset"] == "digits"
    child = build_workload(parse_workload_config(rc), 0)
    assert not child.custom_local_train and child.dim == r["params"]
    assert child.num_examples(0) > wl.num_examples(0)  # trains on its whole partition
    m = child.evaluate(child.init_params())
    assert {"loss", "accuracy", "train_loss", "arch_params"} <= set(m)
    ev = wl.evaluate(w)
    assert {"loss", "accuracy", "genotype_accuracy", "alpha_entropy", "alpha_max_prob", "arch_params"} <= set(ev)
    assert 0 < ev["alpha_entropy"] <= math.log(6) + 1e-9


def _params_by_hand(genotype: dict, channels: int, cells: int) -> int:
    """cells.py's network by hand: stem 1 -> C 3x3 (9C), per cell a C -> C 3x3 kernel (9C²) for every kept
    conv/dil_conv edge, head on the 2x2-pooled C channels (4C·10 + 10)."""
    convs = sum(op in ("conv3x3", "dil_conv3x3") for pairs in genotype.values() for op, _ in pairs)
    return 9 * channels + cells * convs * 9 * channels**2 + 40 * channels + 10


def _rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("overrides", [
    ["strategy.name='server-digital'"],
    ["strategy.name='serverfree-relay'"],
    ["strategy.name='server-ota'", "channel.interference='gaussian'", "channel.scale=0.01"],
])
def test_runs_under_every_strategy_then_retrains(tmp_path, overrides: list[str]) -> None:
    cfg = validate(apply_overrides({}, [
        "engine.name='inline'", "output.plot=false", f"output.dir='{tmp_path}'", "rounds=2",
        "checkpoint.every=0", "train.local_steps=2",
        "workload={name='nas-gdas', num_ues=3, cells=1, retrain_rounds=1}", *overrides]))
    assert cfg.workload.total_steps == 4
    run_dir = run_experiment(cfg, quiet=True)
    rows = _rows(run_dir)
    assert all(math.isfinite(r["loss"]) for r in rows if "loss" in r)
    wl = build_workload(cfg.workload, cfg.seed)
    assert rows[0]["loss"] == pytest.approx(wl.evaluate(wl.init_params())["loss"], rel=1e-6)  # round 0 = init
    for r in rows[1:]:
        assert 0.0 < r["alpha_entropy"] <= math.log(6) + 1e-9 and 1 / 6 - 1e-9 <= r["alpha_max_prob"] <= 1.0
    summary = json.loads((run_dir / "summary.json").read_text())
    found = json.loads((run_dir / "architecture.json").read_text())
    arch = found["architecture"]
    GdasConfig(arch=arch, cells=1)  # a valid genotype
    assert found["resources"]["params"] == _params_by_hand(arch, 8, 1)
    for probs in found["op_probs"].values():  # softmax(α) per edge
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5) and min(probs.values()) > 0
    re = summary["search"]["retrain"]
    assert re["status"] == "completed" and re["rounds"] == 1
    retrain = _rows(run_dir / re["run_dir"])
    assert [r["round"] for r in retrain] == [0, 1]
    assert retrain[-1]["arch_params"] == _params_by_hand(arch, 8, 1)  # the retrained child is the found one
    assert retrain[-1]["accuracy"] == re["final"]["accuracy"]


def test_a_budget_admitting_one_genotype_returns_exactly_it(tmp_path) -> None:
    """One node fed by s0 and s1, ops {conv3x3, skip, none}: 4 genotypes, and a budget of
    9C + 40C + 10 = 402 weights (C = 8, by hand) admits only the conv-free one, skip from both inputs."""
    budget = 9 * 8 + 40 * 8 + 10
    cfg = validate(apply_overrides({}, [
        "engine.name='inline'", "output.plot=false", f"output.dir='{tmp_path}'", "rounds=2", "checkpoint.every=0",
        "train.local_steps=2",
        f"workload={{name='nas-gdas', num_ues=3, cells=1, nodes=1, ops=['conv3x3', 'skip', 'none'], "
        f"max_params={budget}, retrain_rounds=1}}"]))
    run_dir = run_experiment(cfg, quiet=True)
    found = json.loads((run_dir / "architecture.json").read_text())
    assert found["architecture"] == {"node0": [["skip", 0], ["skip", 1]]}
    assert found["resources"]["params"] == budget == _params_by_hand(found["architecture"], 8, 1)
    assert found["budget"]["met"] is True


# ----------------------------------------------------------------------------- end to end


def _run(tmp_path, workload: dict, seed: int, rounds: int):
    cfg = validate(apply_overrides({"workload": workload}, [
        "engine.name='inline'", "output.plot=false", f"output.dir='{tmp_path}'", f"rounds={rounds}",
        "checkpoint.every=0", "train.local_steps=10", "train.lr.eta=0.2", f"seed={seed}", "eval_every=5"]))
    run_dir = run_experiment(cfg, quiet=True)
    return cfg, json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
def test_searched_cell_beats_random_cells_of_similar_size(tmp_path) -> None:
    """Federated GDAS (10 UEs, 30 rounds × 10 steps, SGD 0.2) + retraining from scratch for 30 rounds
    vs random genotypes within ±30 % of the searched child's parameter count, retrained the same
    way (equal rounds); test accuracy, median over seeds 0, 1, 2. One random cell per seed is a
    noisy yardstick (its accuracy spans 4-5 points), so each seed's random accuracy is the median
    of 3 draws; the searched cell must beat it on the median of the seeds. Also checks it beats a
    uniformly random cell (any size).

    Measured (about 6 min on 2 cores): searched 0.975 / 0.975 / 0.964 (median 0.975); size-matched
    random, median of 3 draws, 0.964 / 0.975 / 0.961 (median 0.964); uniform random 0.914 / 0.978 /
    0.936. In a separate 6 draws per seed (another stream) the searched cell won 14 of 18 pairs:
    all 6 on seeds 0 and 2, 2 of 6 on seed 1, where random cells reached up to 0.983."""
    searched, like, uniform = [], [], []
    for seed in (0, 1, 2):
        cfg, s = _run(tmp_path, {"name": "nas-gdas"}, seed, 30)
        searched.append(s["search"]["retrain"]["final"]["accuracy"])
        wl = build_workload(cfg.workload, seed)
        params, g = s["search"]["resources"]["params"], torch_generator(seed, "random-like")
        draws = [wl.random_architecture(g, params=params, tol=0.3) for _ in range(3)]
        like.append(statistics.median(_run(tmp_path, wl.retrain_config(a), seed, 30)[1]["final"]["accuracy"]
                                      for a in draws))
        arch = wl.random_architecture(torch_generator(seed, "random-uniform"))
        uniform.append(_run(tmp_path, wl.retrain_config(arch), seed, 30)[1]["final"]["accuracy"])
    print("searched", searched, "size-matched random (median of 3)", like, "uniform random", uniform)
    assert statistics.median(searched) > statistics.median(like) + 0.005, (searched, like)
    assert statistics.median(searched) > statistics.median(uniform) + 0.01, (searched, uniform)
