"""Analog over-the-air aggregation and the digital baseline (reference §2.2–§2.5).

``Channel(ChannelConfig(...)).transmit(V, q, seed=, round=)`` turns the transmitted matrix
``V [N, d]`` (row n = UE n's vector) and weights ``q [N]`` into estimates of ``Σ q_n v_n``:

    v̂ = Σ_{n active} q_n a_n v_n / Σ_{n active} q_n + ξ / gain,    gain = N_act·√ρ_t·μ

(``a_n = 1`` for perfect inversion, ``|h_n|/μ_h`` for phase-only; μ = 1, μ_h or E[Re h]).
Physically UE n sends ``p_n·u_n`` with ``u_n = N_act·q̃_n·v_n`` (``q̃`` = q renormalised over
active UEs), so equal weights mean ``u_n = v_n`` and ``c_eff = c/(N_act √ρ_t)``.

Randomness (all from :mod:`channels.rng`, so results depend only on (seed, round, inputs)):

- fading (and CSI error, drawn after it): ``torch_generator(seed, "fading", round)``;
- common interference ``[d]`` (server, relay uplink): ``torch_generator(seed, "interference",
  round)``; the server and a relay in "common" mode run the same code on the same generator, so
  every relay row equals the server estimate exactly;
- per-UE interference ``[N, d]`` (relay downlink, D2D): one generator for the whole block,
  ``torch_generator(seed, "interference", round, ue=PER_UE_KEY)`` (a reserved key, no real UE),
  so the per-UE noise is the same in "per_ue" and "common+per_ue" modes;
- digital quantisation: ``torch_generator(seed, "quantization", round)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from channels.fading import (
    FADING_KINDS,
    estimate_csi,
    mean_abs_gain,
    mean_real_gain,
    sample_fading,
)
from channels.interference import make_interference
from channels.power import POWER_CONTROLS, RHO_RULES, compute_rho, gains
from channels.quantize import stochastic_quantize
from channels.rng import torch_generator

RECEIVERS = ("server", "relay", "d2d", "digital")
INTERFERENCE_KINDS = ("none", "gaussian", "sas")
INTERFERENCE_MODES = ("common", "per_ue", "common+per_ue")
PER_UE_KEY = 2**31 - 2  # rng "ue" slot reserved for the per-UE interference block


@dataclass
class ChannelConfig:
    """Channel options (reference §9). Plain dataclass; :class:`Channel` validates it.

    Attributes:
        receiver: "server" (one estimate ``[d]``), "relay" (S1: AP as analog relay, ``[N, d]``),
            "d2d" (S2: broadcast, ``[N, d]``) or "digital" (error-free, optional quantisation).
        fading: "none" | "rayleigh" | "rician" (block fading, unit mean power).
        rician_k: Rician K-factor (linear).
        csi_error: variance ε of the CN CSI error at the transmitters (0 = perfect CSI).
        power_control: "inversion" (truncated, drop-out below ``h_th``) | "phase" | "none".
            "inversion" is rejected for "d2d" (a transmitter cannot invert N−1 links).
        h_th: truncation threshold on ``|ĥ|`` (linear amplitude).
        power: per-UE power budget P (linear).
        rho: ρ_t rule, "fixed" | "norm" | "cotaf" (see :mod:`channels.power`).
        interference: "none" | "gaussian" | "sas".
        alpha: SαS tail index, 0 < α ≤ 2 (ignored unless interference == "sas").
        scale: per-coordinate SαS scale c of the interference at a receiver (Gaussian: std √2·c).
        gaussian_std: optional plain std for "gaussian" (overrides ``scale``: c = std/√2).
        sas_vector: "iid" | "isotropic" (sub-Gaussian SαS vectors).
        interference_mode: "common" | "per_ue" | "common+per_ue" for "relay" (default
            "common+per_ue"); forced to "per_ue" for "d2d"; "server" has only the common term.
        downlink_scale: per-UE (downlink) interference scale relative to ``scale`` for "relay"
            (absorbs the AP amplification β and downlink gain of §2.5).
        quant_bits: bits per entry for "digital" (None = no quantisation).
    """

    receiver: str = "server"
    fading: str = "none"
    rician_k: float = 1.0
    csi_error: float = 0.0
    power_control: str = "inversion"
    h_th: float = 0.3
    power: float = 1.0
    rho: str = "fixed"
    interference: str = "none"
    alpha: float = 2.0
    scale: float = 0.0
    gaussian_std: float | None = None
    sas_vector: str = "iid"
    interference_mode: str | None = None
    downlink_scale: float = 1.0
    quant_bits: int | None = None


@dataclass
class ChannelResult:
    """What a receiver returns for one round.

    Attributes:
        estimate: ``[d]`` (server, digital) or ``[N, d]`` (relay, d2d; row m = UE m's copy).
        active: bool ``[N]``, UEs in the superposition (available and not dropped out).
        dropouts: available UEs dropped by truncated inversion this round.
        noise_scale: per-coordinate SαS scale of the total noise on (each row of) the estimate,
            ``(c_common^α + c_per_ue^α)^{1/α}``; Gaussian: std = √2·noise_scale.
        noise_scale_common / noise_scale_per_ue: the two parts (0.0 where absent).
        tx_energy: ``Σ_n ‖p_n u_n‖²`` this round (digital: ``Σ ‖u_n‖²``, unit amplitude).
        noise: the noise actually added: the common part ``[d]`` if present, else the per-UE
            ``[N, d]`` (zeros ``[d]`` without interference; quantisation error for digital).
        noise_common / noise_per_ue: the two parts, or None.
        rho: ρ_t used; gain: the receiver's normaliser ``N_act·√ρ_t·μ``; n_active: ``N_act``.
    """

    estimate: torch.Tensor
    active: torch.Tensor
    dropouts: int
    noise_scale: float
    tx_energy: float
    noise: torch.Tensor
    noise_common: torch.Tensor | None = None
    noise_per_ue: torch.Tensor | None = None
    noise_scale_common: float = 0.0
    noise_scale_per_ue: float = 0.0
    rho: float = 1.0
    gain: float = 1.0
    n_active: int = 0
    extras: dict = field(default_factory=dict)


def _choice(name: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"channel.{name}={value!r} is not allowed; use one of {list(allowed)}")


class Channel:
    """A validated channel; :meth:`transmit` runs one round of aggregation."""

    def __init__(self, config: ChannelConfig) -> None:
        c = config
        _choice("receiver", c.receiver, RECEIVERS)
        _choice("fading", c.fading, FADING_KINDS)
        _choice("power_control", c.power_control, POWER_CONTROLS)
        _choice("rho", c.rho, RHO_RULES)
        _choice("interference", c.interference, INTERFERENCE_KINDS)
        _choice("sas_vector", c.sas_vector, ("iid", "isotropic"))
        for name in ("rician_k", "csi_error", "h_th", "scale", "downlink_scale"):
            v = getattr(c, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"channel.{name} must be finite and >= 0, got {v!r}")
        if not (math.isfinite(c.power) and c.power > 0):
            raise ValueError(f"channel.power (P, linear) must be > 0, got {c.power!r}")
        if c.interference == "sas" and not 0.0 < c.alpha <= 2.0:
            raise ValueError(f"channel.alpha must be in (0, 2], got {c.alpha!r}")
        if c.rho == "norm" and c.h_th <= 0:
            raise ValueError("channel.rho='norm' uses P·h_th²/max‖v‖²: set channel.h_th > 0")
        if c.receiver == "d2d" and c.power_control == "inversion":
            raise ValueError(
                "channel.power_control='inversion' cannot serve every receiver of a D2D broadcast "
                "(transmitter n has N-1 links h_{n->m}); use 'phase' or 'none' with receiver='d2d'"
            )
        if c.power_control == "none" and c.receiver != "digital":
            if mean_real_gain(c.fading, c.rician_k) == 0.0:
                raise ValueError(
                    "channel.power_control='none' with Rayleigh fading has zero mean gain "
                    "(E[Re h] = 0); use 'phase' or 'inversion', or Rician fading with K > 0"
                )
        qb = c.quant_bits
        if qb is not None and not (isinstance(qb, int) and 1 <= qb <= 24):
            raise ValueError(f"channel.quant_bits must be None or an int in [1, 24], got {qb!r}")
        std = c.gaussian_std
        if std is not None and not (math.isfinite(std) and std >= 0):
            raise ValueError(f"channel.gaussian_std must be >= 0, got {std!r}")
        mode = c.interference_mode
        if mode is not None:
            _choice("interference_mode", mode, INTERFERENCE_MODES)
        if c.receiver == "d2d":
            mode = "per_ue"  # every UE listens with its own receiver: no common term
        elif c.receiver == "relay":
            mode = mode or "common+per_ue"
        else:
            mode = "common"
        self.config = c
        self.interference_mode: str = mode
        scale = c.scale
        if c.interference == "gaussian" and c.gaussian_std is not None:
            scale = c.gaussian_std / math.sqrt(2.0)
        self.interference = make_interference(
            c.interference, alpha=c.alpha, scale=scale, vector=c.sas_vector
        )
        self.alpha: float = self.interference.alpha
        # decoding normaliser μ: 1 for inversion, E|h| for phase-only, E[Re h] for equal gain
        if c.power_control == "phase":
            self.mu = mean_abs_gain(c.fading, c.rician_k)
        elif c.power_control == "none":
            self.mu = mean_real_gain(c.fading, c.rician_k)
        else:
            self.mu = 1.0

    # ------------------------------------------------------------------ helpers
    def _combine_scales(self, a: float, b: float) -> float:
        if a == 0.0 or b == 0.0:
            return a + b
        return (a**self.alpha + b**self.alpha) ** (1.0 / self.alpha)

    @staticmethod
    def _inputs(V, q, available) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not isinstance(V, torch.Tensor) or V.dim() != 2:
            raise ValueError("V must be a [N, d] torch tensor (one row per UE)")
        if V.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"V must be float32 or float64, got {V.dtype}")
        n = V.shape[0]
        if q is None:
            q = torch.full((n,), 1.0 / n, dtype=V.dtype)
        q = torch.as_tensor(q, dtype=V.dtype, device="cpu")
        if q.shape != (n,) or bool((q < 0).any()) or not bool(torch.isfinite(q).all()):
            raise ValueError(
                f"q must be [N]={n} finite non-negative weights, got shape {tuple(q.shape)}"
            )
        if available is None:
            available = torch.ones(n, dtype=torch.bool)
        available = torch.as_tensor(available, dtype=torch.bool, device="cpu")
        if available.shape != (n,):
            raise ValueError(f"available must be a bool [N]={n} mask")
        return V, q, available

    # ------------------------------------------------------------------ main entry
    def transmit(
        self,
        V: torch.Tensor,
        q: torch.Tensor | None = None,
        *,
        seed: int,
        round: int,
        available: torch.Tensor | None = None,
    ) -> ChannelResult:
        """One round: UEs send the rows of ``V`` (``[N, d]``) with weights ``q`` (``[N]``, any
        positive total; None = uniform); ``available`` (bool ``[N]``) excludes failed UEs.
        Returns estimates in ``V``'s dtype on ``V``'s device. If no UE is active the estimate is
        zeros. Per-UE quantities (fading, gains, ``active``) stay on CPU; random draws come from
        CPU generators and are moved to ``V``'s device, so every device sees the same numbers."""
        V, q, available = self._inputs(V, q, available)
        c = self.config
        if c.receiver == "digital":
            return self._digital(V, q, available, seed, round)
        n, d = V.shape
        real = V.dtype
        g_fad = torch_generator(seed, "fading", round)
        link_shape = (n, n) if c.receiver == "d2d" else (n,)
        h = sample_fading(link_shape, c.fading, g_fad, rician_k=c.rician_k, dtype=real)
        h_est = estimate_csi(h, c.csi_error, g_fad) if c.csi_error > 0 else None
        a, ok, amp2 = gains(h, h_est, c.power_control, h_th=c.h_th, mu=self.mu, real_dtype=real)
        if c.receiver == "d2d":
            active = available.clone()
            dropouts = 0
            a = a.clone()
            a.fill_diagonal_(1.0)  # each UE adds its own vector locally
            amp2 = torch.ones(n, dtype=real)
        else:
            active = available & ok
            dropouts = int((available & ~ok).sum())
        qa = torch.where(active, q, torch.zeros_like(q))
        q_sum = qa.sum()
        n_act = int(active.sum())
        if n_act == 0 or float(q_sum) <= 0.0:
            return self._empty(V, active, dropouts)
        w = qa / q_sum  # weights renormalised over active UEs
        # u_n = N_act·w_n·v_n is what UE n puts on air (u_n = v_n for equal weights)
        u_norm_sq = torch.linalg.vector_norm(V, dim=1).square().cpu() * (n_act * w) ** 2
        max_norm_sq = float(u_norm_sq.max())
        rho = compute_rho(c.rho, c.power, c.h_th, max_norm_sq)
        gain = n_act * math.sqrt(rho) * self.mu
        tx_energy = float((rho * amp2 * u_norm_sq).sum())
        c_common = self.interference.scale / gain
        c_ue = self.interference.scale * (1.0 if c.receiver == "d2d" else c.downlink_scale) / gain
        mode = self.interference_mode
        has_common = mode in ("common", "common+per_ue") and c_common > 0
        has_ue = mode in ("per_ue", "common+per_ue") and c_ue > 0

        dev = V.device
        if c.receiver == "d2d":
            # row m: Σ_n w_n a_{n→m} v_n  =  (w ∘ A)ᵀ V   ([N, N] @ [N, d])
            estimate = (w.unsqueeze(1) * a).T.to(dev) @ V
        else:
            estimate = (w * a).to(dev) @ V  # [d]
        noise_common = None
        if has_common:
            g_int = torch_generator(seed, "interference", round)
            noise_common = self.interference.sample((d,), g_int, real).div_(gain).to(dev)
            estimate = estimate + noise_common
        if c.receiver == "relay":
            estimate = estimate.unsqueeze(0).expand(n, d).clone()
        noise_ue = None
        if has_ue:
            g_ue = torch_generator(seed, "interference", round, ue=PER_UE_KEY)
            noise_ue = self.interference.sample((n, d), g_ue, real)
            noise_ue = noise_ue.mul_(c_ue / self.interference.scale).to(dev)
            estimate = estimate.add_(noise_ue)
        sc = c_common if has_common else 0.0
        su = c_ue if has_ue else 0.0
        if noise_common is not None:
            noise = noise_common
        elif noise_ue is not None:
            noise = noise_ue
        else:
            noise = torch.zeros(d, dtype=real, device=dev)
        return ChannelResult(
            estimate=estimate,
            active=active,
            dropouts=dropouts,
            noise_scale=self._combine_scales(sc, su),
            tx_energy=tx_energy,
            noise=noise,
            noise_common=noise_common,
            noise_per_ue=noise_ue,
            noise_scale_common=sc,
            noise_scale_per_ue=su,
            rho=rho,
            gain=gain,
            n_active=n_act,
        )

    def _empty(self, V: torch.Tensor, active: torch.Tensor, dropouts: int) -> ChannelResult:
        n, d = V.shape
        per_ue = self.config.receiver in ("relay", "d2d")
        est = torch.zeros((n, d) if per_ue else (d,), dtype=V.dtype, device=V.device)
        return ChannelResult(
            estimate=est,
            active=active,
            dropouts=dropouts,
            noise_scale=0.0,
            tx_energy=0.0,
            noise=torch.zeros(d, dtype=V.dtype, device=V.device),
            rho=0.0,
            gain=0.0,
            n_active=0,
        )

    def _digital(self, V, q, available, seed: int, round: int) -> ChannelResult:
        qa = torch.where(available, q, torch.zeros_like(q))
        n_act = int(available.sum())
        if n_act == 0 or float(qa.sum()) <= 0.0:
            return self._empty(V, available.clone(), 0)
        w = (qa / qa.sum()).to(V.device)
        exact = w @ V
        if self.config.quant_bits is None:
            estimate, noise = exact, torch.zeros_like(exact)
        else:
            g_q = torch_generator(seed, "quantization", round)
            estimate = w @ stochastic_quantize(V, self.config.quant_bits, g_q)
            noise = estimate - exact
        u_norm_sq = torch.linalg.vector_norm(V, dim=1).square() * (n_act * w) ** 2
        return ChannelResult(
            estimate=estimate,
            active=available.clone(),
            dropouts=0,
            noise_scale=0.0,
            tx_energy=float(u_norm_sq.sum()),
            noise=noise,
            rho=1.0,
            gain=float(n_act),
            n_active=n_act,
        )
