"""Workloads: gradients, optima, theory constants, determinism, partitions, configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from fedsim.errors import ConfigError
from fedsim.workloads import WORKLOADS, build_workload, parse_workload_config
from fedsim.workloads.images import DigitsCnnConfig, MnistCnnConfig, load_images
from fedsim.workloads.partition import label_entropy, partition_indices
from fedsim.workloads.quadratic import QuadraticConfig
from fedsim.workloads.synthetic import NUM_CLASSES, NUM_FEATURES, SyntheticLogreg, SyntheticLogregConfig

D64 = torch.float64


@pytest.fixture(scope="module")
def logreg() -> SyntheticLogreg:
    return build_workload(SyntheticLogregConfig(num_ues=8, batch_size=16), seed=3)


@pytest.fixture(scope="module")
def quad():
    cfg = QuadraticConfig(
        num_ues=6, dim=5, mu=0.5, L=4.0, hessian="heterogeneous", heterogeneity=2.0, grad_noise=0.3, init_dist=2.5
    )
    return build_workload(cfg, seed=1)


@pytest.fixture(scope="module")
def digits():
    return build_workload(DigitsCnnConfig(num_ues=6, batch_size=20, val_fraction=0.2), seed=0)


@pytest.fixture(scope="module")
def mnist_labels() -> np.ndarray:
    return load_images("mnist")[1].numpy()  # 5000 labels, sorted by class


def _ce_reg(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, l2: float) -> torch.Tensor:
    """Independent reference: mean CE of logits x[:, :60] W + b, plus (l2/2)||w||^2."""
    wm = w[: NUM_FEATURES * NUM_CLASSES].view(NUM_FEATURES, NUM_CLASSES)
    b = w[NUM_FEATURES * NUM_CLASSES :]
    return F.cross_entropy(x[:, :NUM_FEATURES] @ wm + b, y) + 0.5 * l2 * w.dot(w)


def _autograd(fn, w: torch.Tensor) -> torch.Tensor:
    w = w.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(w), w)
    return g


# ------------------------------------------------------------------------------ configs


def test_config_validation_rejects_bad_input():
    assert {"synthetic-logreg", "quadratic", "mnist-cnn", "digits-cnn"} <= set(WORKLOADS.names())
    for name in WORKLOADS.names():
        extra = {"total_steps": 10} if name == "moe-lm" else {}  # the experiment config fills it in
        assert parse_workload_config({"name": name, **extra}).name == name
    with pytest.raises(ValidationError):
        parse_workload_config({"name": "synthetic-logreg", "num_users": 3})  # unknown key
    with pytest.raises(ValidationError):
        parse_workload_config({"name": "synthetic-logreg", "num_ues": 0})
    with pytest.raises(ValidationError):
        parse_workload_config({"name": "synthetic-logreg", "l2": 0.0})
    with pytest.raises(ValidationError):
        parse_workload_config({"name": "mnist-cnn", "test_fraction": 1.0})
    with pytest.raises(ValidationError):
        parse_workload_config({"name": "mnist-cnn", "partition": "pathological"})
    with pytest.raises(ValidationError):
        parse_workload_config({"name": "quadratic", "mu": 5.0, "L": 1.0})
    with pytest.raises(ValidationError):
        parse_workload_config({"name": "quadratic", "batch_size": 4})  # not a quadratic field
    with pytest.raises(ValidationError):
        parse_workload_config({"name": "cifar-resnet"})
    with pytest.raises(ValidationError):
        SyntheticLogregConfig(alpha=-1.0)


def test_a_run_builds_its_workload_once(tmp_path, monkeypatch):
    """The experiment is assembled once and handed to the engine: preflight, the UEs, the
    analytics and the server side share one workload (no rebuilds behind caches)."""
    from fedsim.config import load_experiment
    from fedsim.runner import run_experiment

    builds = []
    real = QuadraticConfig.build
    monkeypatch.setattr(QuadraticConfig, "build", lambda self, seed: (builds.append(seed), real(self, seed))[1])
    cfg = load_experiment(None, ["sweep={}", "engine.name='inline'", "output.plot=false", "rounds=2",
                                 "workload={name='quadratic', num_ues=3}", "strategy.name='serverfree-relay'",
                                 f"output.dir={str(tmp_path)!r}"])
    run_experiment(cfg, quiet=True)
    assert builds == [0]


def test_impossible_partition_is_a_config_error():
    with pytest.raises(ConfigError, match="num_ues"):
        build_workload(DigitsCnnConfig(num_ues=1000, partition="shards"), seed=0)


# ------------------------------------------------------------------------------ logreg


def test_logreg_shapes_and_split(logreg):
    assert logreg.dim == 610 and logreg.dtype == D64
    q = logreg.ue_weights()
    counts = torch.tensor([logreg.num_examples(n) for n in range(8)], dtype=D64)
    torch.testing.assert_close(q, counts / counts.sum())
    assert all(45 <= c <= int(0.9 * 600) for c in counts.tolist())  # n_k >= 50, capped at 600
    # 90/10 split per UE: the test set is about a ninth of the training set.
    assert len(logreg.y_test) == pytest.approx(len(logreg.y_train) / 9, rel=0.15)


def test_logreg_full_batch_grad_matches_autograd(logreg):
    w = torch.randn(610, generator=torch.Generator().manual_seed(0), dtype=D64)
    full = build_workload(logreg.cfg.model_copy(update={"batch_size": 0}), seed=3)
    for n in (0, 5):
        x, y = full.ue_data(n)
        ref = _autograd(lambda v, x=x, y=y: _ce_reg(v, x, y, full.l2), w)
        torch.testing.assert_close(full.stochastic_grad(w, n, step=7), ref, rtol=1e-10, atol=1e-12)
    # minibatch gradient = autograd on exactly the rows batch_rows reports
    rows = logreg.batch_rows(2, 11)
    x, y = logreg.ue_data(2)
    ref = _autograd(lambda v: _ce_reg(v, x[rows], y[rows], logreg.l2), w)
    torch.testing.assert_close(logreg.stochastic_grad(w, 2, 11), ref, rtol=1e-10, atol=1e-12)
    assert len(rows) == 16 and len(set(rows.tolist())) == 16  # without replacement


def test_logreg_objective_matches_finite_differences(logreg):
    g = torch.Generator().manual_seed(1)
    w, v = torch.randn(610, generator=g, dtype=D64), torch.randn(610, generator=g, dtype=D64)
    full_grad = logreg.ue_weights() @ torch.stack(
        [_autograd(lambda u, n=n: _ce_reg(u, *logreg.ue_data(n), logreg.l2), w) for n in range(8)]
    )
    h = 1e-5
    fd = (logreg.objective(w + h * v) - logreg.objective(w - h * v)) / (2 * h)
    assert fd == pytest.approx(float(full_grad @ v), rel=1e-6)
    assert logreg.evaluate(w)["train_loss"] == pytest.approx(logreg.objective(w), rel=1e-12)


def test_logreg_optimum_and_constants(logreg):
    tc = logreg.theory_constants()
    w_star = tc.w_star
    grads = torch.stack([logreg.local_grad(w_star, n) for n in range(8)])
    assert float((logreg.ue_weights() @ grads).norm()) <= 1e-8
    torch.testing.assert_close(logreg.ue_weights() @ grads, logreg.global_grad(w_star))
    ev = logreg.evaluate(w_star)
    assert ev["gap"] == pytest.approx(0.0, abs=1e-12) and ev["dist"] == 0.0
    g = torch.Generator().manual_seed(2)
    for scale in (1e-3, 1e-1, 1.0):
        d = torch.randn(610, generator=g, dtype=D64)
        assert logreg.objective(w_star + scale * d / d.norm()) > tc.f_star
    # strong convexity: gap >= mu/2 dist^2; smoothness: gap <= L/2 dist^2
    d = torch.randn(610, generator=g, dtype=D64)
    e = logreg.evaluate(w_star + 0.5 * d / d.norm())
    assert tc.mu / 2 * 0.25 <= e["gap"] <= tc.L / 2 * 0.25
    assert tc.mu == logreg.l2 and 0 < tc.mu <= tc.L
    assert tc.heterogeneity is not None and tc.heterogeneity >= 0
    assert set(tc.sources) >= {"L", "mu", "f_star", "w_star"}


def test_logreg_L_bounds_local_hessians(logreg):
    """Power iteration on Hessian-vector products of f_n: lambda_max <= the L bound."""
    tc = logreg.theory_constants()
    gen = torch.Generator().manual_seed(4)
    for n in (0, 3):
        x, y = logreg.ue_data(n)
        w = 0.3 * torch.randn(610, generator=gen, dtype=D64)
        wr = w.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(_ce_reg(wr, x, y, logreg.l2), wr, create_graph=True)
        v = torch.randn(610, generator=gen, dtype=D64)
        for _ in range(60):
            v = v / v.norm()
            (hv,) = torch.autograd.grad(grad, wr, v, retain_graph=True)
            lam, v = float(v @ hv), hv
        assert logreg.l2 < lam <= tc.L


def test_logreg_gradient_descent_with_1_over_L():
    """GD with step 1/L decreases f monotonically and obeys the (1 - mu/L)^t gap bound."""
    for cfg, steps in (
        (SyntheticLogregConfig(num_ues=10, iid=True), 200),
        (SyntheticLogregConfig(num_ues=10, l2=0.1), 600),
    ):
        wl = build_workload(cfg, seed=0)
        tc = wl.theory_constants()
        w = wl.init_params()
        gap0 = prev = wl.evaluate(w)["gap"]
        for s in range(steps):
            w = w - wl.global_grad(w) / tc.L
            gap = wl.evaluate(w)["gap"] if s % 50 == 49 else None
            if gap is not None:
                assert gap <= prev + 1e-12
                assert gap <= (1 - tc.mu / tc.L) ** (s + 1) * gap0 + 1e-12
                prev = gap
        assert prev <= gap0 / 100, (cfg, gap0, prev)


def test_logreg_batched_paths_match_loops(logreg):
    g = torch.Generator().manual_seed(5)
    ws = torch.randn(5, 610, generator=g, dtype=D64)
    ues = [0, 3, 3, 7, 1]
    for wl in (logreg, build_workload(logreg.cfg.model_copy(update={"batch_size": 0}), 3)):
        stacked = torch.stack([wl.stochastic_grad(w, n, 9) for w, n in zip(ws, ues, strict=True)])
        torch.testing.assert_close(wl.stochastic_grad_many(ws, ues, 9), stacked)
    many = logreg.evaluate_many(ws)
    for w, m in zip(ws, many, strict=True):
        one = logreg.evaluate(w)
        assert one.keys() == m.keys() == {"loss", "accuracy", "train_loss", "gap", "dist"}
        for k in one:
            assert m[k] == pytest.approx(one[k], rel=1e-12, abs=1e-14)
        logits = logreg.x_test @ w.view(NUM_FEATURES + 1, -1)  # independent: plain torch on the test split
        assert m["loss"] == pytest.approx(float(F.cross_entropy(logits, logreg.y_test)), rel=1e-12)
        assert m["accuracy"] == pytest.approx(float((logits.argmax(1) == logreg.y_test).double().mean()), abs=1e-15)


def test_logreg_determinism():
    cfg = SyntheticLogregConfig(num_ues=4, batch_size=8)
    a, b, c = SyntheticLogreg(cfg, 11), SyntheticLogreg(cfg, 11), SyntheticLogreg(cfg, 12)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert torch.equal(a.init_params(), b.init_params())
    assert torch.equal(a.batch_rows(1, 5), b.batch_rows(1, 5))
    assert not torch.equal(a.init_params(), c.init_params())
    assert a.x_train.shape != c.x_train.shape or not torch.equal(a.x_train, c.x_train)
    assert not torch.equal(a.batch_rows(1, 5), a.batch_rows(1, 6))
    assert not torch.equal(a.batch_rows(1, 5), a.batch_rows(2, 5)[: len(a.batch_rows(1, 5))])
    # UE k's data does not depend on N
    big = SyntheticLogreg(cfg.model_copy(update={"num_ues": 6}), 11)
    torch.testing.assert_close(big.ue_data(2)[0], a.ue_data(2)[0], rtol=0, atol=0)


@pytest.mark.parametrize("iid", [False, True])
def test_logreg_pooled_data_is_the_per_ue_generator_stacked(iid):
    """The pooled arrays are written in place (no stacking copies): they must equal the per-UE
    draws of ``generate_synthetic`` split 90/10, stacked and augmented with a ones column."""
    from fedsim.workloads.synthetic import TRAIN_FRACTION, generate_synthetic
    from fedsim.workloads.synthetic_ce import x_t_onehot

    cfg = SyntheticLogregConfig(num_ues=9, iid=iid, max_samples_per_ue=300)
    wl = SyntheticLogreg(cfg, 4)
    data = generate_synthetic(9, cfg.alpha, cfg.beta, iid, 300, 4)
    cut = [min(int(TRAIN_FRACTION * len(y)), len(y) - 1) for _, y in data]
    aug = lambda x: torch.from_numpy(np.hstack([x, np.ones((len(x), 1))]))  # noqa: E731
    pairs = list(zip(data, cut, strict=True))
    train = aug(np.vstack([x[:c] for (x, _), c in pairs]))
    test = aug(np.vstack([x[c:] for (x, _), c in pairs]))
    assert wl.counts == cut and torch.equal(wl.x_train, train) and torch.equal(wl.x_test, test)
    assert torch.equal(wl.y_train, torch.from_numpy(np.concatenate([y[:c] for (_, y), c in pairs])))
    assert torch.equal(wl.y_test, torch.from_numpy(np.concatenate([y[c:] for (_, y), c in pairs])))
    assert torch.equal(wl.xty("train"), x_t_onehot(wl.x_train, wl.y_train)) and wl.xty("test") is wl.xty("test")


def test_synthetic_iid_shares_one_model():
    wl = build_workload(SyntheticLogregConfig(num_ues=5, iid=True), seed=0)
    means = torch.stack([wl.ue_data(n)[0][:, :NUM_FEATURES].mean(0) for n in range(5)])
    assert float(means.abs().max()) < 0.8  # v_k = 0: every UE's features are centred
    het = build_workload(SyntheticLogregConfig(num_ues=5, alpha=1.0, beta=1.0), seed=0)
    hmeans = torch.stack([het.ue_data(n)[0][:, :NUM_FEATURES].mean(0) for n in range(5)])
    assert float(hmeans.abs().max()) > 1.5


# ------------------------------------------------------------------------------ quadratic


def test_quadratic_optimum_and_constants(quad):
    tc = quad.theory_constants()
    q = quad.ue_weights()
    torch.testing.assert_close(q, torch.full((6,), 1 / 6, dtype=D64))
    exact = torch.stack([quad.a[n] * (tc.w_star - quad.b[n]) for n in range(6)])
    assert float((q @ exact).norm()) <= 1e-12
    abar = q @ quad.a
    torch.testing.assert_close(tc.w_star, (q @ (quad.a * quad.b)) / abar)
    assert tc.f_star == pytest.approx(
        float(q @ torch.tensor([quad.local_objective(tc.w_star, n) for n in range(6)], dtype=D64)), rel=1e-12
    )
    assert tc.L == float(quad.a.max()) and tc.mu == float(abar.min())
    assert 0.5 <= tc.mu <= tc.L <= 4.0
    assert tc.heterogeneity == tc.f_star > 0
    assert tc.sigma2 == pytest.approx(5 * 0.3**2)
    w0 = quad.init_params()
    assert float((w0 - tc.w_star).norm()) == pytest.approx(2.5)
    for d in torch.eye(5, dtype=D64):
        ev = quad.evaluate(tc.w_star + 0.1 * d)
        assert ev["gap"] > 0
        assert ev["train_loss"] == pytest.approx(quad.objective(tc.w_star + 0.1 * d), rel=1e-12)
    assert "accuracy" not in quad.evaluate(w0)


def test_quadratic_common_hessian():
    wl = build_workload(QuadraticConfig(num_ues=3, dim=4, mu=1.0, L=7.0), seed=0)
    for n in range(3):
        torch.testing.assert_close(wl.a[n], torch.tensor([1.0, 3.0, 5.0, 7.0], dtype=D64))
    tc = wl.theory_constants()
    assert (tc.mu, tc.L, tc.sigma2) == (1.0, 7.0, 0.0)
    # deterministic gradient = A (w - b_n) = autograd of f_n
    w = torch.ones(4, dtype=D64)
    ref = _autograd(lambda v: 0.5 * (wl.a[1] * (v - wl.b[1]) ** 2).sum(), w)
    torch.testing.assert_close(wl.stochastic_grad(w, 1, 0), ref)
    assert torch.equal(wl.stochastic_grad(w, 1, 0), wl.stochastic_grad(w, 1, 5))


def test_quadratic_noise_statistics_and_batching(quad):
    w = quad.init_params()
    exact = quad.a[2] * (w - quad.b[2])
    noise = torch.stack([quad.stochastic_grad(w, 2, s) - exact for s in range(4000)])
    # E||xi||^2 = dim sigma^2 = 0.45; per-sample ||xi||^2/sigma^2 ~ chi2(5): sd of mean ~ 0.007
    assert float((noise**2).sum(1).mean()) == pytest.approx(quad.theory_constants().sigma2, rel=0.05)
    assert float(noise.mean(0).abs().max()) < 4 * 0.3 / 4000**0.5
    ws = torch.randn(4, 5, generator=torch.Generator().manual_seed(0), dtype=D64)
    ues = [0, 5, 5, 2]
    stacked = torch.stack([quad.stochastic_grad(v, n, 3) for v, n in zip(ws, ues, strict=True)])
    torch.testing.assert_close(quad.stochastic_grad_many(ws, ues, 3), stacked)
    for m, one in zip(quad.evaluate_many(ws), map(quad.evaluate, ws), strict=True):
        assert m == pytest.approx(one, rel=1e-12)


def test_quadratic_determinism():
    cfg = QuadraticConfig(dim=6, grad_noise=1.0)
    a = build_workload(cfg, seed=5)
    b = type(a)(cfg, 5)  # a fresh build, bypassing the cache
    c = type(a)(cfg, 6)
    assert torch.equal(a.b, b.b) and torch.equal(a.init_params(), b.init_params())
    w = a.init_params()
    assert torch.equal(a.stochastic_grad(w, 0, 1), b.stochastic_grad(w, 0, 1))
    assert not torch.equal(a.b, c.b)
    assert not torch.equal(a.stochastic_grad(w, 0, 1), a.stochastic_grad(w, 0, 2))
    assert not torch.equal(
        a.stochastic_grad(w, 0, 1), a.stochastic_grad(w, 1, 1) - a.a[1] * (w - a.b[1]) + a.a[0] * (w - a.b[0])
    )


# ------------------------------------------------------------------------------ partitions


def test_iid_partition(mnist_labels):
    parts = partition_indices(mnist_labels, 7, "iid", seed=0)
    allidx = np.concatenate(parts)
    assert len(allidx) == len(set(allidx.tolist())) == len(mnist_labels)  # disjoint, covering
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_dirichlet_partition_is_label_skewed(mnist_labels):
    n = 10
    iid = partition_indices(mnist_labels, n, "iid", seed=0)
    skew = partition_indices(mnist_labels, n, "dirichlet", seed=0, dirichlet_alpha=0.1)
    allidx = np.concatenate(skew)
    assert len(allidx) == len(set(allidx.tolist())) == len(mnist_labels)
    h_iid = np.mean([label_entropy(mnist_labels[p], 10) for p in iid])
    h_skew = np.mean([label_entropy(mnist_labels[p], 10) for p in skew])
    assert h_iid > 0.95 * np.log(10)
    assert h_skew < 0.6 * h_iid, (h_iid, h_skew)
    again = partition_indices(mnist_labels, n, "dirichlet", seed=0, dirichlet_alpha=0.1)
    other = partition_indices(mnist_labels, n, "dirichlet", seed=1, dirichlet_alpha=0.1)
    assert all(np.array_equal(a, b) for a, b in zip(skew, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(skew, other, strict=True))


def test_shard_partition_limits_classes(mnist_labels):
    n, s = 20, 2
    parts = partition_indices(mnist_labels, n, "shards", seed=0, shards_per_ue=s)
    allidx = np.concatenate(parts)
    assert len(allidx) == len(set(allidx.tolist()))
    assert len(allidx) > len(mnist_labels) - n * s  # only the remainder is left out
    classes = [len(np.unique(mnist_labels[p])) for p in parts]
    assert max(classes) <= 2 * s  # a shard can straddle one class boundary
    assert np.mean(classes) <= s + 1


# ------------------------------------------------------------------------------ CNNs


def test_digits_cnn_gradient_matches_finite_differences(digits):
    assert 2000 <= digits.dim <= 6000 and digits.dtype == torch.float32
    w32 = digits.init_params()
    x, y = digits.ue_data(1)
    w64 = w32.to(D64)
    g64 = _autograd(lambda v: digits.loss(v, x, y), w64)
    v = torch.randn(digits.dim, generator=torch.Generator().manual_seed(0), dtype=D64)
    h = 1e-6
    with torch.no_grad():
        fd = (digits.loss(w64 + h * v, x, y) - digits.loss(w64 - h * v, x, y)) / (2 * h)
    assert float(fd) == pytest.approx(float(g64 @ v), rel=1e-5)
    full = build_workload(digits.cfg.model_copy(update={"batch_size": 0}), seed=0)
    torch.testing.assert_close(full.stochastic_grad(w32, 1, 0), g64.float(), rtol=1e-4, atol=1e-6)
    rows = digits.batch_rows(1, 4)
    gb = _autograd(lambda v: digits.loss(v, x[rows], y[rows]), w64)
    torch.testing.assert_close(digits.stochastic_grad(w32, 1, 4), gb.float(), rtol=1e-4, atol=1e-6)


def test_digits_cnn_sgd_learns(digits):
    w0 = digits.init_params()
    w = digits.local_sgd(w0, ue=0, first_step=0, steps=250, lr=lambda s: 0.2)
    x, y = digits.ue_data(0)
    with torch.no_grad():
        assert float(digits.loss(w, x, y)) < 0.5 * float(digits.loss(w0, x, y))
    ev = digits.evaluate(w)
    assert ev.keys() == {"loss", "accuracy", "train_loss"} and ev["accuracy"] > 0.3


def test_digits_split_and_validation(digits):
    test = set(digits.test_indices.tolist())
    seen: set[int] = set()
    for n in range(digits.num_ues):
        tr, va = set(digits.ue_train_indices(n).tolist()), set(digits.ue_validation_indices(n))
        assert not (tr & va) and not (tr & test) and not (va & test) and not (seen & (tr | va))
        seen |= tr | va
        assert len(va) == int(0.2 * (len(tr) + len(va)))
        assert digits.num_examples(n) == len(tr)
    assert len(seen) + len(test) == 1797 and len(test) == round(0.2 * 1797)
    ev = digits.evaluate_validation(digits.init_params(), 2)
    assert set(ev) == {"val_loss", "val_accuracy"}


def test_image_determinism_and_no_global_rng():
    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()
    cfg = DigitsCnnConfig(num_ues=5, partition="dirichlet", batch_size=8)
    a, b = build_workload(cfg, seed=21), type(build_workload(cfg, 21))(cfg, 21)
    c = type(a)(cfg, 22)
    assert all(np.array_equal(a.ue_train_indices(n), b.ue_train_indices(n)) for n in range(5))
    assert torch.equal(a.init_params(), b.init_params())
    assert torch.equal(a.stochastic_grad(a.init_params(), 3, 2), b.stochastic_grad(b.init_params(), 3, 2))
    assert not torch.equal(a.init_params(), c.init_params())
    assert not np.array_equal(a.test_indices, c.test_indices)
    assert not torch.equal(a.batch_rows(0, 1), a.batch_rows(0, 2))
    SyntheticLogreg(SyntheticLogregConfig(num_ues=2, batch_size=4), 99).stochastic_grad(
        torch.zeros(610, dtype=D64), 0, 0
    )
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert all(np.array_equal(u, v) for u, v in zip(np.random.get_state(), np_state, strict=True))


def test_mnist_cnn_builds_and_differentiates():
    wl = build_workload(MnistCnnConfig(num_ues=10, partition="shards"), seed=0)
    assert 10_000 <= wl.dim <= 30_000 and wl.num_examples(0) == 400  # 4000 / (10 UEs * 2 shards) * 2
    assert len(wl.y_test) == 1000
    w = wl.init_params()
    rows = wl.batch_rows(4, 0)
    x, y = wl.ue_data(4)
    ref = _autograd(lambda v: wl.loss(v, x[rows], y[rows]), w.to(D64))
    torch.testing.assert_close(wl.stochastic_grad(w, 4, 0), ref.float(), rtol=1e-4, atol=1e-6)
    assert len(torch.unique(y)) <= 4
