"""synthetic-logreg's optima (fedsim/workloads/synthetic_optima.py): the per-UE Newton-CG batched
over size buckets equals the one-problem solver UE by UE, every returned point is stationary by
an autograd gradient of the plain formula, the preconditioned pooled solve agrees with plain
Newton-CG, scipy and the values recorded from the solver it replaced, and the building blocks
(Hessian-vector product, Kronecker preconditioner, batched CG with shrinking working set) are
checked on their own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize

from fedsim.workloads import build_workload
from fedsim.workloads.synthetic import NUM_CLASSES, NUM_FEATURES, SyntheticLogregConfig, _minimise, _size_buckets
from fedsim.workloads.synthetic_optima import _cg, _operators, local_optima, minimise

D64 = torch.float64
TOL = 1e-10
# Recorded with the unpreconditioned, per-UE-loop solver this module replaced (commit f67d365),
# for SyntheticLogregConfig(num_ues=8, batch_size=16), seed 3: f*, Gamma, L, w* . cos(0..609),
# f_n* and w_n* . cos(0..609).
OLD_F_STAR, OLD_GAMMA, OLD_L = 0.3693853042743544, 0.11824405076087313, 40.40567233258966
OLD_W_PROBE = -2.0837676267672234
OLD_FN = [0.11092669791417997, 0.005632888601799555, 0.10930286063700528, 0.3886891652894243,
          0.04844569560612895, 0.2178606978251679, 0.34639668818656455, 0.10956827028898455]
OLD_WN_PROBE = [-1.3752216103676491, -0.5040566902309104, -1.97037999824658, -3.8906036388120233,
                -0.7491428897701466, -1.0912444796721343, 1.303251873598657, -1.8998433338019718]
PROBE = torch.cos(torch.arange((NUM_FEATURES + 1) * NUM_CLASSES, dtype=D64))


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: intra-op threads only add barriers (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def wl():
    # UE sizes 45..540: buckets {45, 46, 51}, {70, 74}, {97}, {495, 540}, so padding is exercised
    return build_workload(SyntheticLogregConfig(num_ues=8, batch_size=16), seed=3)


def _plain(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, l2: float) -> torch.Tensor:
    """Independent reference: mean CE of logits x[:, :60] W + b, plus (l2/2)||w||^2."""
    wm = w[: NUM_FEATURES * NUM_CLASSES].view(NUM_FEATURES, NUM_CLASSES)
    return F.cross_entropy(x[:, :NUM_FEATURES] @ wm + w[NUM_FEATURES * NUM_CLASSES :], y) + 0.5 * l2 * w.dot(w)


def _autograd_grad(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, l2: float) -> torch.Tensor:
    w = w.detach().clone().requires_grad_(True)
    return torch.autograd.grad(_plain(w, x, y, l2), w)[0]


def test_batched_local_optima_equal_the_one_problem_solver_and_the_old_values(wl) -> None:
    buckets = _size_buckets(wl.counts)
    assert any(len({wl.counts[n] for n in b.tolist()}) > 1 for b in buckets)  # padded buckets exist
    w, f, lmax = local_optima(wl.x_train, wl.y_train, wl.offsets, buckets, wl.l2, NUM_CLASSES)
    for n in range(wl.num_ues):
        x, y = wl.ue_data(n)
        w1, f1 = _minimise(x, y, wl.l2)
        assert float(f[n]) == pytest.approx(f1, rel=1e-12) and float(f[n]) == pytest.approx(OLD_FN[n], rel=1e-12)
        # ||grad|| <= 1e-10 and l2-strong convexity put each within 1e-8 of the argmin
        assert float((w[n] - w1).norm()) <= 2e-8
        assert float(w[n] @ PROBE) == pytest.approx(OLD_WN_PROBE[n], abs=2e-8 * float(PROBE.norm()))
        assert float(lmax[n]) == pytest.approx(float(torch.linalg.eigvalsh(x.T @ x / len(y))[-1]), rel=1e-12)
        # stationary by autograd (1e-13: rounding of the two summation orders)
        assert float(_autograd_grad(w[n], x, y, wl.l2).norm()) <= TOL + 1e-13
        assert float(f[n]) == pytest.approx(float(_plain(w[n], x, y, wl.l2)), rel=1e-13)
    tc = wl.theory_constants()
    assert tc.heterogeneity == pytest.approx(OLD_GAMMA, rel=1e-12) and tc.L == pytest.approx(OLD_L, rel=1e-12)


def test_a_ue_takes_the_same_steps_in_a_bucket_as_alone(wl) -> None:
    """With max_newton=2 nobody converges: each UE's point is the one it reaches solved alone (a
    bucket of one, no padding), and its value is f there."""
    args = (wl.x_train, wl.y_train, wl.offsets)
    w, f, _ = local_optima(*args, _size_buckets(wl.counts), wl.l2, NUM_CLASSES, max_newton=2)
    alone = [torch.tensor([n]) for n in range(wl.num_ues)]
    w1, _, _ = local_optima(*args, alone, wl.l2, NUM_CLASSES, max_newton=2)
    for n in range(wl.num_ues):
        x, y = wl.ue_data(n)
        assert float(_autograd_grad(w[n], x, y, wl.l2).norm()) > 1e-6
        assert float((w[n] - w1[n]).norm()) <= 1e-9 * float(w1[n].norm())
        assert float(f[n]) == pytest.approx(float(_plain(w[n], x, y, wl.l2)), rel=1e-13)


def test_global_optimum_agrees_with_plain_newton_cg_scipy_and_the_old_value(wl) -> None:
    x, y, l2 = wl.x_train, wl.y_train, wl.l2
    w, f = wl.w_star, wl.f_star
    assert float(_autograd_grad(w, x, y, l2).norm()) <= TOL + 1e-13
    assert f == pytest.approx(OLD_F_STAR, rel=1e-13) and f == pytest.approx(float(_plain(w, x, y, l2)), rel=1e-13)
    assert float(w @ PROBE) == pytest.approx(OLD_W_PROBE, abs=2e-8 * float(PROBE.norm()))
    w0, f0 = minimise(x, y, l2, NUM_CLASSES, precondition=False)
    assert f0 == pytest.approx(f, rel=1e-13) and float((w0 - w).norm()) <= 2e-8

    def fun(v: np.ndarray) -> tuple[float, np.ndarray]:
        vt = torch.from_numpy(v).requires_grad_(True)
        val = _plain(vt, x, y, l2)
        return float(val.detach()), torch.autograd.grad(val, vt)[0].numpy()

    def hessp(v: np.ndarray, p: np.ndarray) -> np.ndarray:
        vt = torch.from_numpy(v).requires_grad_(True)
        (g,) = torch.autograd.grad(_plain(vt, x, y, l2), vt, create_graph=True)
        return torch.autograd.grad(g, vt, torch.from_numpy(p))[0].numpy()

    start = np.zeros(w.numel())
    tr = minimize(fun, start, jac=True, hessp=hessp, method="trust-ncg", options={"gtol": 1e-10})
    assert tr.success and tr.fun == pytest.approx(f, rel=1e-13) and np.linalg.norm(tr.x - w.numpy()) <= 2e-8
    # L-BFGS-B stops on its own criteria (~1e-8 gradient): f to 1e-10, w to 1e-5
    lb = minimize(fun, start, jac=True, method="L-BFGS-B", options={"gtol": 1e-10, "ftol": 0.0, "maxiter": 5000})
    assert lb.fun == pytest.approx(f, rel=1e-10) and np.linalg.norm(lb.x - w.numpy()) <= 1e-5
    assert lb.fun >= f - 1e-15  # nobody finds a lower point


def test_hvp_is_the_autograd_hessian_and_the_preconditioner_inverts_it_at_zero(wl) -> None:
    """At w = 0 the softmax is uniform, so H = (X~^T X~ / n) kron C + l2 I exactly and the
    preconditioner is H^-1; in the Gram eigenbasis (the per-UE path) too. At a random w the
    Hessian-vector product equals autograd's."""
    x, y = wl.ue_data(5)
    n, g = len(y), torch.Generator().manual_seed(0)
    vs = torch.randn(3, NUM_FEATURES + 1, NUM_CLASSES, generator=g, dtype=D64)
    m = torch.full((3, n), 1.0 / n, dtype=D64)
    lam, u = torch.linalg.eigh(x.T @ x / n)
    for xb, gram in ((x.expand(3, n, -1), (lam.expand(3, -1), u.expand(3, -1, -1))), ((x @ u).expand(3, n, -1),
                                                                                        (lam.expand(3, -1), None))):
        p = torch.full((3, n, NUM_CLASSES), 1.0 / NUM_CLASSES, dtype=D64)
        hvp, precond = _operators(xb, p, p * m.unsqueeze(-1), gram, wl.l2)(torch.arange(3))
        torch.testing.assert_close(precond(hvp(vs)), vs, rtol=0, atol=1e-11)
        torch.testing.assert_close(hvp(precond(vs)), vs, rtol=0, atol=1e-11)
    w = 0.3 * torch.randn(NUM_FEATURES + 1, NUM_CLASSES, generator=g, dtype=D64)
    p = torch.softmax(x @ w, -1).expand(3, n, -1)
    hvp, _ = _operators(x.expand(3, n, -1), p, p * m.unsqueeze(-1), None, wl.l2)(torch.arange(3))
    wr = w.reshape(-1).clone().requires_grad_(True)
    (gr,) = torch.autograd.grad(_plain(wr, x, y, wl.l2), wr, create_graph=True)
    for k in range(3):
        want = torch.autograd.grad(gr, wr, vs[k].reshape(-1), retain_graph=True)[0]
        torch.testing.assert_close(hvp(vs)[k].reshape(-1), want, rtol=1e-12, atol=1e-13)


def test_batched_cg_solves_each_problem_to_its_own_tolerance() -> None:
    """Problems of very different conditioning and tolerances in one call: the easy ones stop
    early (the working set shrinks) and each still meets its residual bound."""
    g = torch.Generator().manual_seed(1)
    b_count, k = 6, 20
    q, _ = torch.linalg.qr(torch.randn(b_count, k, k, generator=g, dtype=D64))
    eig = torch.stack([torch.logspace(0, e, k, dtype=D64) for e in (0.0, 0.5, 1, 2, 3, 4)])
    h = q @ torch.diag_embed(eig) @ q.mT
    rhs = torch.randn(b_count, k, 1, generator=g, dtype=D64)
    tol = torch.tensor([1e-3, 1e-12, 1e-6, 1e-10, 1e-8, 1e-11], dtype=D64)
    calls: list[int] = []

    def ops(sel: torch.Tensor):
        calls.append(len(sel))
        return (lambda v: h[sel] @ v), (lambda r: r)

    d = _cg(ops, rhs, tol, 10 * k)
    res = (h @ d - rhs).flatten(1).norm(dim=1)
    assert bool((res <= tol * 1.01 + 1e-13).all()), res
    assert len(calls) > 1 and calls[-1] < b_count  # the working set did shrink
