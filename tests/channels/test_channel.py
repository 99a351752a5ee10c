"""Receivers, fading and power control (model §2.2–§2.5, §8 items 3–5;
§ numbers: docs/explanation/model.md)."""

from __future__ import annotations

import math

import pytest
import torch

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


def test_digital_quantised_estimate() -> None:
    v, q = _data()
    res = channel("digital", quant_bits=8).transmit(v, q, seed=0, round=0)
    torch.testing.assert_close(res.estimate - res.noise, q @ v)
    assert 0 < float(res.noise.abs().max()) < float((v.max() - v.min()) / 255)
