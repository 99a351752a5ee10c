"""From the experiment config to the physical layer: the channel, tau_cm and per-UE tau_cp."""

from __future__ import annotations

import torch

from channels import Channel, ChannelConfig, LatencyConfig, communication_latency, interference_scale
from channels.rng import torch_generator
from fedsim.config import RECEIVER_OF, ExperimentConfig
from fedsim.errors import ConfigError


def interference_level(cfg: ExperimentConfig) -> float:
    """The per-coordinate scale c from whichever level the config gives (§2.4, §9 item 9)."""
    ch = cfg.channel
    if ch.interference == "none":
        return 0.0
    alpha = ch.alpha if ch.interference == "sas" else 2.0
    return interference_scale(alpha, scale=ch.scale, dispersion=ch.dispersion, gsnr_db=ch.gsnr_db,
                              power=ch.power)


def build_channel(cfg: ExperimentConfig) -> Channel:
    """The ``channels.Channel`` for this strategy (receiver chosen by the strategy name)."""
    ch = cfg.channel
    receiver = RECEIVER_OF[cfg.strategy.name]
    try:
        return Channel(ChannelConfig(
            receiver=receiver,
            fading=ch.fading,
            rician_k=ch.rician_k,
            csi_error=ch.csi_error,
            power_control=ch.power_control,
            h_th=ch.h_th,
            power=ch.power,
            rho=ch.rho,
            interference=ch.interference,
            alpha=ch.alpha,
            scale=interference_level(cfg),
            sas_vector=ch.sas_vector,
            interference_mode=ch.interference_mode,
            downlink_scale=ch.downlink_scale,
            quant_bits=ch.quant_bits,
        ))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def communication_time(cfg: ExperimentConfig, dim: int, num_ues: int) -> float:
    """tau_cm [s] of one exchange: explicit, as a ratio of tau_cp, or from the latency model."""
    t = cfg.timing
    if t.latency_ratio is not None:
        return t.latency_ratio * t.tau_cp
    if t.tau_cm is not None:
        return t.tau_cm
    ch = cfg.channel
    receiver = RECEIVER_OF[cfg.strategy.name]
    return communication_latency(LatencyConfig(
        scheme="digital" if receiver == "digital" else "analog",
        d=dim,
        n_ues=num_ues,
        resources=ch.resources,
        symbol_time=ch.symbol_time,
        bits=ch.bits,
        rate=ch.rate,
        propagation=ch.propagation,
        relay_processing=ch.relay_processing if receiver == "relay" else 0.0,
        downlink=receiver in ("relay", "server", "digital"),
        hops=2 if receiver == "relay" else 1,
    ))


def compute_times(cfg: ExperimentConfig, num_ues: int) -> torch.Tensor:
    """Per-UE time of one local step, ``[N]`` seconds: tau_cp * (1 + spread * U(0, 1)),
    fixed for the whole run (stream "timing")."""
    t = cfg.timing
    u = torch.rand(num_ues, generator=torch_generator(cfg.seed, "timing"), dtype=torch.float64)
    return t.tau_cp * (1.0 + t.tau_cp_spread * u)
