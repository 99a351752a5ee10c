"""Convergence theory of server-based analog OTA FL (model §4.3, §4.4, §4.6;
§ numbers: docs/explanation/model.md).

All functions are pure numpy. Units: distances are in parameter units (the units of ``w``),
step sizes are dimensionless multipliers of the gradient, ``c_eff`` is the per-coordinate
SαS scale of the noise on the aggregated gradient (§2.4: ``c_eff = c / (N_act √ρ_t)``), in
gradient units. ``t`` counts SGD steps (K = 1: one step per round).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from channels.stats import sas_fractional_moment, sas_median_abs

from .errors import AnalyticsError

LearningRate = Callable[[NDArray[np.float64]], ArrayLike] | ArrayLike


def inverse_time_lr(theta: float, gamma: float) -> Callable[[ArrayLike], NDArray[np.float64]]:
    """Step-size schedule ``η_t = θ / (t + γ)`` (§3 notation), vectorised over ``t``."""
    if theta <= 0 or gamma <= 0:
        raise AnalyticsError(f"need theta > 0 and gamma > 0, got theta={theta}, gamma={gamma}")
    return lambda t: theta / (np.asarray(t, dtype=np.float64) + gamma)


def default_p(alpha: float) -> float:
    """Default moment order ``p = (1 + α)/2`` (§4.3, §9 item 10): inside (1, α) for α ∈ (1, 2]."""
    return (1.0 + alpha) / 2.0


# --------------------------------------------------------------------------------------
# Theorem A (§4.3)
# --------------------------------------------------------------------------------------


def _check_theorem_a(p: float, alpha: float, mu: float, L: float, theta: float, gamma: float):
    if not 1.0 < alpha <= 2.0:
        raise AnalyticsError(f"Theorem A needs 1 < alpha <= 2 (finite mean), got alpha={alpha}")
    if mu <= 0 or L < mu:
        raise AnalyticsError(f"Theorem A needs 0 < mu <= L, got mu={mu}, L={L}")
    if theta <= 0 or gamma <= 0:
        raise AnalyticsError(f"Theorem A needs theta, gamma > 0, got theta={theta}, gamma={gamma}")
    if not (1.0 < p < alpha or (p == 2.0 and alpha == 2.0)):
        raise AnalyticsError(
            f"condition '1 < p < alpha (or p = 2 at alpha = 2)' violated: p={p}, alpha={alpha}"
        )
    if theta / gamma > mu / L**2 * (1 + 1e-12):
        raise AnalyticsError(
            f"condition 'theta/gamma <= mu/L^2' violated: theta/gamma={theta / gamma:.6g} > "
            f"mu/L^2={mu / L**2:.6g}; increase gamma or decrease theta"
        )
    if not p * mu * theta / 2.0 > p - 1.0:
        raise AnalyticsError(
            f"condition 'p*mu*theta/2 > p-1' violated: p*mu*theta/2={p * mu * theta / 2:.6g} <= "
            f"p-1={p - 1:.6g}; increase theta"
        )


def theorem_a_vp(
    *,
    p: float | None = None,
    alpha: float,
    mu: float,
    L: float,
    theta: float,
    gamma: float,
    sigma_p: float,
    d: int,
    c_eff: float,
    w0_dist: float,
) -> float:
    """Constant ``v_p`` of Theorem A (§4.3), in (parameter units)^p · steps^(p−1).

    Model: ``w_{t+1} = w_t − η_t(∇f(w_t) + ζ_t + ε_t)``, K = 1, ``η_t = θ/(t+γ)``, f μ-strongly
    convex and L-smooth, ``E‖ζ‖^p ≤ sigma_p^p`` (``sigma_p`` is a norm, gradient units),
    ``ε_t[i]`` i.i.d. SαS(α, c_eff) over ``d`` coordinates, ``w0_dist = ‖w_0 − w*‖``.

        v_p = max{ γ^{p−1} ‖w_0 − w*‖^p,  2 θ^p (σ^p + d m_p(α) c_eff^p) / (pμθ/2 − (p−1)) }

    Gaussian case (α = 2, p = 2), where independence removes the factor 2 and m_2(2) = 2:
    ``v_2 = max{γ‖w_0 − w*‖², θ²(σ² + 2 d c_eff²)/(μθ − 1)}``.

    ``p`` defaults to (1 + α)/2. Raises AnalyticsError (a ValueError) naming the violated
    condition among ``θ/γ ≤ μ/L²``, ``pμθ/2 > p − 1`` and ``1 < p < α (or p = 2 at α = 2)``.
    """
    p = default_p(alpha) if p is None else float(p)
    _check_theorem_a(p, alpha, mu, L, theta, gamma)
    if d < 1 or c_eff < 0 or sigma_p < 0 or w0_dist < 0:
        raise AnalyticsError("need d >= 1 and non-negative c_eff, sigma_p, w0_dist")
    init_term = gamma ** (p - 1.0) * w0_dist**p
    if p == 2.0 and alpha == 2.0:
        noise_term = theta**2 * (sigma_p**2 + 2.0 * d * c_eff**2) / (mu * theta - 1.0)
    else:
        m_p = sas_fractional_moment(p, alpha)
        noise = sigma_p**p + d * m_p * c_eff**p
        noise_term = 2.0 * theta**p * noise / (p * mu * theta / 2.0 - (p - 1.0))
    return float(max(init_term, noise_term))


def theorem_a_bound(
    t: ArrayLike,
    *,
    p: float | None = None,
    alpha: float,
    mu: float,
    L: float,
    theta: float,
    gamma: float,
    sigma_p: float,
    d: int,
    c_eff: float,
    w0_dist: float,
) -> NDArray[np.float64]:
    """Theorem A (§4.3): upper bound on ``E‖w_t − w*‖^p`` at steps ``t`` (any shape, t ≥ 0).

    Returns ``v_p / (t + γ)^{p−1}`` with the shape of ``t``, in (parameter units)^p. See
    :func:`theorem_a_vp` for the model, the constant and the conditions checked. The rate is
    O(t^{−(p−1)}); for p = 2 at α = 2 it is the FedSGD O(1/t). The bound is loose on linear
    problems, whose exact exponent is p(1 − 1/α) (§4.4).
    """
    p = default_p(alpha) if p is None else float(p)
    vp = theorem_a_vp(
        p=p,
        alpha=alpha,
        mu=mu,
        L=L,
        theta=theta,
        gamma=gamma,
        sigma_p=sigma_p,
        d=d,
        c_eff=c_eff,
        w0_dist=w0_dist,
    )
    t = np.asarray(t, dtype=np.float64)
    if np.any(t < 0):
        raise AnalyticsError("steps t must be >= 0")
    return vp / (t + gamma) ** (p - 1.0)


# --------------------------------------------------------------------------------------
# Exact reference for quadratics (§4.4)
# --------------------------------------------------------------------------------------


def _lr_array(lr: LearningRate, T: int) -> NDArray[np.float64]:
    steps = np.arange(T, dtype=np.float64)
    eta = np.asarray(lr(steps) if callable(lr) else lr, dtype=np.float64)
    eta = np.broadcast_to(eta, (T,)) if eta.ndim == 0 else eta
    if eta.shape[0] < T:
        raise AnalyticsError(f"lr gives {eta.shape[0]} step sizes, need T={T}")
    return eta[:T]


def quadratic_reference(
    T: int,
    *,
    mu_i: ArrayLike,
    e0: ArrayLike,
    alpha: float,
    c_eff: float | ArrayLike,
    lr: LearningRate,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Exact law of SGD on a separable quadratic under additive SαS noise (§4.4).

    Problem: ``f(w) = ½ Σ_i μ_i (w[i] − w*[i])²``, K = 1, update
    ``e_{t+1} = (1 − μ_i η_t) e_t − η_t ε_t`` with ``ε_t[i]`` i.i.d. SαS(α, c_eff). Then each
    coordinate is exactly ``e_t[i] = det_t[i] + S_t[i]``, ``S_t[i] ~ SαS(α, σ_t[i])`` with

        det_t = Π_{s<t} (1 − μ_i η_s) e_0,
        σ_{t+1}^α = |1 − μ_i η_t|^α σ_t^α + (η_t c_eff)^α,    σ_0 = 0.

    Args:
        T: number of steps; outputs cover t = 0..T.
        mu_i: curvatures, shape ``[d]`` (1/parameter-units², i.e. gradient per distance).
        e0: initial error ``w_0 − w*``, shape ``[d]`` (parameter units).
        alpha: tail index, 0 < α ≤ 2 (α = 2: Gaussian with variance 2σ_t²).
        c_eff: noise scale per coordinate (gradient units), scalar or ``[d]``.
        lr: callable ``η(t)`` vectorised over a float array of steps, or an array ``[≥T]``,
            or a scalar (constant step).

    Returns:
        ``(det, sigma)``, both ``[T + 1, d]`` float64, in parameter units. With η_t = θ/(t+γ)
        and αμθ > α − 1, ``sigma`` decays as t^{−(1−1/α)}. Not a bound: the curve to plot.
    """
    if not 0.0 < alpha <= 2.0:
        raise AnalyticsError(f"need 0 < alpha <= 2, got {alpha}")
    if T < 0:
        raise AnalyticsError(f"need T >= 0, got {T}")
    mu_i = np.atleast_1d(np.asarray(mu_i, dtype=np.float64))
    e0 = np.broadcast_to(np.asarray(e0, dtype=np.float64), mu_i.shape)
    c = np.broadcast_to(np.asarray(c_eff, dtype=np.float64), mu_i.shape)
    eta = _lr_array(lr, T)
    # Contraction factors [T, d]; the products/sums run over t, vectorised over d.
    a = 1.0 - eta[:, None] * mu_i[None, :]
    det = np.empty((T + 1, mu_i.size))
    det[0] = e0
    det[1:] = e0 * np.cumprod(a, axis=0)
    # Recurse on the dispersion σ^α (linear recursion) to avoid a root per step.
    absa = np.abs(a) ** alpha
    inj = (eta[:, None] * c[None, :]) ** alpha
    disp = np.zeros((T + 1, mu_i.size))
    for t in range(T):
        disp[t + 1] = absa[t] * disp[t] + inj[t]
    return det, disp ** (1.0 / alpha)


def reference_pth_moment(sigma: ArrayLike, *, p: float, alpha: float) -> NDArray[np.float64]:
    """``E|S_t|^p = m_p(α) σ_t^p`` per coordinate (§4.4, §2.4); same shape as ``sigma``.

    Finite only for p < α when α < 2 (any 0 < p ≤ 2 at α = 2). Sum over the last axis for
    ``E‖S_t‖_p^p``, an upper bound on ``E‖S_t‖_2^p`` for p ≤ 2.
    """
    if not (0.0 < p < alpha or (alpha == 2.0 and p == 2.0)):
        raise AnalyticsError(
            f"E|S|^p needs 0 < p < alpha (or p = 2 at alpha = 2), got p={p}, alpha={alpha}"
        )
    # α = p = 2: SαS(2, σ) = N(0, 2σ²), so the Γ(0)/Γ(0) form of m_p is replaced by its limit 2.
    m_p = 2.0 if p == 2.0 else sas_fractional_moment(p, alpha)
    return m_p * np.asarray(sigma, dtype=np.float64) ** p


def reference_median_abs(sigma: ArrayLike, *, alpha: float) -> NDArray[np.float64]:
    """``median|S_t| = σ_t · median|SαS(α, 1)|`` (§4.4); same shape as ``sigma``."""
    return sas_median_abs(alpha) * np.asarray(sigma, dtype=np.float64)


# --------------------------------------------------------------------------------------
# K > 1 Gaussian FedAvg reference form (§4.6)
# --------------------------------------------------------------------------------------


def b_ota(*, d: int, c_eff: float, K: int, mode: Literal["round", "step"] = "round") -> float:
    """OTA noise term of §4.6 (model), gradient units².

    Gaussian interference of per-coordinate variance ``2 c_eff² η_s²`` on the update:
    ``'round'`` (added once per round to the averaged update) gives ``2 d c_eff² / K``;
    ``'step'`` (enters every local step) gives ``2 d c_eff²``.
    """
    if mode == "round":
        return 2.0 * d * c_eff**2 / K
    if mode == "step":
        return 2.0 * d * c_eff**2
    raise AnalyticsError(f"mode must be 'round' or 'step', got {mode!r}")


def fedavg_gaussian_bound(
    T: ArrayLike,
    *,
    mu: float,
    L: float,
    K: int,
    sigma_n: ArrayLike,
    G: float,
    Gamma: float = 0.0,
    q: ArrayLike | None = None,
    d: int,
    c_eff: float,
    w0_dist_sq: float,
    ota_mode: Literal["round", "step"] = "round",
) -> NDArray[np.float64]:
    """§4.6 reference form for K > 1, full participation, Gaussian (α = 2) OTA noise.

    ``E f(w̄_T) − f* ≤ κ/(γ+T−1) · (2B/μ + (μγ/2) E‖w_0 − w*‖²)`` with κ = L/μ,
    γ = max{8κ, K}, η_s = 2/(μ(γ+s)) and
    ``B = Σ_n q_n² σ_n² + 6LΓ + 8(K−1)² G² + B_OTA`` (FedAvg-nonIID; B_OTA from :func:`b_ota`).

    Args:
        T: total local steps (any shape, T ≥ 1). sigma_n: per-UE gradient-noise std ``[N]``.
        G: bound on E‖g_n‖² as G². Gamma: heterogeneity f* − Σ q_n f_n* (loss units).
        q: weights ``[N]`` (default uniform). w0_dist_sq: E‖w_0 − w*‖².
    Returns the bound on the function gap (loss units), shape of ``T``.
    """
    if mu <= 0 or L < mu or K < 1:
        raise AnalyticsError(f"need 0 < mu <= L and K >= 1, got mu={mu}, L={L}, K={K}")
    sig = np.atleast_1d(np.asarray(sigma_n, dtype=np.float64))
    qn = np.full(sig.shape, 1.0 / sig.size) if q is None else np.asarray(q, dtype=np.float64)
    kappa = L / mu
    gam = max(8.0 * kappa, float(K))
    B = (
        float(np.sum(qn**2 * sig**2))
        + 6.0 * L * Gamma
        + 8.0 * (K - 1) ** 2 * G**2
        + b_ota(d=d, c_eff=c_eff, K=K, mode=ota_mode)
    )
    T = np.asarray(T, dtype=np.float64)
    return kappa / (gam + T - 1.0) * (2.0 * B / mu + mu * gam / 2.0 * w0_dist_sq)
