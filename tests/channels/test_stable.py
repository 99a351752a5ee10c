"""SαS and positive-stable samplers against scipy and the facts of model §2.4/§8
(§ numbers: docs/explanation/model.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from channels import (
    geometric_power,
    sample_positive_stable,
    sample_sas,
    sample_sas_isotropic,
    sas_fractional_moment,
)
from channels.rng import torch_generator


def _gen(seed: int = 0, round: int = 0) -> torch.Generator:
    return torch_generator(seed, "interference", round)


def _interp_cdf(alpha: float, scale: float):
    """levy_stable's cdf is slow: tabulate it on a sinh grid and interpolate (error << 1e-3)."""
    x = scale * np.sinh(np.linspace(-9.0, 9.0, 1201))
    cdf = stats.levy_stable.cdf(x, alpha, 0.0, scale=scale)
    return lambda v: np.interp(v, x, cdf, left=0.0, right=1.0)


@pytest.mark.parametrize("alpha", [0.8, 1.0, 1.2, 1.5, 1.8, 2.0])
def test_ks_against_scipy(alpha: float) -> None:
    scale = 1.7
    x = sample_sas((20_000,), alpha, scale, generator=_gen(1)).double().numpy()
    assert np.isfinite(x).all()
    if alpha == 2.0:
        cdf = stats.norm(scale=math.sqrt(2.0) * scale).cdf
    else:
        cdf = _interp_cdf(alpha, scale)
    assert stats.kstest(x, cdf).pvalue > 0.01


def test_ks_detects_wrong_alpha() -> None:
    """The KS check has power: samples at α = 1.5 fail against α = 1.3."""
    x = sample_sas((20_000,), 1.5, generator=_gen(2)).double().numpy()
    assert stats.kstest(x, _interp_cdf(1.3, 1.0)).pvalue < 1e-3


def test_gaussian_variance() -> None:
    c = 0.7
    x = sample_sas((1_000_000,), 2.0, c, generator=_gen(3), dtype=torch.float64)
    assert abs(float(x.var()) / (2 * c**2) - 1.0) < 0.01


@pytest.mark.parametrize(
    ("alpha", "m_ref", "s0_ref"),
    [(1.2, 1.3595, 0.9083), (1.5, 1.2775, 0.8250), (1.8, 1.1910, 0.7737), (2.0, 1.1284, 0.7493)],
)
def test_fractional_moment_and_geometric_power(alpha: float, m_ref: float, s0_ref: float) -> None:
    c = 2.5
    p = alpha / 2
    assert sas_fractional_moment(p, alpha) == pytest.approx(m_ref, abs=1e-4)
    assert geometric_power(alpha, 1.0) == pytest.approx(s0_ref, abs=1e-4)
    x = sample_sas((1_000_000,), alpha, c, generator=_gen(4), dtype=torch.float64).abs()
    assert float(x.pow(p).mean()) / (m_ref * c**p) == pytest.approx(1.0, abs=0.02)
    assert math.exp(float(x.log().mean())) / (s0_ref * c) == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("alpha", [0.3, 0.9, 1.0, 1.5, 2.0])
def test_float32_finite_and_edges(alpha: float) -> None:
    x = sample_sas((500_000,), alpha, generator=_gen(5))
    assert x.dtype == torch.float32 and bool(torch.isfinite(x).all())


def test_same_seed_same_samples_other_round_differs() -> None:
    a = sample_sas((1000,), 1.5, generator=torch_generator(7, "interference", 3))
    b = sample_sas((1000,), 1.5, generator=torch_generator(7, "interference", 3))
    c = sample_sas((1000,), 1.5, generator=torch_generator(7, "interference", 4))
    d = sample_sas((1000,), 1.5, generator=torch_generator(7, "interference", 3, ue=1))
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, d)


def test_shapes_and_dtype() -> None:
    x = sample_sas((3, 4, 5), 1.3, generator=_gen(), dtype=torch.float64)
    assert x.shape == (3, 4, 5) and x.dtype == torch.float64
    with pytest.raises(ValueError):
        sample_sas((3,), 2.5, generator=_gen())


@pytest.mark.parametrize("alpha", [0.3, 0.6, 0.9])
def test_positive_stable_laplace_transform(alpha: float) -> None:
    """S_α(σ, 1, 0) with σ = cos(πα/2)^{1/α} has E e^{-sA} = exp(-s^α) exactly.

    (scipy's levy_stable.ppf is off by >10 % in the upper quantiles for β = 1, α = 0.3, so the
    exact Laplace transform is the reference here.)"""
    sigma = math.cos(math.pi * alpha / 2) ** (1 / alpha)
    a = sample_positive_stable((200_000,), alpha, 2.0 * sigma, generator=_gen(8)).double()
    assert bool((a > 0).all())
    for s in (0.1, 1.0, 5.0):
        lt = float(torch.exp(-s * a / 2.0).mean())
        assert lt == pytest.approx(math.exp(-(s**alpha)), abs=4e-3)


def test_positive_stable_median_against_scipy() -> None:
    x = sample_positive_stable((20_000,), 0.7, 1.3, generator=_gen(12)).double().numpy()
    ref = stats.levy_stable.ppf([0.25, 0.5], 0.7, 1.0, scale=1.3)
    np.testing.assert_allclose(np.quantile(x, [0.25, 0.5]), ref, rtol=0.04)


@pytest.mark.parametrize("alpha", [1.2, 1.5, 1.8, 1.9])
def test_isotropic_marginals_match_scalar(alpha: float) -> None:
    c = 0.8
    iso = sample_sas_isotropic((150_000, 2), alpha, c, generator=_gen(9)).abs().double()
    iid = sample_sas((300_000,), alpha, c, generator=_gen(10)).abs().double()
    qs = torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64)
    np.testing.assert_allclose(
        torch.quantile(iso[:, 0], qs).numpy(), torch.quantile(iid, qs).numpy(), rtol=0.03
    )
    # coordinates of one isotropic vector are dependent (shared A): |ξ1| and |ξ2| correlate
    rho = stats.spearmanr(iso[:, 0].numpy(), iso[:, 1].numpy())[0]
    assert rho > 0.015


def test_isotropic_alpha2_is_gaussian() -> None:
    x = sample_sas_isotropic((100_000, 3), 2.0, 1.0, generator=_gen(11), dtype=torch.float64)
    assert abs(float(x.var()) / 2.0 - 1.0) < 0.02


def test_positive_stable_edge_cases() -> None:
    """α = 1 is the constant ``scale`` (the limit the isotropic sampler uses at α = 2); α > 1 has
    no totally skewed positive law and is refused; the default scale is 1 (the standard law of
    the Laplace transform exp(-s^α) times cos(πα/2)^{-1/α})."""
    ones = sample_positive_stable((1000,), 1.0, 2.5, generator=_gen(3), dtype=torch.float64)
    assert bool((ones == 2.5).all())
    with pytest.raises(ValueError, match="alpha"):
        sample_positive_stable((3,), 1.2, generator=_gen())
    default = sample_positive_stable((50,), 0.6, generator=_gen(4), dtype=torch.float64)
    unit = sample_positive_stable((50,), 0.6, 1.0, generator=_gen(4), dtype=torch.float64)
    assert torch.equal(default, unit)
