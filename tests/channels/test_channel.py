"""Receivers, fading and power control (model §2.2–§2.5, §8 items 3–5;
§ numbers: docs/explanation/model.md)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from channels import FADING, Channel, ChannelConfig, sas_median_abs, stochastic_quantize
from channels.rng import torch_generator


def channel(receiver: str = "server", **kw) -> Channel:
    """A Channel through ``receiver``; ``alpha`` is shorthand for SαS interference of that index."""
    if "alpha" in kw:
        kw["interference"] = {"name": "sas", "alpha": kw.pop("alpha")}
    return Channel(ChannelConfig(**kw), receiver)


def sample_fading(shape, kind, generator, dtype=torch.float32, **params):
    law = FADING.get(kind)
    return law(law.Params(name=kind, **params)).sample(shape, generator, dtype)


def _data(n: int = 12, d: int = 30, dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, d, generator=g, dtype=dtype)
    q = torch.rand(n, generator=g, dtype=dtype) + 0.1
    return v, q / q.sum()


@pytest.mark.parametrize("receiver", ["server", "relay", "d2d", "digital"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_weighted_average_without_noise(receiver: str, dtype) -> None:
    v, q = _data(dtype=dtype)
    pc = "phase" if receiver == "d2d" else "inversion"
    for fading in ("none", "rayleigh") if receiver in ("server", "relay") else ("none",):
        res = channel(receiver, fading=fading, power_control=pc, h_th=0.0
                      ).transmit(v, q, seed=3, round=1)
        target = q @ v
        assert res.estimate.dtype == dtype
        if receiver in ("relay", "d2d"):
            assert res.estimate.shape == v.shape
            target = target.expand_as(v)
        torch.testing.assert_close(res.estimate, target)
        assert res.dropouts == 0 and bool(res.active.all())


def test_available_mask_renormalises() -> None:
    v, q = _data()
    avail = torch.ones(12, dtype=torch.bool)
    avail[[2, 5]] = False
    for receiver in ("server", "digital"):
        res = channel(receiver).transmit(v, q, seed=0, round=0,
                                                                 available=avail)
        qa = q * avail
        torch.testing.assert_close(res.estimate, (qa / qa.sum()) @ v)
        assert res.n_active == 10


def test_relay_common_equals_server() -> None:
    v, q = _data()
    kw = dict(fading="rayleigh", interference="sas", alpha=1.4, scale=0.5, h_th=0.3)
    srv = channel("server", **kw).transmit(v, q, seed=9, round=4)
    rel = channel("relay", interference_mode="common", **kw).transmit(
        v, q, seed=9, round=4
    )
    assert torch.equal(rel.estimate, srv.estimate.expand_as(rel.estimate))
    assert srv.noise.abs().sum() > 0 and rel.noise_scale == srv.noise_scale
    both = channel("relay", **kw).transmit(v, q, seed=9, round=4)
    assert not torch.equal(both.estimate[0], both.estimate[1])  # per-UE downlink noise
    torch.testing.assert_close(both.noise_common, srv.noise)
    assert both.noise_per_ue.shape == v.shape


def test_seed_round_determinism() -> None:
    v, q = _data()
    ch = channel("d2d", fading="rayleigh", power_control="phase",
                               interference="sas", alpha=1.5, scale=0.2)
    a = ch.transmit(v, q, seed=1, round=2).estimate
    b = ch.transmit(v, q, seed=1, round=2).estimate
    c = ch.transmit(v, q, seed=1, round=3).estimate
    d = ch.transmit(v, q, seed=2, round=2).estimate
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, d)


def test_ota_noise_scales_as_one_over_n() -> None:
    """One interference draw per coordinate divided by N·√ρ: c_eff = c/N at fixed c."""
    d = 20_000
    meds = {}
    for n in (5, 50):
        ch = channel(alpha=1.5, scale=1.0)
        res = ch.transmit(torch.zeros(n, d), seed=0, round=0)
        assert res.noise_scale == pytest.approx(1.0 / n)
        meds[n] = float(res.estimate.abs().median()) / sas_median_abs(1.5)
    assert meds[5] / meds[50] == pytest.approx(10.0, rel=0.05)


def test_noise_scale_with_rho_and_phase() -> None:
    v, _ = _data(n=10)
    res = channel(fading="rayleigh", power_control="phase", rho="cotaf", power=4.0,
                                interference="gaussian", scale=1.0).transmit(v, seed=0, round=0)
    rho = 4.0 / float(v.square().sum(1).max())
    assert res.rho == pytest.approx(rho)
    assert res.noise_scale == pytest.approx(1.0 / (10 * math.sqrt(rho) * math.sqrt(math.pi) / 2))
    assert res.tx_energy == pytest.approx(rho * float(v.square().sum()))


def test_norm_rho_respects_budget_with_inversion() -> None:
    v, _ = _data(n=200)
    res = channel(fading="rayleigh", rho="norm", h_th=0.3, power=2.0).transmit(
        v, seed=1, round=0
    )
    assert res.tx_energy <= 2.0 * res.n_active + 1e-9


def test_phase_only_unbiased_in_expectation() -> None:
    v, q = _data(n=8, d=5)
    ch = channel(fading="rayleigh", power_control="phase")
    est = torch.stack([ch.transmit(v, q, seed=0, round=r).estimate for r in range(3000)])
    err = est.mean(0) - q @ v
    spread = est.std(0) / math.sqrt(3000)
    assert bool((err.abs() < 4 * spread + 1e-12).all())
    assert float(est.std(0).mean()) > 0.01  # the fading really is multiplicative noise


def test_rayleigh_moments_and_dropout() -> None:
    g = torch_generator(0, "fading", 0)
    h = sample_fading((1_000_000,), "rayleigh", g, dtype=torch.float64).abs()
    assert float(h.mean()) == pytest.approx(0.8862, abs=2e-3)
    assert float(h.var()) == pytest.approx(0.2146, abs=2e-3)
    assert float((h < 0.3).double().mean()) == pytest.approx(0.0861, abs=2e-3)
    r = sample_fading((1_000_000,), "rician", g, k=4.0, dtype=torch.float64)
    assert float(r.abs().square().mean()) == pytest.approx(1.0, abs=5e-3)


def test_inversion_dropout_fraction_in_channel() -> None:
    n = 200
    ch = channel(fading="rayleigh", h_th=0.3)
    drops = sum(ch.transmit(torch.ones(n, 2), seed=5, round=r).dropouts for r in range(100))
    assert drops / (100 * n) == pytest.approx(1 - math.exp(-0.09), abs=0.01)


def test_d2d_links_are_independent_per_receiver() -> None:
    v, q = _data(n=6, d=4)
    res = channel("d2d", fading="rayleigh", power_control="phase").transmit(
        v, q, seed=0, round=0
    )
    assert not torch.allclose(res.estimate[0], res.estimate[1])


def test_validation_errors() -> None:
    with pytest.raises(ValueError, match="one-slot D2D"):
        channel("d2d-ideal", power_control="inversion")
    channel("d2d", power_control="inversion")  # slotted D2D pre-equalises one link per slot
    with pytest.raises(ValueError, match="receiver"):
        channel("satellite")
    with pytest.raises(ValueError, match="alpha"):
        channel(alpha=2.5, scale=1.0)
    with pytest.raises(ValueError, match="Rayleigh"):
        channel(fading="rayleigh", power_control="none")
    with pytest.raises(ValueError):
        channel().transmit(torch.zeros(3), seed=0, round=0)
    assert channel("d2d", power_control="phase",
                                 interference_mode="common").interference_mode == "per_ue"


def test_gaussian_scale_equals_sas_two() -> None:
    v = torch.zeros(4, 200_000, dtype=torch.float64)
    g = channel(interference="gaussian", scale=0.5).transmit(v, seed=0, round=0)
    s = channel(alpha=2.0, scale=0.5).transmit(v, seed=0, round=0)
    for res in (g, s):  # N(0, 2c²) per coordinate, divided by N = 4
        assert float(res.estimate.var()) == pytest.approx(2 * 0.5**2 / 16, rel=0.02)


def test_quantiser_unbiased_and_levels() -> None:
    g = torch.Generator().manual_seed(0)
    v = torch.randn(2, 7, dtype=torch.float64, generator=g)
    reps = torch.stack([stochastic_quantize(v, 2, torch_generator(0, "q", r)) for r in range(4000)])
    torch.testing.assert_close(reps.mean(0), v, atol=0.03, rtol=0)
    for row in range(2):
        assert len(torch.unique(reps[:, row])) <= 4
    lo, hi = v.min(1, keepdim=True).values, v.max(1, keepdim=True).values
    k = (reps - lo) / ((hi - lo) / 3)
    torch.testing.assert_close(k, k.round(), atol=1e-9, rtol=0)


def test_digital_quantised_estimate_has_the_hand_computed_law() -> None:
    """1-bit stochastic quantisation of two UEs, weights (1/4, 3/4): every estimate entry is
    ``¼·Q1 + ¾·Q2`` with Q_n on UE n's two levels {min, max}, up with probability
    (v − min)/(max − min). Hand computation, entry by entry:

    - entry 0 (both at their minimum): exactly ¼·0 + ¾·1 = 0.75;
    - entry 1 (UE 0 at 0.25 of its step, UE 1 at its maximum): 2.25 (p ¾) or 2.5 (p ¼);
    - entry 2 (fractions 0.5 and 0.6): 0.75 (p .2), 1.0 (p .2), 2.25 (p .3), 2.5 (p .3);
    - entry 3 (UE 0 at its maximum, UE 1 at 0.2): 1.0 (p .8), 2.5 (p .2).
    """
    v = torch.tensor([[0.0, 0.25, 0.5, 1.0], [1.0, 3.0, 2.2, 1.4]], dtype=torch.float64)
    q = torch.tensor([0.25, 0.75], dtype=torch.float64)
    exact = torch.tensor([0.75, 2.3125, 1.775, 1.3], dtype=torch.float64)  # ¼ v_0 + ¾ v_1 by hand
    ch = channel("digital", quant_bits=1)
    reps = 4000
    est = torch.stack([ch.transmit(v, q, seed=0, round=r).estimate for r in range(reps)])
    laws = {0: {0.75: 1.0}, 1: {2.25: 0.75, 2.5: 0.25},
            2: {0.75: 0.2, 1.0: 0.2, 2.25: 0.3, 2.5: 0.3}, 3: {1.0: 0.8, 2.5: 0.2}}
    for j, law in laws.items():
        col = est[:, j]
        hits = torch.zeros(reps, dtype=torch.bool)
        for value, p in law.items():
            at = (col - value).abs() < 1e-12
            hits |= at
            freq = float(at.double().mean())
            assert abs(freq - p) <= 4.5 * math.sqrt(p * (1 - p) / reps) + 1e-12, (j, value, freq, p)
        assert bool(hits.all()), f"entry {j} left its hand-computed support"
    torch.testing.assert_close(est.mean(0), exact, atol=0.03, rtol=0)  # unbiased (E Q = v)
    one = ch.transmit(v, q, seed=0, round=0)
    torch.testing.assert_close(one.noise, one.estimate - exact)
    assert one.noise_scale == 0.0 and one.n_active == 2


@pytest.mark.parametrize(("interference", "ref"), [
    ("gaussian", lambda c: stats.norm(scale=math.sqrt(2.0) * c)),   # SαS(2, c) = N(0, 2c²)
    ({"name": "sas", "alpha": 1.0}, lambda c: stats.cauchy(scale=c)),  # SαS(1, c) = Cauchy(c)
])
def test_server_noise_has_the_declared_law(interference, ref) -> None:
    """Zero payload, N = 5 UEs, ρ = P = 4 (nothing to scale), phase-only control on Rayleigh fading
    (μ = E|h| = √π/2): every coordinate of the estimate is pure interference, i.i.d. with the
    interference law at scale c/(N·√ρ·μ) = 0.6/(5·2·√π/2); Kolmogorov–Smirnov against scipy's
    closed-form law, and the same test rejects the law at 1.2× that scale."""
    n, d, c = 5, 20_000, 0.6
    res = channel(fading="rayleigh", power_control="phase", rho="fixed", power=4.0, interference=interference,
                  scale=c).transmit(torch.zeros(n, d, dtype=torch.float64), seed=4, round=2)
    c_eff = c / (n * 2.0 * math.sqrt(math.pi) / 2.0)
    assert res.noise_scale == pytest.approx(c_eff, rel=1e-12)
    x = res.estimate.numpy()
    assert stats.kstest(x, ref(c_eff).cdf).pvalue > 1e-3
    assert stats.kstest(x, ref(1.2 * c_eff).cdf).pvalue < 1e-6


@pytest.mark.parametrize("receiver", ["server", "relay", "d2d", "digital"])
def test_a_float32_payload_whose_squared_norm_overflows_is_still_received(receiver: str) -> None:
    """Entries of 1e20 are finite in float32, their squared norm (1e42) is not: ρ and the energy
    come from the float64 norm, P / max‖v‖² by hand, not 0 (which divided by zero), and under
    ρ = "full" the UE that needs the most energy spends exactly P (ρ·‖v‖² would underflow in float32)."""
    v = torch.full((4, 100), 1e20, dtype=torch.float32)
    v[1] *= 0.5
    pc = "phase" if receiver == "d2d" else "inversion"
    res = channel(receiver, power_control=pc, rho="full", power=2.0, interference="gaussian",
                  scale=1.0).transmit(v, seed=0, round=0)
    norm_sq = 100 * 1e40  # the largest ‖v_n‖², in float64 arithmetic
    if receiver == "digital":
        assert res.tx_energy == pytest.approx((4 * 0.25) ** 2 * norm_sq * (3 + 0.25), rel=1e-6)
    else:
        assert res.tx_energy_max == pytest.approx(1.0, rel=1e-6)
    if receiver in ("server", "relay"):
        assert res.rho == pytest.approx(2.0 / norm_sq, rel=1e-6)
        assert res.gain > 0
