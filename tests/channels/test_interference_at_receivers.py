"""The interference a Channel actually adds, against scipy's stable law; the relay's faded
downlink; the reported SNR; shared and independent draws across tail indices (model §2.4, §2.5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from channels import Channel, ChannelConfig

EULER = 0.5772156649015329


def sas(alpha: float, **kw) -> dict:
    return {"name": "sas", "alpha": alpha, **kw}


def stable_cdf(alpha: float, scale: float):
    """scipy's SαS(α, scale) cdf, tabulated on a sinh grid (its pointwise cdf is slow)."""
    if alpha == 2.0:
        return stats.norm(scale=math.sqrt(2.0) * scale).cdf
    x = scale * np.sinh(np.linspace(-9.0, 9.0, 1201))
    cdf = stats.levy_stable.cdf(x, alpha, 0.0, scale=scale)
    return lambda v: np.interp(v, x, cdf, left=0.0, right=1.0)


@pytest.mark.parametrize("alpha", [1.2, 1.5, 2.0])
def test_server_noise_at_zero_payload_is_sas_at_c_over_gain(alpha: float) -> None:
    """V = 0: the estimate is the interference alone, SαS(α, c/(N·√P)) per coordinate."""
    n, d, c, power = 4, 20_000, 0.7, 2.0
    ch = Channel(ChannelConfig(interference=sas(alpha), scale=c, power=power), "server")
    res = ch.transmit(torch.zeros(n, d, dtype=torch.float64), seed=0, round=3)
    scale = c / (n * math.sqrt(power))
    assert res.noise_scale == pytest.approx(scale)
    assert stats.kstest(res.estimate.numpy(), stable_cdf(alpha, scale)).pvalue > 0.01
    wrong = stats.kstest(res.estimate.numpy(), stable_cdf(alpha, 1.2 * scale)).pvalue
    assert wrong < 1e-6  # the test sees a 20 % error in the scale


@pytest.mark.parametrize("alpha", [1.3, 1.7])
def test_relay_common_plus_per_ue_noise_combines_as_stable_scales(alpha: float) -> None:
    """Relay without fading, common+per_ue: UE m hears the uplink draw (scale c1 = c/gain) plus its
    own (c2 = c·downlink_scale/gain), which together are SαS((c1^α + c2^α)^{1/α})."""
    n, d, c, k = 3, 20_000, 1.0, 0.6
    ch = Channel(ChannelConfig(interference=sas(alpha), scale=c, downlink_scale=k), "relay")
    res = ch.transmit(torch.zeros(n, d, dtype=torch.float64), seed=1, round=0)
    c1, c2 = c / n, c * k / n
    combined = (c1**alpha + c2**alpha) ** (1 / alpha)
    assert res.noise_scale == pytest.approx(combined)
    for m in range(n):
        assert stats.kstest(res.estimate[m].numpy(), stable_cdf(alpha, combined)).pvalue > 0.01
    # the per-UE parts are independent across UEs: their difference is SαS at 2^{1/α}·c2
    diff = (res.estimate[0] - res.estimate[1]).numpy()
    assert stats.kstest(diff, stable_cdf(alpha, 2 ** (1 / alpha) * c2)).pvalue > 0.01


def test_relay_downlink_drops_ues_at_the_fading_law_rate() -> None:
    """Rayleigh downlink: P(|g_m| < t) = 1 − exp(−t²); a delivered UE's own noise is enhanced by
    1/|g_m| (by at most 1/t) relative to the constant-scale case."""
    n, t = 50, 0.5
    ch = Channel(ChannelConfig(fading="rayleigh", power_control="phase", interference="gaussian", scale=1.0,
                               downlink_h_th=t), "relay")
    missed, scales = 0, []
    for rnd in range(200):
        res = ch.transmit(torch.ones(n, 3, dtype=torch.float64), seed=0, round=rnd)
        missed += int((~res.delivered).sum())
        per_ue = res.noise_scale_per_ue
        floor = 1.0 / (n * math.sqrt(res.rho) * math.sqrt(math.pi) / 2)
        scales.append(per_ue[res.delivered] / floor)
    rate = missed / (200 * n)
    expected = 1 - math.exp(-t * t)
    assert rate == pytest.approx(expected, abs=3 * math.sqrt(expected * (1 - expected) / (200 * n)))
    enhancement = torch.cat(scales)
    assert float(enhancement.min()) > 0.0 and float(enhancement.max()) <= 1 / t + 1e-12
    # E[1/|g| ; |g| ≥ t] / P(|g| ≥ t) for Rayleigh: ∫_t^∞ 2 e^{-r²} dr / e^{-t²} = √π·erfc(t)/e^{-t²}
    assert float(enhancement.mean()) == pytest.approx(math.sqrt(math.pi) * math.erfc(t) / math.exp(-t * t),
                                                      rel=0.02)


def test_relay_ideal_downlink_delivers_to_everyone() -> None:
    ch = Channel(ChannelConfig(fading="rayleigh", power_control="phase", interference="gaussian", scale=1.0,
                               interference_mode="common", downlink_h_th=5.0), "relay")
    res = ch.transmit(torch.ones(6, 3, dtype=torch.float64), seed=0, round=0)
    assert res.delivered is None or bool(res.delivered.all())


def test_snr_db_is_signal_power_over_squared_geometric_power() -> None:
    """The geometric power of the noise is exp(E ln|ξ|), estimated from the added noise itself; for
    N(0, 2c²) it is c·e^{−γ/2} (γ: Euler's constant)."""
    n, d = 5, 40_000
    g = torch.Generator().manual_seed(0)
    v = torch.randn(n, d, generator=g, dtype=torch.float64) + 0.3
    res = Channel(ChannelConfig(interference="gaussian", scale=2.0), "server").transmit(v, seed=0, round=0)
    signal = res.estimate - res.noise
    s0_empirical = float(torch.exp(torch.log(res.noise.abs()).mean()))
    assert s0_empirical == pytest.approx(res.noise_scale * math.exp(-EULER / 2), rel=0.01)
    by_hand = 10 * math.log10(float(signal.square().mean()) / s0_empirical**2)
    assert res.snr_db == pytest.approx(by_hand, abs=0.1)


def test_full_power_makes_the_snr_independent_of_the_payload_size() -> None:
    """The default scaling: ×1000 on what the UEs send leaves the SNR as it was."""
    g = torch.Generator().manual_seed(1)
    v = torch.randn(8, 500, generator=g, dtype=torch.float64)
    ch = Channel(ChannelConfig(fading="rayleigh", interference="gaussian", scale=0.3), "server")
    small, large = (ch.transmit(x, seed=0, round=0) for x in (v, 1000 * v))
    assert small.snr_db == pytest.approx(large.snr_db, abs=1e-9)
    fixed = Channel(ChannelConfig(fading="rayleigh", interference="gaussian", scale=0.3, rho="fixed-unbounded"),
                    "server")
    assert fixed.transmit(1000 * v, seed=0, round=0).snr_db == pytest.approx(
        fixed.transmit(v, seed=0, round=0).snr_db + 60, abs=1e-6)


def test_common_draws_share_random_numbers_across_alpha_and_independent_ones_do_not() -> None:
    """CMS samples from the same (U, W) keep their signs across α (sign(sin αU) = sign U for α < 2);
    independent draws agree in sign about half the time."""
    zeros = torch.zeros(2, 10_000, dtype=torch.float64)

    def noise(alpha: float, draws: str) -> torch.Tensor:
        cfg = ChannelConfig(interference=sas(alpha, draws=draws), scale=1.0)
        return Channel(cfg, "server").transmit(zeros, seed=5, round=7).noise

    same = float((noise(1.2, "common").sign() == noise(1.8, "common").sign()).double().mean())
    indep = float((noise(1.2, "independent").sign() == noise(1.8, "independent").sign()).double().mean())
    assert same == 1.0
    assert indep == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("alpha", [1.95, 1.99, 1.999])
def test_shared_draws_approach_the_gaussian_case_as_alpha_tends_to_two(alpha: float) -> None:
    """With common random numbers the noise at α → 2 converges draw by draw to the α = 2 noise,
    which is N(0, 2c²)."""
    zeros = torch.zeros(3, 20_000, dtype=torch.float64)

    def noise(a: float) -> torch.Tensor:
        return Channel(ChannelConfig(interference=sas(a), scale=1.0), "server").transmit(zeros, seed=0, round=1).noise

    at_two = noise(2.0)
    gap = float((noise(alpha) - at_two).abs().median() / at_two.abs().median())
    assert 0.05 * (2.0 - alpha) < gap < 0.5 * (2.0 - alpha)  # shrinks linearly in 2 − α, but is not 0
    assert stats.kstest(at_two.numpy() * 3, stats.norm(scale=math.sqrt(2)).cdf).pvalue > 0.01


@pytest.mark.parametrize("alpha", [1.3, 1.7])
def test_isotropic_vectors_through_the_channel(alpha: float) -> None:
    """vector = 'isotropic': each round's noise vector is √A·G, so (i) one coordinate across
    independent rounds is SαS(α, c/gain) and (ii) within one round the coordinates are Gaussian
    with one shared variance (KS against the normal after standardising), which the i.i.d. vector
    of the same law is not."""
    n, d, rounds, c = 4, 2_000, 300, 0.5
    zeros = torch.zeros(n, d, dtype=torch.float64)

    def noise(vector: str, r: int) -> np.ndarray:
        cfg = ChannelConfig(interference=sas(alpha, vector=vector), scale=c)
        return Channel(cfg, "server").transmit(zeros, seed=2, round=r).estimate.numpy()

    iso = np.stack([noise("isotropic", r) for r in range(rounds)])
    assert stats.kstest(iso[:, 0], stable_cdf(alpha, c / n)).pvalue > 0.01
    within = [stats.kstest(v / v.std(), "norm").pvalue for v in iso[:20]]
    assert min(within) > 1e-3, within
    iid = noise("iid", 0)
    assert stats.kstest(iid / iid.std(), "norm").pvalue < 1e-6
    # the shared variance changes from round to round (it is the stable A, not a constant)
    stds = iso.std(axis=1)
    assert stds.max() / stds.min() > 3.0


def test_relay_per_ue_downlink_noise_scales_with_downlink_scale() -> None:
    """interference_mode = 'per_ue', no fading: UE m hears only its own downlink draw, Gaussian
    N(0, 2·(c·s_DL/N)²) for s_DL = 0.25; the KS test sees a 20 % error in s_DL."""
    n, d, c, k = 3, 20_000, 1.0, 0.25
    cfg = ChannelConfig(interference="gaussian", scale=c, downlink_scale=k, interference_mode="per_ue")
    res = Channel(cfg, "relay").transmit(torch.zeros(n, d, dtype=torch.float64), seed=4, round=2)
    sd = math.sqrt(2.0) * c * k / n
    for m in range(n):
        assert stats.kstest(res.estimate[m].numpy(), stats.norm(scale=sd).cdf).pvalue > 0.01
        assert stats.kstest(res.estimate[m].numpy(), stats.norm(scale=1.2 * sd).cdf).pvalue < 1e-6
    assert abs(np.corrcoef(res.estimate[0].numpy(), res.estimate[1].numpy())[0, 1]) < 0.03


@pytest.mark.parametrize("receiver", ["d2d", "d2d-ideal"])
def test_d2d_snr_is_measured_on_the_noise_free_signal(receiver: str) -> None:
    """No fading, no power control, equal weights: every slot decodes the plain mean of the rows
    (by hand), so snr_db = 10·log10(mean(v̄²) / S0²) with S0 = c_slot·e^{−γ/2}, not the power of
    signal plus noise."""
    n, d = 5, 20_000
    g = torch.Generator().manual_seed(3)
    v = torch.randn(n, d, generator=g, dtype=torch.float64) * 0.1 + 0.2
    cfg = ChannelConfig(interference="gaussian", scale=2.0, power_control="none")
    res = Channel(cfg, receiver).transmit(v, seed=0, round=0)
    s0 = res.noise_scale * math.exp(-EULER / 2)
    by_hand = 10 * math.log10(float(v.mean(0).square().mean()) / s0**2)
    assert res.snr_db == pytest.approx(by_hand, abs=1e-6)
    torch.testing.assert_close(res.estimate - res.noise_per_ue, v.mean(0).expand(n, -1))


def test_relay_noise_scale_is_the_median_over_ues_that_heard_the_downlink() -> None:
    """downlink_h_th = 1.2 drops a UE with probability 1 − e^{−1.44} ≈ 76 %: a median that counted
    the missed UEs as noiseless would report the uplink's scale alone."""
    cfg = ChannelConfig(fading="rayleigh", power_control="phase", interference="gaussian", scale=1.0,
                        downlink_h_th=1.2)
    res = Channel(cfg, "relay").transmit(torch.ones(12, 50, dtype=torch.float64), seed=0, round=1)
    heard = res.delivered
    assert 0 < int(heard.sum()) < 6  # most UEs missed it this round
    per_ue = torch.as_tensor(res.noise_scale_per_ue)[heard]
    assert bool((per_ue > 0).all())
    both = math.hypot(res.noise_scale_common, float(per_ue.median()))  # Gaussian scales add in quadrature
    assert res.noise_scale == pytest.approx(both)
    assert res.noise_scale > res.noise_scale_common * 1.01
