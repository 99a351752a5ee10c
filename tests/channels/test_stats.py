"""Distribution facts and estimators (model §2.4, §8 items 2–3; § numbers: docs/explanation/model.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from channels import (
    hill_estimator,
    interference_scale,
    mean_scale,
    sample_sas,
    sas_fractional_moment,
    sas_median_abs,
    tail_slope_estimator,
)
from channels.rng import torch_generator


def _sample(alpha: float, n: int, seed: int = 0) -> torch.Tensor:
    return sample_sas((n,), alpha, generator=torch_generator(seed, "interference", 0))


def test_fractional_moment_facts() -> None:
    assert sas_fractional_moment(1.0, 1.5) == pytest.approx(1.7055, abs=1e-4)
    assert sas_fractional_moment(1.5, 1.5) == math.inf
    assert sas_fractional_moment(2.0, 2.0) == pytest.approx(2.0)  # E X² of N(0, 2)


@pytest.mark.parametrize("alpha", [0.8, 1.3, 1.6, 1.9])
def test_median_abs_matches_scipy(alpha: float) -> None:
    assert sas_median_abs(alpha) == pytest.approx(stats.levy_stable.ppf(0.75, alpha, 0), abs=1e-5)


def test_median_abs_reference_values() -> None:
    assert sas_median_abs(2.0) == pytest.approx(math.sqrt(2) * 0.67449, abs=1e-4)
    assert sas_median_abs(1.6) == pytest.approx(0.965, abs=2e-3)
    assert sas_median_abs(1.0) == 1.0


@pytest.mark.parametrize("alpha", [1.2, 1.5, 1.6])
def test_hill_recovers_alpha(alpha: float) -> None:
    x = _sample(alpha, 1_000_000, seed=1)
    assert abs(hill_estimator(x, k_frac=0.005) - alpha) < 0.1


def test_hill_ignores_nonfinite_and_accepts_numpy() -> None:
    """Non-finite entries are dropped: the estimate equals the one on the finite entries alone
    (an exact equivalence), whether given as a numpy array or a torch tensor."""
    clean = _sample(1.2, 200_000, seed=2).numpy().reshape(400, 500).copy()
    x = clean.copy()
    x[0, :10] = np.nan
    x[1, :10] = np.inf
    x[2, :5] = -np.inf
    finite = np.concatenate([clean[0, 10:], clean[1, 10:], clean[2, 5:], clean[3:].ravel()])
    assert hill_estimator(x) == hill_estimator(finite)
    assert hill_estimator(torch.from_numpy(x)) == hill_estimator(finite)
    assert abs(hill_estimator(x) - 1.2) < 0.1


@pytest.mark.parametrize("estimator", [hill_estimator, tail_slope_estimator])
def test_tail_estimators_separate_two_alphas_on_scipy_samples(estimator) -> None:
    """On scipy's own stable sampler (independent of channels.stable), 300k samples at α = 1.1
    and α = 1.5: each estimate lies within 0.12 of its own α, so the two tolerance bands are
    disjoint and no constant answer can pass both (Hill's standard error here is α/√1500 ≈ 0.03)."""
    est = {a: estimator(stats.levy_stable.rvs(a, 0.0, size=300_000, random_state=np.random.default_rng(7)))
           for a in (1.1, 1.5)}
    for a, e in est.items():
        assert abs(e - a) < 0.12, est
    assert est[1.5] - est[1.1] > 0.24, est


@pytest.mark.parametrize("alpha", [1.8, 1.9])
def test_tail_slope_near_two(alpha: float) -> None:
    x = _sample(alpha, 2_000_000, seed=3)
    assert abs(tail_slope_estimator(x) - alpha) < 0.15


def test_tail_slope_gaussian_is_light() -> None:
    x = _sample(2.0, 1_000_000, seed=4)
    assert tail_slope_estimator(x) > 5.0
    assert tail_slope_estimator(x, cap=2.0) == 2.0


@pytest.mark.parametrize(("alpha", "n"), [(1.5, 50), (1.2, 20), (2.0, 50)])
def test_stability_mean_scaling(alpha: float, n: int) -> None:
    """median |mean of n copies| = median|SαS(1)| · n^{1/α−1} (§2.4: 0.27 at n=50, α=1.5)."""
    g = torch_generator(5, "interference", 0)
    x = sample_sas((20_000, n), alpha, generator=g, dtype=torch.float64)
    ratio = float(x.mean(dim=1).abs().median()) / sas_median_abs(alpha)
    assert ratio == pytest.approx(mean_scale(alpha, 1.0, n), rel=0.04)


def test_interference_scale_conversions() -> None:
    assert interference_scale(1.5, scale=0.3) == 0.3
    assert interference_scale(1.5, dispersion=0.3**1.5) == pytest.approx(0.3)
    c = interference_scale(1.5, gsnr_db=10.0, power=2.0)
    s0 = c * math.exp(0.5772156649) ** (1 / 1.5 - 1)
    assert 10 * math.log10(2.0 / s0**2) == pytest.approx(10.0)
    with pytest.raises(ValueError):
        interference_scale(1.5, scale=1.0, gsnr_db=3.0)
    with pytest.raises(ValueError):
        interference_scale(1.5)


@pytest.mark.parametrize("k", [0.0, 0.5, 3.0, 40.0])
def test_rician_mean_abs_against_scipy_rice(k: float) -> None:
    """E|h| of unit-power Rician fading is the mean of a Rice law with ν² = K/(K+1) and
    2σ² = 1/(K+1) (K = 0: Rayleigh, √π/2); a negative K is refused."""
    from channels.stats import rician_mean_abs

    sigma = math.sqrt(1 / (2 * (k + 1)))
    ref = stats.rice(b=math.sqrt(k / (k + 1)) / sigma, scale=sigma).mean()
    assert rician_mean_abs(k) == pytest.approx(ref, rel=1e-10)
    with pytest.raises(ValueError, match="K"):
        rician_mean_abs(-0.1)
