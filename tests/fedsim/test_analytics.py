"""Tests of fedsim.analytics against printed reference values and Monte-Carlo (model §4, §5, §8;
§ numbers: docs/explanation/model.md)."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch

from channels.stable import sample_sas
from channels.stats import sas_fractional_moment, sas_median_abs
from fedsim import analytics as fa
from fedsim.errors import FedsimError

THETA, GAMMA = 4.0, 8.0
LR = fa.inverse_time_lr(THETA, GAMMA)
ALPHAS = (1.3, 1.6, 2.0)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def _one_thread():
    """Sample single-threaded: on a busy 2-core machine OpenMP barriers cost 5-10× (measured)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _sas(shape: tuple[int, ...], alpha: float, scale: float, seed: int) -> np.ndarray:
    with _one_thread():
        return sample_sas(shape, alpha, scale, generator=_gen(seed), dtype=torch.float64).numpy()


def abs_moment_by_integration(p: float, alpha: float) -> float:
    """``E|X|^p`` of ``X ~ SαS(α, 1)`` (ch. f. ``exp(−|u|^α)``) by numerical integration, independent of
    ``channels.stats``: for 0 < p < 2, ``|x|^p = C_p ∫ (1 − cos ux) |u|^{−1−p} du`` with
    ``C_p = Γ(1+p) sin(πp/2)/π``, so ``E|X|^p = 2 C_p ∫_0^∞ (1 − e^{−u^α}) u^{−1−p} du``."""
    from scipy import integrate

    def f(u: float) -> float:
        return -math.expm1(-(u**alpha)) * u ** (-1.0 - p)

    val = integrate.quad(f, 0.0, 1.0, limit=200)[0] + integrate.quad(f, 1.0, math.inf, limit=200)[0]
    return 2.0 * math.gamma(1.0 + p) * math.sin(math.pi * p / 2.0) / math.pi * val


def bound_is_a_supersolution(kw: dict, T: int = 20_000, scale: float = 1.0) -> bool:
    """The induction step behind Theorem A (model.md §4.3, derivation sketch): with a = pμ/2 and
    B = 2(σ^p + d m_p c^p) (α = p = 2: a = μ, B = σ² + 2dc², independence), every
    A_{t+1} ≤ (1 − aη_t)A_t + Bη_t^p started at or below v_p/γ^{p−1} stays below the bound, i.e.
    b_{t+1} ≥ (1 − aη_t) b_t + Bη_t^p for the bound b_t (times ``scale``) at every t. m_p by numerical
    integration."""
    p, alpha, mu = kw["p"], kw["alpha"], kw["mu"]
    if p == 2.0 and alpha == 2.0:
        a, B = mu, kw["sigma_p"] ** 2 + 2.0 * kw["d"] * kw["c_eff"] ** 2
    else:
        a = p * mu / 2.0
        B = 2.0 * (kw["sigma_p"] ** p + kw["d"] * abs_moment_by_integration(p, alpha) * kw["c_eff"] ** p)
    t = np.arange(T + 1)
    b = scale * fa.theorem_a_bound(t, **kw)
    eta = kw["theta"] / (t[:-1] + kw["gamma"])
    return bool(np.all(b[1:] >= (1.0 - a * eta) * b[:-1] + B * eta**p - 1e-12 * b[1:]))


def simulate_quadratic(
    *,
    T: int,
    mu_i: np.ndarray,
    e0: np.ndarray,
    alpha: float,
    c_eff: float,
    replicas: int,
    record: np.ndarray,
    seed: int,
    sigma_zeta: float = 0.0,
    chunk: int = 500,
    mean_sq: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """e_{t+1} = (1 − μη_t)e_t − η_t(ζ_t + ε_t), replicas × d coordinates in float64.

    Returns e at the steps in ``record`` (``[len(record), replicas, d]``) and, if ``mean_sq``,
    the mean over replicas of ‖e_t‖² at every t = 0..T (``[T + 1]``). ζ is Gaussian with
    E‖ζ‖² = σ_ζ². Noise comes from the channels sampler in large chunks; the step loop runs in
    numpy in place (single-threaded: tiny torch ops spin threads on a busy 2-core machine).
    """
    g = _gen(seed)
    d = mu_i.size
    e = np.array(np.broadcast_to(np.asarray(e0, dtype=np.float64), (replicas, d)))
    eta = LR(np.arange(T))
    a = 1.0 - eta[:, None] * np.asarray(mu_i, dtype=np.float64)[None, :]  # [T, d]
    rec_pos = {int(t): k for k, t in enumerate(record)}
    out = np.empty((len(record), replicas, d))
    msq = np.empty(T + 1) if mean_sq else None
    for start in range(0, T, chunk):
        n = min(chunk, T - start)
        with _one_thread():
            eps = sample_sas((n, replicas, d), alpha, c_eff, generator=g, dtype=torch.float64)
            if sigma_zeta > 0:
                eps += (
                    sigma_zeta
                    / math.sqrt(d)
                    * torch.randn((n, replicas, d), generator=g, dtype=torch.float64)
                )
        eps = eps.numpy()
        eps *= eta[start : start + n, None, None]
        for k in range(n):
            t = start + k
            if t in rec_pos:
                out[rec_pos[t]] = e
            if msq is not None:
                msq[t] = np.einsum("rd,rd->", e, e) / replicas
            e *= a[t]
            e -= eps[k]
    if msq is not None:
        msq[T] = np.einsum("rd,rd->", e, e) / replicas
    if T in rec_pos:
        out[rec_pos[T]] = e
    return out, msq


# ---------------------------------------------------------------------- Theorem A (§4.3)
PRINTED = dict(
    alpha=1.3, mu=1.0, L=1.0, theta=THETA, gamma=GAMMA, sigma_p=0.0, d=10, c_eff=0.1, w0_dist=1.0
)


def test_theorem_a_printed_values():
    assert fa.theorem_a_vp(p=1.15, **PRINTED) == pytest.approx(15.35, abs=0.005)
    bound = fa.theorem_a_bound([50, 500, 5000], p=1.15, **PRINTED)
    np.testing.assert_allclose(bound, [8.35, 6.03, 4.28], atol=0.005)


def test_theorem_a_default_p_and_gaussian_constant():
    kw = {**PRINTED, "alpha": 1.6}
    assert fa.default_p(1.6) == pytest.approx(1.3)
    assert fa.theorem_a_vp(**kw) == fa.theorem_a_vp(p=1.3, **kw)
    # α = p = 2, hand-computed from model.md §4.3 (Gaussian form, no factor 2):
    # θ = 3, μ = 0.5, σ = 1, d = 5, c = 0.5: θ²(σ² + 2dc²)/(μθ − 1) = 9·(1 + 2.5)/0.5 = 63;
    # against γ‖w0 − w*‖² = 12·4 = 48 (‖w0 − w*‖ = 2) and 12·9 = 108 (‖w0 − w*‖ = 3).
    g = dict(alpha=2.0, mu=0.5, L=0.5, theta=3.0, gamma=12.0, sigma_p=1.0, d=5, c_eff=0.5)
    assert fa.theorem_a_vp(p=2.0, w0_dist=2.0, **g) == pytest.approx(63.0, rel=1e-12)
    assert fa.theorem_a_vp(p=2.0, w0_dist=3.0, **g) == pytest.approx(108.0, rel=1e-12)
    assert fa.theorem_a_bound([0, 4], p=2.0, w0_dist=2.0, **g) == pytest.approx([63.0 / 12, 63.0 / 16])
    # heavy-tailed, by hand with m_p from numerical integration: α = 1.5, p = 1.25, μ = L = 1, θ = 4,
    # γ = 8, σ = 0.3, d = 2, c = 0.5: 2·4^1.25·(0.3^1.25 + 2·2.96746·0.5^1.25)/(1.25·4/2 − 0.25) = 13.66368
    h = dict(p=1.25, alpha=1.5, mu=1.0, L=1.0, theta=4.0, gamma=8.0, sigma_p=0.3, d=2, c_eff=0.5, w0_dist=1.0)
    assert abs_moment_by_integration(1.25, 1.5) == pytest.approx(2.96746, abs=1e-5)
    assert fa.theorem_a_vp(**h) == pytest.approx(13.66368, abs=1e-5)


@pytest.mark.parametrize("case", [
    dict(p=2.0, alpha=2.0, mu=0.5, L=0.5, theta=3.0, gamma=12.0, sigma_p=1.0, d=5, c_eff=0.5, w0_dist=2.0),
    dict(p=1.25, alpha=1.5, mu=1.0, L=1.0, theta=4.0, gamma=8.0, sigma_p=0.3, d=2, c_eff=0.5, w0_dist=1.0),
    dict(PRINTED, p=1.15),
    dict(PRINTED, p=1.15, c_eff=1e-4, w0_dist=3.0),  # the initial-distance term is the max
])
def test_theorem_a_bound_satisfies_the_recursion_it_bounds(case):
    """The induction of model.md §4.3: the bound is a supersolution of the moment recursion at every
    step, starting from ‖w0 − w*‖^p ≤ b_0; half the bound is not (where the noise term binds)."""
    assert case["w0_dist"] ** case["p"] <= fa.theorem_a_bound(0, **case) * (1 + 1e-12)
    assert bound_is_a_supersolution(case)
    init = case["gamma"] ** (case["p"] - 1) * case["w0_dist"] ** case["p"]
    if fa.theorem_a_vp(**case) > init:  # the noise term binds: half of it is too small
        assert not bound_is_a_supersolution(case, scale=0.5)


@pytest.mark.parametrize(
    "change, needle",
    [
        (dict(gamma=2.0), "theta/gamma <= mu/L^2"),
        (dict(theta=0.5, gamma=8.0, p=1.5, alpha=1.8), "p*mu*theta/2 > p-1"),
        (dict(p=1.4), "1 < p < alpha"),
        (dict(p=2.0, alpha=1.9), "1 < p < alpha"),
        (dict(p=1.0), "1 < p < alpha"),
    ],
)
def test_theorem_a_conditions_raise(change, needle):
    kw = {**PRINTED, "p": 1.15, **change}
    with pytest.raises(FedsimError):  # the CLI turns it into a message, exit code 2
        fa.theorem_a_vp(**kw)
    with pytest.raises(ValueError, match=needle.replace("*", r"\*").replace("^", r"\^")):
        fa.theorem_a_bound([0, 1], **kw)


def test_gaussian_strongly_convex_under_theorem_a():
    """§8 item 11: E‖w_t − w*‖² (mean over replicas and exactly) below the α = 2 bound."""
    d, c, sz = 10, 0.1, 0.2
    mu_i = np.linspace(0.5, 1.0, d)  # μ = 0.5, L = 1: θ/γ = μ/L² exactly (boundary allowed)
    e0 = np.full(d, 1 / math.sqrt(d))
    kw = dict(
        p=2.0,
        alpha=2.0,
        mu=0.5,
        L=1.0,
        theta=THETA,
        gamma=GAMMA,
        sigma_p=sz,
        d=d,
        c_eff=c,
        w0_dist=1.0,
    )
    T = 2000
    _, msq = simulate_quadratic(
        T=T,
        mu_i=mu_i,
        e0=e0,
        alpha=2.0,
        c_eff=c,
        replicas=2000,
        record=np.array([T]),
        seed=11,
        sigma_zeta=sz,
        mean_sq=True,
    )
    bound = fa.theorem_a_bound(np.arange(T + 1), **kw)
    assert np.all(msq <= bound * (1 + 1e-12))  # equality at t = 0 up to rounding
    # Exact E‖e_t‖² from §4.4: ζ adds per-coordinate variance σ²/d = 2 c_ζ².
    Tx = 20000
    c_tot = math.sqrt(c**2 + sz**2 / (2 * d))
    det, sig = fa.quadratic_reference(Tx, mu_i=mu_i, e0=e0, alpha=2.0, c_eff=c_tot, lr=LR)
    exact = (det**2 + fa.reference_pth_moment(sig, p=2.0, alpha=2.0)).sum(1)
    assert np.all(exact <= fa.theorem_a_bound(np.arange(Tx + 1), **kw))
    np.testing.assert_allclose(msq[100:], exact[100 : T + 1], rtol=0.08)  # MC agrees with theory
    fit = fa.loglog_fit(np.arange(Tx + 1), exact, t_min=5000, t_max=Tx)
    assert fit.slope == pytest.approx(-1.0, abs=0.03)  # O(1/t), the FedSGD rate


def test_heavy_tailed_pth_moment_under_theorem_a():
    """§4.3 printed setup, α = 1.3, p = 1.15: robust E‖e_t‖^p below the bound; §8 item 12."""
    d, alpha, p, c = 10, 1.3, 1.15, 0.1
    rec = np.array([50, 500, 5000])
    e, _ = simulate_quadratic(
        T=5000,
        mu_i=np.ones(d),
        e0=np.full(d, 1 / math.sqrt(d)),
        alpha=alpha,
        c_eff=c,
        replicas=1000,
        record=rec,
        seed=5,
    )
    mom = fa.pth_moment_mom(np.moveaxis(e, 1, 0), p=p)
    # Exact Σ_i E|e_t[i]|^p ≥ E‖e_t‖_2^p (p ≤ 2); det_t is ~1e-4 by t = 50, so S_t dominates.
    _, sig = fa.quadratic_reference(
        5000, mu_i=np.ones(d), e0=np.zeros(d), alpha=alpha, c_eff=c, lr=LR
    )
    pnorm = fa.reference_pth_moment(sig[rec], p=p, alpha=alpha).sum(1)
    bound = fa.theorem_a_bound(rec, p=p, **PRINTED)
    assert np.all(mom < pnorm) and np.all(pnorm < bound)  # the bound is loose (8.35 vs 1.39)
    assert np.all(mom > 0.3 * pnorm)
    # Never shallower than the bound's −(p−1); the exact per-coordinate exponent is p(1−1/α).
    slope = np.log(mom[2] / mom[1]) / np.log(rec[2] / rec[1])
    assert slope < -(p - 1)
    assert slope == pytest.approx(-p * (1 - 1 / alpha), abs=0.05)


# ---------------------------------------------------------------- quadratic reference (§4.4)
@pytest.mark.parametrize("alpha, slope", [(1.3, -0.2303), (1.6, -0.3742), (2.0, -0.4989)])
def test_reference_sigma_slope_printed(alpha, slope):
    _, sig = fa.quadratic_reference(10_000, mu_i=[1.0], e0=[0.0], alpha=alpha, c_eff=1.0, lr=LR)
    measured = math.log(sig[10_000, 0] / sig[1000, 0]) / math.log(10.0)
    assert measured == pytest.approx(slope, abs=0.002)
    fit = fa.loglog_fit(np.arange(10_001), sig[:, 0], t_min=1000, t_max=10_000)
    assert fit.slope == pytest.approx(slope, abs=0.002)


def test_reference_vectorised_over_coordinates():
    mu_i, e0, c = np.array([1.0, 0.5, 2.0]), np.array([1.0, -2.0, 0.5]), np.array([0.1, 0.2, 0.3])
    det, sig = fa.quadratic_reference(300, mu_i=mu_i, e0=e0, alpha=1.5, c_eff=c, lr=LR)
    assert det.shape == sig.shape == (301, 3)
    for i in range(3):
        d1, s1 = fa.quadratic_reference(300, mu_i=mu_i[i], e0=e0[i], alpha=1.5, c_eff=c[i], lr=LR)
        np.testing.assert_allclose(det[:, i], d1[:, 0], rtol=1e-12)
        np.testing.assert_allclose(sig[:, i], s1[:, 0], rtol=1e-12)
    # det is the noiseless trajectory; σ_1 = η_0 c exactly.
    np.testing.assert_allclose(det[1], (1 - mu_i * LR(0)) * e0)
    np.testing.assert_allclose(sig[1], LR(0) * c)
    # Array step sizes give the same as the callable.
    _, s2 = fa.quadratic_reference(300, mu_i=mu_i, e0=e0, alpha=1.5, c_eff=c, lr=LR(np.arange(300)))
    np.testing.assert_array_equal(sig, s2)


@pytest.fixture(scope="module")
def quadratic_mc():
    """§8 item 10: 8000 replicas × T = 10⁴ steps per α, μ = 1, c_eff = 1, e_0 = 1."""
    T = 10_000
    rec = np.unique(np.round(np.geomspace(100, T, 25)).astype(int))
    out = {}
    for k, alpha in enumerate(ALPHAS):
        e, _ = simulate_quadratic(
            T=T,
            mu_i=np.ones(1),
            e0=np.ones(1),
            alpha=alpha,
            c_eff=1.0,
            replicas=8000,
            record=rec,
            seed=100 + k,
            chunk=500,
        )
        det, sig = fa.quadratic_reference(T, mu_i=[1.0], e0=[1.0], alpha=alpha, c_eff=1.0, lr=LR)
        out[alpha] = (rec, e[:, :, 0], det[rec, 0], sig[rec, 0])
    return out


@pytest.mark.parametrize("alpha", ALPHAS)
def test_quadratic_mc_median_matches_reference(quadratic_mc, alpha):
    rec, e, det, sig = quadratic_mc[alpha]
    emp = np.median(np.abs(e - det[:, None]), axis=1)
    ref = fa.reference_median_abs(sig, alpha=alpha)
    ratio = emp / ref
    assert np.all(np.abs(ratio - 1) < 0.06), ratio  # per-t sampling error ≈ 1.4%
    assert abs(np.median(ratio) - 1) < 0.02
    fit = fa.loglog_fit(rec, emp)
    assert fit.slope == pytest.approx(-(1 - 1 / alpha), abs=0.03)


def test_smaller_alpha_converges_slower(quadratic_mc):
    """§8 item 12: monotone in α; median over seeds (replicas) of |e_T| and their slopes."""
    late = [fa.seed_bands(np.abs(quadratic_mc[a][1][-1])[:, None]).median[0] for a in ALPHAS]
    assert late[0] > late[1] > late[2]
    slopes = []
    for a in ALPHAS:
        rec, e, _, _ = quadratic_mc[a]
        slopes.append(fa.loglog_fit(rec, fa.seed_bands(np.abs(e).T).median).slope)
    assert slopes[0] > slopes[1] > slopes[2]


def test_reference_moment_helper_matches_independent_references():
    """E|S|^p = m_p(α)σ^p with m_p by numerical integration of the characteristic function (not
    ``channels.stats``), and median|S| = σ·(0.75 quantile of scipy's SαS(α, 1))."""
    from scipy import stats

    sig = np.array([0.5, 2.0])
    for p, alpha in ((1.0, 1.5), (1.15, 1.3), (0.5, 1.8)):
        np.testing.assert_allclose(fa.reference_pth_moment(sig, p=p, alpha=alpha),
                                   abs_moment_by_integration(p, alpha) * sig**p, rtol=1e-8)
    np.testing.assert_allclose(fa.reference_pth_moment(sig, p=2.0, alpha=2.0), 2.0 * sig**2)  # E X², N(0, 2σ²)
    np.testing.assert_allclose(fa.reference_median_abs(sig, alpha=1.6),
                               stats.levy_stable.ppf(0.75, 1.6, 0.0) * sig, rtol=1e-5)
    np.testing.assert_allclose(fa.reference_median_abs(sig, alpha=2.0),
                               stats.norm.ppf(0.75, scale=math.sqrt(2.0)) * sig, rtol=1e-12)
    with pytest.raises(ValueError):
        fa.reference_pth_moment(sig, p=1.5, alpha=1.5)


# ----------------------------------------------------------------------------- §4.5, §4.6
def test_s_n_and_reset_scale_monte_carlo():
    assert fa.s_n(7, 2.0) == pytest.approx(math.sqrt(1 - 1 / 7))
    assert fa.s_n(1, 1.5) == 0.0
    # by hand, N = 2, α = 1.5: s^1.5 = 2·(1/2)^1.5 = 0.70711, s = 0.70711^(2/3) = 0.79370 (= 2^(−1/3))
    assert fa.s_n(2, 1.5) == pytest.approx(2 ** (-1 / 3), rel=1e-12)
    N, alpha, c = 5, 1.5, 0.3
    eps = _sas((40_000, N), alpha, c, seed=3)
    dev = eps[:, 0] - eps.mean(1)
    ratio = np.median(np.abs(dev)) / (fa.reset_deviation_scale(N, alpha, c) * sas_median_abs(alpha))
    assert ratio == pytest.approx(1.0, abs=0.03)
    # d = 1: the bound is an equality, E|w_m − w̄|^p; Monte-Carlo at p = 0.5 (|dev|^0.5 has a finite
    # variance: tail index 3), relative standard error ≈ 0.6 % at 40 000 draws
    bound = fa.reset_deviation_moment_bound(N, alpha, c, d=1, p=0.5)
    mc = np.abs(dev) ** 0.5
    assert abs(mc.mean() - bound) < 4 * mc.std() / math.sqrt(mc.size), (mc.mean(), bound)
    assert fa.reset_deviation_moment_bound(N, alpha, c, d=7, p=0.5) == pytest.approx(7 * bound)


def test_accumulate_drift_scale_and_limit():
    N, alpha, c, T = 4, 1.5, 0.5, 200
    eta = LR(np.arange(T))
    eps = _sas((T, 5000, N), alpha, c, seed=4)
    w = -(eta[:, None, None] * eps).sum(0)  # [replicas, N] drift (common gradients cancel)
    med = sas_median_abs(alpha)
    pair = fa.accumulate_consensus_scale(T, N=N, alpha=alpha, c_ind=c, lr=LR, pair=True)
    avg = fa.accumulate_consensus_scale(T, N=N, alpha=alpha, c_ind=c, lr=LR)
    assert np.median(np.abs(w[:, 0] - w[:, 1])) / (pair * med) == pytest.approx(1, abs=0.04)
    assert np.median(np.abs(w[:, 0] - w.mean(1))) / (avg * med) == pytest.approx(1, abs=0.04)
    # The sum converges: exact limit θ^α ζ(α, γ) ≥ closed form θ^α γ^{1−α}/(α−1) (integral).
    exact = fa.lr_power_sum_exact_limit(THETA, GAMMA, alpha)
    approx = fa.lr_power_sum_limit(THETA, GAMMA, alpha)
    n = 10**6
    tail = THETA**alpha * (n + GAMMA) ** (1 - alpha) / (alpha - 1)  # closed form of Σ_{s≥n}
    assert fa.lr_power_sum(n, alpha=alpha, lr=LR) + tail == pytest.approx(exact, rel=1e-6)
    assert approx < exact < approx * (GAMMA / (GAMMA - 1)) ** (alpha - 1)


def test_fedavg_gaussian_reference_form():
    """§4.6 evaluated by hand. Case 1: μ = 1, L = 2 (κ = 2, γ = max(16, 5) = 16), uniform q over two
    UEs with σ_n = 1 (Σq²σ² = 0.5), B_OTA = 2·10·0.25/5 = 1: B = 1.5 and the bound is
    2/(15 + T)·(2·1.5 + 16/2) = 22/(15 + T); 'step' mode B_OTA = 5: 38/(15 + T)."""
    kw = dict(mu=1.0, L=2.0, K=5, sigma_n=[1.0, 1.0], G=0.0, d=10, c_eff=0.5, w0_dist_sq=1.0)
    assert fa.b_ota(d=10, c_eff=0.5, K=5) == pytest.approx(1.0)
    assert fa.b_ota(d=10, c_eff=0.5, K=5, mode="step") == pytest.approx(5.0)
    np.testing.assert_allclose(fa.fedavg_gaussian_bound(np.array([1, 1001]), **kw), [22 / 16, 22 / 1016])
    assert fa.fedavg_gaussian_bound(100, **kw, ota_mode="step") == pytest.approx(38 / 115)
    # Case 2, every term: μ = 0.5, L = 2 (κ = 4, γ = max(32, 3) = 32), K = 3, q = (1/4, 3/4),
    # σ = (1, 2), Γ = 0.1, G = 0.5, d = 4, c = 0.3, E‖w0 − w*‖² = 2:
    # B = 1/16 + 9/16·4 + 6·2·0.1 + 8·2²·0.25 + 2·4·0.09/3 = 0.0625 + 2.25 + 1.2 + 8 + 0.24 = 11.7525;
    # bound(T) = 4/(31 + T)·(2·11.7525/0.5 + 0.5·32/2·2) = 4·63.01/(31 + T): 7.87625 at T = 1.
    kw2 = dict(mu=0.5, L=2.0, K=3, sigma_n=[1.0, 2.0], q=[0.25, 0.75], G=0.5, Gamma=0.1, d=4, c_eff=0.3,
               w0_dist_sq=2.0)
    np.testing.assert_allclose(fa.fedavg_gaussian_bound(np.array([1, 50]), **kw2), [7.87625, 4 * 63.01 / 81])


# ------------------------------------------------------------------------- run-time (§5)
def test_runtime_zero_latency_equal():
    R = np.arange(1, 50)
    for tau in (0.3, np.array([0.1, 0.3, 0.2])):
        np.testing.assert_allclose(
            fa.sequential_time(R, K=5, tau_cp=tau, tau_cm=0.0),
            fa.pipelined_time(R, K=5, tau_cp=tau, tau_cm=0.0),
        )
    # Heterogeneous UEs: the round waits for the slowest.
    assert fa.sequential_time(2, K=5, tau_cp=[0.1, 0.3], tau_cm=1.0) == pytest.approx(5.0)


def test_pipelined_speedup_large_r():
    K, tau = 5, 0.2
    for tau_cm in (0.0, 1.0, 5.0, 20.0):
        s = fa.pipelined_speedup(10**6, K=K, tau_cp=tau, tau_cm=tau_cm)
        assert s == pytest.approx(1 + tau_cm / (K * tau), rel=1e-4)
    assert fa.pipelined_speedup(1, K=K, tau_cp=tau, tau_cm=3.0) == pytest.approx(1.0)
    assert fa.delay_steps(1.0, 0.2) == 5 and fa.delay_steps(1.01, 0.2) == 6
    assert fa.effective_k(K=2, tau_cp=0.2, tau_cm=1.0) == 5
    with pytest.raises(ValueError, match="tau_up <= K\\*tau_cp"):
        fa.pipelined_time(10, K=K, tau_cp=tau, tau_cm=3.0, tau_up=1.5)


def test_single_in_flight_speedup_range():
    K, tau = 4, 0.25  # Kτ_cp = 1
    cms = np.linspace(0, 10, 1001)
    s = np.array([fa.single_in_flight_speedup(K=K, tau_cp=tau, tau_cm=x) for x in cms])
    assert np.all((s >= 1) & (s <= 2))
    assert cms[np.argmax(s)] == pytest.approx(1.0) and s.max() == pytest.approx(2.0)
    assert fa.single_in_flight_time(3, K=K, tau_cp=tau, tau_cm=2.5) == pytest.approx(7.5)


def test_time_to_accuracy_speedup():
    s = fa.time_to_accuracy_speedup(
        [100, 100, np.nan], [100, 120, 100], K=5, tau_cp=0.2, tau_cm=5.0
    )
    assert s[0] == pytest.approx(600 / 105)
    assert s[1] < s[0] and np.isnan(s[2])


# ------------------------------------------------------------------------------------ fits
def test_loglog_fit_recovers_slope_and_ci_covers():
    rng = np.random.default_rng(0)
    t = np.arange(1, 5001, dtype=float)
    covered = 0
    for _ in range(40):
        y = 3.0 * t**-0.4 * np.exp(0.2 * rng.standard_normal(t.size))
        fit = fa.loglog_fit(t, y, t_min=10)
        assert fit.slope == pytest.approx(-0.4, abs=0.02)
        covered += fit.ci_low <= -0.4 <= fit.ci_high
    assert covered >= 34  # nominal 95% of 40 = 38
    thin = fa.loglog_fit(t, y, t_min=10, n_log_points=50)
    assert thin.n <= 50 and thin.slope == pytest.approx(-0.4, abs=0.05)
    with pytest.raises(ValueError):
        fa.loglog_fit(t[:2], y[:2])


def test_seed_slopes_median_and_bootstrap():
    rng = np.random.default_rng(1)
    t = np.geomspace(10, 1e4, 60)
    Y = 2.0 * t**-0.5 * np.exp(0.3 * rng.standard_normal((15, t.size)))
    Y[3] = np.nan  # a diverged seed is counted, not propagated
    res = fa.seed_slopes(t, Y, theory=-0.5)
    assert res.n_failed == 1 and res.covers_theory
    assert res.median == pytest.approx(-0.5, abs=0.03) and abs(res.deviation) < 0.03
    assert fa.seed_slopes(t, Y, theory=-0.6).covers_theory is False
    one = fa.seed_slopes(t, Y[:1], theory=-0.5)  # a single seed: a slope, but no interval
    assert np.isfinite(one.median) and np.isnan(one.ci_low) and np.isnan(one.ci_high)
    assert one.covers_theory is None
    two = fa.seed_slopes(t, Y[:3:2])
    assert two.ci_low == pytest.approx(two.slopes.min()) and two.ci_high == pytest.approx(two.slopes.max())


def test_rounds_to_target_edge_cases():
    y = np.array([5.0, 4.0, np.nan, 0.5, 2.0, 0.4])
    assert fa.rounds_to_target(y, 1.0) == 3.0
    assert fa.rounds_to_target(y, 5.0) == 0.0  # already there at round 0
    assert np.isnan(fa.rounds_to_target(y, 0.1))  # never
    assert fa.rounds_to_target(y, 1.0, rounds=np.arange(6) + 1) == 4.0
    assert fa.time_to_target(y, 1.0, sim_time=np.arange(6) * 2.5) == 7.5
    assert fa.rounds_to_target([0.1, 0.5, 0.9], 0.5, above=True) == 1.0
    np.testing.assert_array_equal(fa.rounds_to_target(np.stack([y, y[::-1]]), 1.0), [3.0, 0.0])
    # A single downward spike: raw curve hits early, the running median does not.
    spike = np.array([3.0, 3.0, 0.1, 3.0, 3.0, 0.5, 0.5, 0.5])
    assert fa.rounds_to_target(spike, 1.0) == 2.0
    assert fa.rounds_to_target(spike, 1.0, smooth_window=3) == 6.0
    assert np.isnan(fa.rounds_to_target([np.nan, np.inf], 1.0))


def test_seed_bands_ignores_and_counts_nonfinite():
    Y = np.array(
        [[1.0, np.inf, np.nan], [2.0, 2.0, np.nan], [3.0, 4.0, np.nan], [4.0, 6.0, np.nan]]
    )
    b = fa.seed_bands(Y)
    np.testing.assert_allclose(b.median[:2], [2.5, 4.0])
    np.testing.assert_array_equal(b.n_nonfinite, [0, 1, 4])
    np.testing.assert_array_equal(b.n_finite, [4, 3, 0])
    assert np.isnan(b.median[2]) and b.iqr[0] == pytest.approx(1.5)


def test_median_of_means_heavy_tailed():
    """E|X| for SαS(1.5, 1) = m_1(1.5) = 1.7055 (infinite variance): MoM within 3%."""
    x = np.abs(_sas((200_000,), 1.5, 1.0, seed=9))
    assert fa.median_of_means(x) == pytest.approx(sas_fractional_moment(1.0, 1.5), rel=0.03)
    e = np.stack([np.ones((100, 2)) * [3.0, 4.0]] * 2, axis=1)  # [R, 2, d], ‖e‖ = 5
    np.testing.assert_allclose(fa.pth_moment_mom(e, p=1.5), [5**1.5] * 2)
    with pytest.raises(ValueError):
        fa.median_of_means([1.0, np.inf])
