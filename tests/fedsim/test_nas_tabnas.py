"""nas-tabnas: the TabNAS controller maths (rejection sampling, P̂(V), REINFORCE step) and the
federated workload (feasible children only, weight sharing, distributive controller step)."""

from __future__ import annotations

import json
import math

import pydantic
import pytest
import torch

from channels.rng import torch_generator
from fedsim.workloads import parse_workload_config
from fedsim.workloads.nas import controller as ctl
from fedsim.workloads.nas.tabnas import TabNasConfig, TabNasWorkload

LR = 0.05


pytestmark = pytest.mark.usefixtures("one_thread")


def small(seed: int = 0, **kw) -> TabNasWorkload:
    """3 UEs, 2 hidden layers of width 4/8/16 (9 archs; T0 = 700 keeps 5 feasible)."""
    base = dict(num_ues=3, max_samples_per_ue=120, hidden_layers=2, widths=(4, 8, 16), max_params=700,
                total_steps=100, warmup_fraction=0.0, batch_size=16, controller_lr=1.0)
    return TabNasWorkload(TabNasConfig(**{**base, **kw}), seed=seed)


def table_space(mask: torch.Tensor):
    """Feasibility of a 2-layer space from a ``[C, C]`` table."""
    return lambda z: mask[z[..., 0], z[..., 1]]


# -- controller maths ------------------------------------------------------------------------
def test_rejection_sampling_draws_from_the_conditional_policy() -> None:
    theta = torch.tensor([[2.0, 0.0, -1.0, 1.0], [0.5, 1.5, 0.0, -0.5]])
    mask = torch.tensor([[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 1]], dtype=torch.bool)  # tight V
    feasible = table_space(mask)
    g = torch_generator(0, "test-rejection")
    draws = torch.stack([ctl.rejection_sample(theta, feasible, g)[0] for _ in range(3000)])
    assert bool(feasible(draws).all())
    space = ctl.enumerate_space(2, 4)
    pi = torch.exp(ctl.log_prob(theta, space)) * feasible(space)
    cond = pi / pi.sum()  # π(y | V)
    freq = torch.bincount(draws[:, 0] * 4 + draws[:, 1], minlength=16).double() / len(draws)
    se = (cond * (1 - cond) / len(draws)).sqrt()
    assert bool(((freq - cond.double()).abs() <= 4.5 * se + 1e-9).all()), (freq, cond)


def test_rejection_sampling_raises_when_the_feasible_set_is_empty() -> None:
    never = lambda z: torch.zeros(len(z), dtype=torch.bool)  # noqa: E731
    with pytest.raises(RuntimeError, match="no feasible architecture in 500 draws"):
        ctl.rejection_sample(torch.zeros(2, 3), never, torch_generator(0, "x"), max_draws=500)


def test_mc_feasible_mass_and_its_gradient_are_unbiased() -> None:
    L, C, M, N = 3, 3, 20000, 4
    theta = torch.tensor([[1.0, -0.5, 0.2], [0.0, 0.8, -1.0], [0.3, 0.3, -0.6]], dtype=torch.float64)
    space = ctl.enumerate_space(L, C)  # lexicographic: row i has index (z * [9, 3, 1]).sum()
    ok_all = space.sum(1) <= 3  # a "budget" on the summed indices: 17 of 27 feasible
    feasible = lambda z: ok_all[(z * torch.tensor([C * C, C, 1])).sum(-1)]  # noqa: E731
    assert bool((feasible(space) == ok_all).all()) and int(ok_all.sum()) == 17

    th_exact = theta.clone().requires_grad_(True)
    p_exact = ctl.feasible_mass(th_exact, space, ok_all)
    (g_exact,) = torch.autograd.grad(p_exact, th_exact)

    z = ctl.sample(theta, M * N, torch_generator(0, "test-mc")).view(M, N, L)
    ok = feasible(z)
    th = theta.clone().requires_grad_(True)
    p_hat = ctl.mc_feasible_mass(th, z, ok)  # [M] independent estimates
    (g_hat,) = torch.autograd.grad(p_hat.mean(), th)
    se = p_hat.detach().std() / M**0.5
    assert abs(float(p_hat.detach().mean()) - p_exact.item()) < 4 * float(se)
    # per-sample gradient 1[z∈V] ∇log π(z) = 1[z∈V] (onehot(z) − softmax θ): its standard error
    per = (torch.nn.functional.one_hot(z.reshape(-1, L), C) - torch.softmax(theta, -1)) * ok.reshape(-1, 1, 1)
    assert torch.allclose(per.mean(0), g_hat, atol=1e-9)  # autograd of P̂ = TabNAS's formula
    se_g = per.std(0) / (M * N) ** 0.5
    assert bool(((g_hat - g_exact).abs() <= 4.5 * se_g + 1e-6).all()), (g_hat, g_exact)


def test_reinforce_step_matches_the_closed_form_gradient() -> None:
    theta = torch.tensor([[0.3, -0.2, 0.1], [1.0, 0.0, -1.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.bool)
    feasible = table_space(mask)
    y, z = torch.tensor([1, 0]), ctl.sample(theta, 16, torch_generator(1, "z"))
    ok = feasible(z)
    assert 0 < int(ok.sum()) < 16
    pi = torch.softmax(theta, -1)
    grad_log = lambda a: torch.nn.functional.one_hot(a, 3).float() - pi  # noqa: E731
    g = grad_log(y) - (grad_log(z) * ok[:, None, None]).sum(0) / ok.sum()  # ∇[log π(y) − log P̂(V)]
    adv, lr = 0.7, 0.5
    assert torch.allclose(ctl.reinforce_step(theta, y, adv, z, ok, lr), theta + lr * adv * g, atol=1e-6)
    # linear in the advantage (what makes the federated average exact)
    s1, s2 = (ctl.reinforce_step(theta, y, a, z, ok, lr) for a in (0.2, -0.6))
    assert torch.allclose(0.25 * s1 + 0.75 * s2, ctl.reinforce_step(theta, y, 0.05 - 0.45, z, ok, lr), atol=1e-6)


def test_ema_baseline_is_bias_corrected() -> None:
    num = den = 0.0
    num, den = ctl.ema_update(num, den, 3.0)
    assert num / den == pytest.approx(3.0)  # no shrinkage towards 0 at the start
    num, den = ctl.ema_update(num, den, 1.0)
    assert num / den == pytest.approx((0.9 * 0.1 * 3 + 0.1 * 1) / (0.9 * 0.1 + 0.1))


def test_controller_finds_the_best_feasible_architecture_more_often_than_random_search() -> None:
    C, B, sigma, trials = 4, 40, 0.1, 40
    q = torch.tensor([0.0, 0.3, 0.6, 0.9])[:, None] + torch.tensor([0.0, 0.5, 0.7, 0.8])[None, :]
    i = torch.arange(C)
    mask = (i[:, None] + i[None, :]) <= 3  # the high-reward wide corner is infeasible (decoys)
    feasible = table_space(mask)
    best = (2, 1)
    assert q.masked_fill(~mask, -1.0).argmax() == best[0] * C + best[1] and q.max() > q[best]
    space = ctl.enumerate_space(2, C)

    def reward(y: torch.Tensor, g: torch.Tensor) -> float:
        return float(q[y[0], y[1]]) + sigma * float(torch.randn((), generator=g))

    def controller(seed: int) -> tuple[int, ...]:
        theta, num, den = torch.zeros(2, C), 0.0, 0.0
        for t in range(B):
            g = torch_generator(seed, "t-ctl", t)
            y, _ = ctl.rejection_sample(theta, feasible, g)
            r = reward(y, g)
            assert bool(feasible(y[None])[0])
            num, den = ctl.ema_update(num, den, r)
            z = ctl.sample(theta, 16, g)
            theta = ctl.reinforce_step(theta, y, r - num / den, z, feasible(z), 0.5)
        return tuple(ctl.most_probable(theta, space, feasible(space)).tolist())

    def random_search(seed: int) -> tuple[int, ...]:
        g, best_r, pick = torch_generator(seed, "t-rand"), -float("inf"), None
        for _ in range(B):  # the same number of reward evaluations
            y, _ = ctl.rejection_sample(torch.zeros(2, C), feasible, g)
            r = reward(y, g)
            if r > best_r:
                best_r, pick = r, tuple(y.tolist())
        return pick

    wins_ctl = sum(controller(s) == best for s in range(trials))
    wins_rand = sum(random_search(s) == best for s in range(trials))
    assert wins_ctl >= wins_rand + 6, (wins_ctl, wins_rand)


# -- the workload ----------------------------------------------------------------------------
def test_space_resources_match_the_counters() -> None:
    wl = small()
    for idx in ctl.enumerate_space(2, 3):
        arch = wl.architecture(wl.hidden_of(idx))
        res = wl.space.resources(arch, latency=False)
        assert res.params == int(wl.space.params_idx(idx[None])[0])
        assert res.flops == int(wl.space.flops_idx(idx[None])[0])
        assert wl.space.feasible(arch) == (res.params <= 700)
    assert wl.dim == wl.net_dim + 6 and wl.net_dim == wl.space.params_idx(torch.tensor([[2, 2]]))[0]
    by_flops = small(max_params=10**6, max_flops=1000).space
    every = ctl.enumerate_space(2, 3)
    assert torch.equal(by_flops.feasible_idx(every), by_flops.flops_idx(every) <= 1000)
    assert 0 < int(by_flops.feasible_idx(every).sum()) < 9


def test_only_feasible_children_are_trained_and_rewarded(monkeypatch: pytest.MonkeyPatch) -> None:
    wl = small(max_params=400)  # only (4, 4) and (4, 8) are feasible: 2 of 9
    trained, rewarded = [], []
    grad, reward = wl._net_grad, wl.reward
    monkeypatch.setattr(wl, "_net_grad", lambda net, ue, s, h: trained.append(h) or grad(net, ue, s, h))
    monkeypatch.setattr(wl, "reward", lambda net, ue, h: rewarded.append(h) or reward(net, ue, h))
    w = wl.init_params()
    w[wl.net_dim:] = torch.tensor([-2.0, 0.0, 2.0, -1.0, 0.0, 1.0])  # the controller prefers wide (infeasible)
    states = [{} for _ in range(3)]
    for r in range(8):
        outs = [wl.local_train(w, k, 2 * r, 2, lambda s: LR, states[k]) for k in range(3)]
        w = (wl.ue_weights().float() @ torch.stack(outs))
    assert len(rewarded) == 24 and len(trained) == 48
    allowed = {(4, 4), (4, 8)}
    assert set(trained) <= allowed and set(rewarded) <= allowed and len(set(trained)) == 2
    # many rounds' children under a policy that puts most mass on infeasible architectures
    theta = torch.tensor([[-1.0, 1.0, 3.0], [-1.0, 1.0, 3.0]])
    assert wl.feasible_mass(theta) < 0.01
    kids = {wl.hidden_of(wl.round_child(theta, s)) for s in range(300)}
    assert kids == allowed


def test_a_ue_trains_only_its_child_and_leaves_other_weights_bit_identical() -> None:
    wl = small(max_params=2000)
    w = wl.init_params()
    net, theta = wl.split(w)
    s = next(s for s in range(100) if wl.hidden_of(wl.round_child(theta, s)) != (16, 16))
    h0, h1 = wl.hidden_of(wl.round_child(theta, s))
    state = {"tabnas.num": torch.tensor([-5.0], dtype=torch.float64), "tabnas.den": torch.tensor([1.0])}
    out = wl.local_train(w, 1, s, 3, lambda _: LR, state)
    inside = [torch.zeros(shape, dtype=torch.bool) for shape in wl._shapes]
    inside[0][:h0], inside[1][:h0] = True, True
    inside[2][:h1, :h0], inside[3][:h1] = True, True
    inside[4][:, :h1], inside[5][:] = True, True
    mask = torch.cat([m.flatten() for m in inside])
    assert torch.equal(out[: wl.net_dim][~mask], w[: wl.net_dim][~mask])
    assert float((out[: wl.net_dim][mask] != w[: wl.net_dim][mask]).float().mean()) > 0.5  # (dead ReLUs keep some)
    assert not torch.equal(out[wl.net_dim:], w[wl.net_dim:])  # the controller stepped
    first = wl.local_train(w, 1, s, 3, lambda _: LR, {})  # first reward: Q̄ = Q, advantage 0
    assert torch.equal(first[wl.net_dim:], w[wl.net_dim:])


def test_averaged_controller_equals_one_server_step_with_the_averaged_reward() -> None:
    wl = small()
    w = wl.init_params()
    w[wl.net_dim:] = 0.5 * torch.randn(6, generator=torch_generator(0, "test-theta"))
    net0, theta0 = wl.split(w)
    first, K = 7, 3
    states = [{"tabnas.num": torch.tensor([-0.2 * k], dtype=torch.float64),
               "tabnas.den": torch.tensor([0.3 + 0.1 * k], dtype=torch.float64)} for k in range(3)]
    outs = torch.stack([wl.local_train(w, k, first, K, lambda _: LR, states[k]) for k in range(3)])
    q = wl.ue_weights()
    theta_avg = (q @ outs[:, wl.net_dim:].double()).view(2, 3)

    y = wl.round_child(theta0, first)
    hidden = wl.hidden_of(y)
    rewards = torch.tensor([wl.reward(outs[k, : wl.net_dim], k, hidden) for k in range(3)], dtype=torch.float64)
    baselines = torch.tensor([float(st["tabnas.num"] / st["tabnas.den"]) for st in states], dtype=torch.float64)
    assert float(rewards.std()) > 1e-3 and float((rewards - baselines).abs().min()) > 1e-3  # non-trivial
    direct = wl.controller_step(theta0, y, float(q @ rewards - q @ baselines), first)
    assert torch.allclose(theta_avg, direct.double(), atol=1e-5)
    assert float((direct - theta0).abs().max()) > 1e-2


def test_warmup_freezes_the_controller_but_updates_the_baseline() -> None:
    wl = small(warmup_fraction=0.5)  # θ frozen before step 50
    w, st = wl.init_params(), {}
    out = wl.local_train(w, 0, 10, 2, lambda _: LR, st)
    assert torch.equal(out[wl.net_dim:], w[wl.net_dim:]) and float(st["tabnas.den"]) == pytest.approx(0.1)
    assert not torch.equal(wl.local_train(w, 0, 50, 2, lambda _: LR, st)[wl.net_dim:], w[wl.net_dim:])


def test_same_seed_same_numbers() -> None:
    def go(seed: int) -> tuple[torch.Tensor, dict]:
        wl = small(seed=seed)
        w = wl.init_params()
        for r in range(3):
            w = wl.ue_weights().float() @ torch.stack([wl.local_train(w, k, 2 * r, 2, lambda _: LR, {})
                                                       for k in range(3)])
        return w, wl.evaluate(w)

    (a, ea), (b, eb), (c, _) = go(0), go(0), go(1)
    assert torch.equal(a, b) and ea == eb
    assert not torch.equal(a, c)


def test_derive_falls_back_to_the_most_probable_feasible_architecture() -> None:
    wl = small()
    w = wl.init_params()
    w[wl.net_dim:] = torch.tensor([0.0, 1.0, 2.0, 0.0, 1.5, 1.0])  # argmax (16, 8) is infeasible
    assert not wl.space.feasible(wl.architecture((16, 8)))
    # feasible: (4,4) (4,8) (4,16) (8,4) (8,8); most probable: layer0 = 8 (1.0), layer1 = 8 (1.5)
    assert wl.derive(w) == (8, 8)
    ev = wl.evaluate(w)
    assert ev["arch_layer0"] == 8 and ev["arch_layer1"] == 8 and ev["arch_params"] == 650
    assert 0 < ev["feasible_mass"] < 1 and ev["controller_entropy"] < 2 * torch.log(torch.tensor(3.0))


def test_search_result_and_retrain_config() -> None:
    wl = small()
    w = wl.init_params()
    found = wl.search_result(w)
    json.dumps(found)
    arch = found["architecture"]
    assert set(arch) == {"layer0", "layer1"} and found["feasible"] and wl.space.feasible(arch)
    assert found["resources"]["params"] <= 700 and found["resources"]["latency_ms"] > 0
    assert found["feasible_mass"] == pytest.approx(float(wl._all_ok.float().mean()))  # uniform π at init
    data = wl.retrain_config(arch)
    assert "total_steps" not in data and data["retrain_rounds"] == 0 and data["arch"] == arch
    child = TabNasWorkload(parse_workload_config(data), seed=0)
    assert child.dim == found["resources"]["params"] and not child.custom_local_train
    x = child.init_params()
    assert child.local_train(x, 0, 0, 2, lambda _: LR, {}).shape == x.shape
    ev = child.evaluate(x)
    assert {"loss", "accuracy", "arch_params"} <= set(ev) and "feasible_mass" not in ev


def test_fixed_architecture_validation_names_the_key_and_allowed_values() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"unknown decision 'layer5'.*\['layer0', 'layer1'\]"):
        TabNasConfig(hidden_layers=2, arch={"layer0": 4, "layer1": 8, "layer5": 4})
    with pytest.raises(pydantic.ValidationError, match=r"layer1 = 12 is not an allowed width.*\[4, 8, 16, 32, 64\]"):
        TabNasConfig(hidden_layers=2, arch={"layer0": 4, "layer1": 12})
    with pytest.raises(pydantic.ValidationError, match="missing decision 'layer1'"):
        TabNasConfig(hidden_layers=2, arch={"layer0": 4})
    with pytest.raises(ValueError, match="smallest child has"):
        small(max_params=100)


def test_random_search_has_no_controller_and_picks_a_scored_candidate() -> None:
    wl = small(search_strategy="random", random_candidates=8)
    assert wl.dim == wl.net_dim
    w = wl.init_params()
    for r in range(3):
        w = wl.ue_weights().float() @ torch.stack([wl.local_train(w, k, 2 * r, 2, lambda _: LR, {}) for k in range(3)])
    net, _ = wl.split(w)
    pick = wl.derive(w)
    assert pick in wl._candidates and all(wl.space.feasible(wl.architecture(h)) for h in wl._candidates)
    assert wl.validation_reward(net, pick) == max(wl.validation_reward(net, h) for h in wl._candidates)


@pytest.mark.parametrize("dataset", ["breast_cancer", "wine"])
def test_sklearn_tables(dataset: str) -> None:
    wl = small(dataset=dataset, max_params=400)
    assert wl.data.num_classes == (2 if dataset == "breast_cancer" else 3)
    assert sum(wl.num_examples(k) for k in range(3)) + sum(len(v[1]) for v in wl.data.val) + len(wl.data.y_test) \
        == (569 if dataset == "breast_cancer" else 178)
    x = torch.cat([t[0] for t in wl.data.train] + [v[0] for v in wl.data.val])
    assert torch.allclose(x.mean(0), torch.zeros(x.shape[1]), atol=1e-4)  # standardised on the pool
    w = wl.local_train(wl.init_params(), 0, 0, 2, lambda _: LR, {})
    assert 0 <= wl.evaluate(w)["accuracy"] <= 1


def _mlp_params(h0: int, h1: int) -> int:
    """A 60-feature, 10-class MLP with hidden widths (h0, h1), weights and biases, by hand."""
    return 61 * h0 + (h0 + 1) * h1 + (h1 + 1) * 10


WIDTHS = (4, 8, 16, 32, 64)


def _run(tmp_path, *extra: str):
    from fedsim.config import apply_overrides, validate
    from fedsim.runner import run_experiment

    cfg = validate(apply_overrides({}, [
        "engine.name='inline'", "output.plot=false", f"output.dir='{tmp_path}'", "checkpoint.every=0", "rounds=3",
        "train.local_steps=2", "workload={name='nas-tabnas', num_ues=3, max_samples_per_ue=100, hidden_layers=2, "
        "retrain_rounds=1}", *extra]))
    run_dir = run_experiment(cfg, quiet=True)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return cfg, rows, json.loads((run_dir / "summary.json").read_text())


@pytest.mark.parametrize("strategy", [
    ["strategy.name='server-digital'"],
    ["strategy.name='serverfree-relay'"],
    ["strategy.name='server-ota'", "channel.interference='gaussian'", "channel.scale=0.01"],
])
def test_end_to_end_run(tmp_path, strategy: list[str]) -> None:
    cfg, rows, summary = _run(tmp_path, *strategy)
    assert rows[-1]["round"] == 3 and {"feasible_mass", "controller_entropy", "arch_params"} <= set(rows[-1])
    # round 0: the uniform controller, so the feasible mass is the share of the 25 children within
    # T0 = 3000 weights, counted by hand
    feasible = [(a, b) for a in WIDTHS for b in WIDTHS if _mlp_params(a, b) <= 3000]
    assert rows[0]["feasible_mass"] == pytest.approx(len(feasible) / 25, rel=1e-6)
    assert rows[0]["controller_entropy"] == pytest.approx(2 * math.log(5), rel=1e-6)  # uniform over 5 per layer
    for r in rows:
        assert 0.0 < r["feasible_mass"] <= 1.0 and 0.0 < r["controller_entropy"] <= 2 * math.log(5) + 1e-6
        assert r["arch_params"] == _mlp_params(int(r["arch_layer0"]), int(r["arch_layer1"]))
    found = summary["search"]
    arch = found["architecture"]
    assert (arch["layer0"], arch["layer1"]) in feasible
    assert found["resources"]["params"] == _mlp_params(arch["layer0"], arch["layer1"]) <= 3000
    re = found["retrain"]
    assert re["status"] == "completed" and re["rounds"] == 1


def test_a_budget_admitting_one_architecture_returns_exactly_it(tmp_path) -> None:
    """T0 = 61·4 + 5·4 + 5·10 = 314 weights admits only the (4, 4) child; the uniform controller puts
    1/25 of its mass on it."""
    assert _mlp_params(4, 4) == 314 and sorted(_mlp_params(a, b) for a in WIDTHS for b in WIDTHS)[1] > 314
    _, rows, summary = _run(tmp_path, "workload.max_params=314")
    assert rows[0]["feasible_mass"] == pytest.approx(1 / 25, rel=1e-6)
    assert all((r["arch_layer0"], r["arch_layer1"]) == (4.0, 4.0) for r in rows)
    assert summary["search"]["architecture"] == {"layer0": 4, "layer1": 4}
    assert summary["search"]["resources"]["params"] == 314
