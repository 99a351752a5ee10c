"""The per-UE power budget and the matched filter, recomputed from the transmit coefficients p_n
written out by hand (model §2.2–§2.3; § numbers: docs/explanation/model.md).

UE n puts ``p_n·u_n`` on the air (``u_n = N_act·w_n·v_n``) and spends ``|p_n|²·‖u_n‖²``; the
receiver takes the real part of ``Σ_n h_n p_n u_n + ξ`` and divides by ``N_act·√ρ·μ``. These tests
form p_n from the textbook laws (inversion ``√ρ ĥ*/|ĥ|²``, phase-only ``√ρ ĥ*/|ĥ|``, none ``√ρ``),
not from the power-control classes, and check the Channel against them."""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch

from channels import Channel, ChannelConfig
from channels.receivers.noise import draw_links

RULES = ("full", "fixed", "norm", "cotaf")
LAWS = {  # (fading, power control): every combination a server can use
    "rayleigh-inversion": ({"name": "rayleigh"}, "inversion"),
    "rayleigh-phase": ({"name": "rayleigh"}, "phase"),
    "rician-inversion": ({"name": "rician", "k": 2.0}, "inversion"),
    "rician-phase": ({"name": "rician", "k": 2.0}, "phase"),
    "rician-none": ({"name": "rician", "k": 2.0}, "none"),
}


def payload(n: int, d: int, magnitude: float, seed: int) -> torch.Tensor:
    """Rows of very different norms (a straggler's update next to a large model)."""
    g = torch.Generator().manual_seed(seed)
    spread = torch.logspace(-2, 1, n, dtype=torch.float64)[torch.randperm(n, generator=g)]
    return magnitude * spread.unsqueeze(1) * torch.randn(n, d, generator=g, dtype=torch.float64)


def coefficients(control: str, h_est: torch.Tensor, rho: float, h_th: float) -> torch.Tensor:
    """p_n by hand (0 for a UE that truncated inversion silences)."""
    mag = h_est.abs()
    if control == "inversion":
        return torch.where(mag >= h_th, math.sqrt(rho) * h_est.conj() / mag.square(), torch.zeros_like(h_est))
    if control == "phase":
        return math.sqrt(rho) * h_est.conj() / mag
    return torch.full_like(h_est, math.sqrt(rho))


def rician_mean_abs(k: float) -> float:
    """E|h| for unit-power Rician fading: a Rice law with ν² = K/(K+1), 2σ² = 1/(K+1)."""
    sigma = math.sqrt(1 / (2 * (k + 1)))
    return float(scipy.stats.rice(b=math.sqrt(k / (k + 1)) / sigma, scale=sigma).mean())


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("law", list(LAWS))
@pytest.mark.parametrize("magnitude", [1e-4, 1.0, 1e4])  # a gradient late in training ... a whole model
def test_every_ue_stays_within_the_budget(rule: str, law: str, magnitude: float) -> None:
    fading, control = LAWS[law]
    power, n, d = 2.5, 12, 16
    ch = Channel(ChannelConfig(fading=fading, power_control=control, rho=rule, power=power, csi_error=0.05,
                               interference="gaussian", scale=0.1), "server")
    worst = 0.0
    for rnd in range(40):  # 40 fading draws
        v = payload(n, d, magnitude, seed=rnd)
        res = ch.transmit(v, seed=3, round=rnd)
        _, h_est = draw_links(ch, (n,), 3, rnd, torch.float64)
        p = coefficients(control, h_est, res.rho, ch.config.h_th)
        energy = p.abs().square() * v.square().sum(1)  # equal weights: u_n = N_act·(1/N_act)·v_n = v_n
        assert float(energy.max()) <= power * (1 + 1e-9)
        assert res.tx_energy_max == pytest.approx(float(energy.max()) / power, rel=1e-9)
        assert res.tx_energy == pytest.approx(float(energy.sum()), rel=1e-9)
        if rule == "full":  # the UE that needs the most energy transmits at exactly P
            assert res.tx_energy_max == pytest.approx(1.0, rel=1e-9)
        worst = max(worst, res.tx_energy_max)
    assert worst > 0.0


@pytest.mark.parametrize("receiver", ["relay", "d2d", "d2d-ideal"])
@pytest.mark.parametrize("rule", RULES)
def test_per_ue_receivers_stay_within_the_budget(receiver: str, rule: str) -> None:
    control = "phase" if receiver == "d2d-ideal" else "inversion"
    ch = Channel(ChannelConfig(fading="rayleigh", power_control=control, rho=rule, power=0.7,
                               interference="gaussian", scale=0.1), receiver)
    for rnd in range(30):
        res = ch.transmit(payload(8, 10, 10.0 ** (rnd % 7 - 3), seed=rnd), seed=1, round=rnd)
        assert 0.0 < res.tx_energy_max <= 1.0 + 1e-9
        assert res.snr_db is not None and math.isfinite(res.snr_db)


def test_the_unbounded_rule_exceeds_the_budget_and_says_so() -> None:
    ch = Channel(ChannelConfig(fading="rayleigh", rho="fixed-unbounded", power=1.0), "server")
    maxima = [ch.transmit(payload(12, 16, 1.0, seed=r), seed=0, round=r).tx_energy_max for r in range(20)]
    assert max(maxima) > 10.0  # 1/|h|² up to 1/h_th² = 11, times payload norms up to 10² · 16


def test_slotted_d2d_by_hand() -> None:
    """Slot m: the UEs whose link to m survives truncation pre-equalise for m, UE m adds its own
    vector; under 'full' the neediest sender of each slot transmits at exactly P. Row m of the
    estimate is then the plain average over slot m's participants (perfect CSI, no noise)."""
    n, d, power = 5, 6, 1.3
    ch = Channel(ChannelConfig(fading="rayleigh", rho="full", power=power, h_th=0.6), "d2d")
    v = payload(n, d, 1.0, seed=0)
    res = ch.transmit(v, seed=2, round=4)
    h, _ = draw_links(ch, (n, n), 2, 4, torch.float64)  # h[k, m]: UE k's link to receiver m
    total, rows = 0.0, []
    for m in range(n):
        senders = [k for k in range(n) if k != m and float(h[k, m].abs()) >= 0.6]
        need = [float(v[k].square().sum() / h[k, m].abs().square()) for k in senders]  # energy per unit ρ
        total += sum(power / max(need) * x for x in need) if senders else 0.0
        rows.append(v[[m, *senders]].mean(0))
    assert res.dropouts == sum(int(h[k, m].abs() < 0.6) for k in range(n) for m in range(n) if k != m) > 0
    assert res.tx_energy == pytest.approx(total, rel=1e-12)
    assert res.tx_energy_max == pytest.approx(1.0)
    torch.testing.assert_close(res.estimate, torch.stack(rows), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fading", [{"name": "rayleigh"}, {"name": "rician", "k": 3.0}])
@pytest.mark.parametrize("control", ["inversion", "phase"])
def test_matched_filter_equals_the_real_part_of_h_times_p(fading: dict, control: str) -> None:
    """With CSI error the decoded aggregate is Re(Σ h_n p_n u_n)/(N_act √ρ μ), μ = 1 for inversion
    and E|h| (scipy's Rice mean; √π/2 for Rayleigh) for phase-only."""
    n, d, eps = 10, 7, 0.1
    ch = Channel(ChannelConfig(fading=fading, power_control=control, csi_error=eps, power=3.0,
                               interference="gaussian", scale=0.2), "server")
    v = payload(n, d, 1.0, seed=9)
    q = torch.linspace(1.0, 2.0, n, dtype=torch.float64)
    res = ch.transmit(v, q, seed=4, round=2)
    h, h_est = draw_links(ch, (n,), 4, 2, torch.float64)
    assert h_est is not None and not torch.allclose(h, h_est)
    p = coefficients(control, h_est, res.rho, ch.config.h_th)
    active = p.abs() > 0
    w = torch.where(active, q, torch.zeros_like(q))
    w = w / w.sum()
    u = int(active.sum()) * w.unsqueeze(1) * v
    k = fading.get("k", 0.0)
    mu = 1.0 if control == "inversion" else (math.sqrt(math.pi) / 2 if k == 0 else rician_mean_abs(k))
    by_hand = (h * p).real @ u / (int(active.sum()) * math.sqrt(res.rho) * mu)
    torch.testing.assert_close(res.estimate - res.noise, by_hand, rtol=1e-10, atol=1e-12)
    assert res.n_active == int(active.sum())


def test_slotted_d2d_with_csi_error_and_unequal_weights_by_hand() -> None:
    """Inversion on estimated links ĥ (CSI error 0.2), truncation at 0.6, weights q unequal: slot m
    decodes Σ_k w_km·Re(h_km ĥ_km*)/|ĥ_km|²·v_k over its participants (own vector with gain 1, weights
    q renormalised over the slot), and its noise scale is c/(N_m·√ρ_m) with N_m the slot's
    participants and ρ_m = P / max_k ‖v_k‖²/|ĥ_km|² (rule 'full')."""
    n, d, power, c = 6, 5, 2.0, 0.3
    ch = Channel(ChannelConfig(fading="rayleigh", csi_error=0.2, h_th=0.6, power=power, interference="gaussian",
                               scale=c), "d2d")
    v = payload(n, d, 1.0, seed=5)
    q = torch.linspace(1.0, 3.0, n, dtype=torch.float64)
    res = ch.transmit(v, q, seed=6, round=3)
    h, h_est = draw_links(ch, (n, n), 6, 3, torch.float64)
    assert h_est is not None
    rows, scales = [], []
    for m in range(n):
        senders = [k for k in range(n) if k != m and float(h_est[k, m].abs()) >= 0.6]
        members = [m, *senders]
        w = q[members] / q[members].sum()
        gain = [1.0] + [float((h[k, m] * h_est[k, m].conj()).real / h_est[k, m].abs().square()) for k in senders]
        rows.append(sum(wi * gi * v[k] for wi, gi, k in zip(w, gain, members, strict=True)))
        need = [float(v[k].square().sum() * (len(members) * w[i + 1]) ** 2 / h_est[k, m].abs().square())
                for i, k in enumerate(senders)]
        rho = power / max(need) if need else power
        scales.append(c / (len(members) * math.sqrt(rho)))
    sizes = {len([k for k in range(n) if k != m and float(h_est[k, m].abs()) >= 0.6]) for m in range(n)}
    assert len(sizes) > 1  # the slots differ in size: a per-slot count on the wrong axis would show
    torch.testing.assert_close(res.estimate - res.noise_per_ue, torch.stack(rows), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.as_tensor(res.noise_scale_per_ue), torch.tensor(scales, dtype=torch.float64),
                               rtol=1e-10, atol=0)
    # Under 'full' N_m cancels from the scale (ρ_m absorbs it); a constant ρ = P shows it directly.
    fixed = Channel(ChannelConfig(fading="rayleigh", csi_error=0.2, h_th=0.6, power=power, interference="gaussian",
                                  scale=c, rho="fixed-unbounded"), "d2d").transmit(v, q, seed=6, round=3)
    members = [1 + sum(float(h_est[k, m].abs()) >= 0.6 for k in range(n) if k != m) for m in range(n)]
    torch.testing.assert_close(torch.as_tensor(fixed.noise_scale_per_ue),
                               torch.tensor([c / (nm * math.sqrt(power)) for nm in members], dtype=torch.float64),
                               rtol=1e-12, atol=0)


def test_idealised_d2d_broadcast_by_hand() -> None:
    """One slot, phase-only on every link at once: row m is Σ_n w_n a_nm v_n with a_mm = 1 and
    a_nm = Re(h_nm ĥ_nm*)/(|ĥ_nm| μ), μ = E|h| (scipy's Rice mean); UE m's own noise has scale
    c/(N √ρ μ) with ρ = P / max_n ‖N w_n v_n‖² (rule 'full': every transmitter's single gain is 1);
    nobody drops out."""
    n, d, power, c, k = 5, 4, 1.7, 0.25, 2.0
    ch = Channel(ChannelConfig(fading={"name": "rician", "k": k}, power_control="phase", csi_error=0.1,
                               power=power, interference="gaussian", scale=c), "d2d-ideal")
    v = payload(n, d, 1.0, seed=8)
    q = torch.linspace(1.0, 2.0, n, dtype=torch.float64)
    res = ch.transmit(v, q, seed=3, round=5)
    h, h_est = draw_links(ch, (n, n), 3, 5, torch.float64)
    assert h_est is not None
    mu = rician_mean_abs(k)
    a = (h * h_est.conj()).real / (h_est.abs() * mu)
    a.fill_diagonal_(1.0)
    w = q / q.sum()
    rows = [sum(w[i] * a[i, m] * v[i] for i in range(n)) for m in range(n)]
    rho = power / max(float((n * w[i] * v[i]).square().sum()) for i in range(n))
    assert res.dropouts == 0 and bool(res.active.all()) and res.n_active == n
    assert res.rho == pytest.approx(rho, rel=1e-12)
    torch.testing.assert_close(res.estimate - res.noise_per_ue, torch.stack(rows), rtol=1e-10, atol=1e-12)
    scale = torch.as_tensor(res.noise_scale_per_ue, dtype=torch.float64)
    torch.testing.assert_close(scale, torch.full_like(scale, c / (n * math.sqrt(rho) * mu)), rtol=1e-10, atol=0)
    assert res.noise_common is None or not bool(res.noise_common.abs().sum())  # no common term


@pytest.mark.parametrize("k", [0.5, 4.0])
def test_no_power_control_decodes_with_the_mean_real_gain(k: float) -> None:
    """power_control='none' sends √ρ·u_n blind; the receiver divides Re(Σ h_n √ρ u_n) by N √ρ μ with
    μ = E[Re h] = √(K/(K+1)) for unit-power Rician fading (the line-of-sight amplitude)."""
    n, d = 8, 5
    ch = Channel(ChannelConfig(fading={"name": "rician", "k": k}, power_control="none", power=2.0), "server")
    v = payload(n, d, 1.0, seed=4)
    res = ch.transmit(v, seed=9, round=1)
    h, _ = draw_links(ch, (n,), 9, 1, torch.float64)
    by_hand = h.real @ v / (n * math.sqrt(k / (k + 1)))
    torch.testing.assert_close(res.estimate, by_hand, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="Rayleigh"):
        Channel(ChannelConfig(fading="rayleigh", power_control="none"), "server")


def test_slotted_d2d_under_the_norm_rule_by_hand() -> None:
    """rho = 'norm' in slot m: ρ_m = min(P·h_th²/max_k ‖u_k‖², P/max_k ‖u_k‖²/|h_km|²) over the slot's
    senders (u_k = N_m w_k v_k, equal weights here), so its noise scale is c/(N_m √ρ_m)."""
    n, d, power, c, h_th = 6, 5, 2.0, 0.3, 0.5
    ch = Channel(ChannelConfig(fading="rayleigh", h_th=h_th, power=power, rho="norm", interference="gaussian",
                               scale=c), "d2d")
    v = payload(n, d, 1.0, seed=7)
    res = ch.transmit(v, seed=8, round=2)
    h, _ = draw_links(ch, (n, n), 8, 2, torch.float64)
    scales = []
    for m in range(n):
        senders = [k for k in range(n) if k != m and float(h[k, m].abs()) >= h_th]
        size = len(senders) + 1
        norms = [float(v[k].square().sum()) for k in senders]  # ‖u_k‖² = ‖v_k‖², since N_m w_k = 1
        need = [x / float(h[k, m].abs().square()) for x, k in zip(norms, senders, strict=True)]
        rho = min(power * h_th**2 / max(norms), power / max(need)) if senders else power
        scales.append(c / (size * math.sqrt(rho)))
    torch.testing.assert_close(torch.as_tensor(res.noise_scale_per_ue), torch.tensor(scales, dtype=torch.float64),
                               rtol=1e-10, atol=0)


@pytest.mark.parametrize("rule", RULES)
def test_an_all_zero_payload_is_received_as_zero(rule: str) -> None:
    """Nothing to send (every update zero, e.g. a converged model): no division by ‖u‖ = 0, the
    estimate is exactly the noise, and no energy is spent."""
    ch = Channel(ChannelConfig(fading="rayleigh", rho=rule, interference="gaussian", scale=0.1), "server")
    res = ch.transmit(torch.zeros(4, 6, dtype=torch.float64), seed=1, round=1)
    assert res.tx_energy == 0.0
    torch.testing.assert_close(res.estimate, res.noise, rtol=0, atol=0)
