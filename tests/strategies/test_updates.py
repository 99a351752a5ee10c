"""The per-round noise factor (``rho_growth = "lr"``) against the channel run directly: UEs send
V/f, the receiver multiplies by f, so the aggregate is unchanged and the interference is scaled by
f (under ``rho = "fixed"``, where ρ does not follow the payload)."""

from __future__ import annotations

import torch

from channels import Channel, ChannelConfig
from strategies.updates import transmit_scaled


def test_noise_factor_scales_the_noise_and_keeps_the_aggregate() -> None:
    ch = Channel(ChannelConfig(rho="fixed", interference="gaussian", scale=0.2, power=1.0), "server")
    g = torch.Generator().manual_seed(3)
    V = 0.01 * torch.randn(5, 8, generator=g, dtype=torch.float64)  # small: the budget cap does not bind
    q = torch.tensor([1.0, 2.0, 3.0, 1.0, 1.0], dtype=torch.float64)
    available = torch.ones(5, dtype=torch.bool)
    plain = ch.transmit(V, q, seed=1, round=4, available=available)
    scaled = transmit_scaled(ch, V, q, 1, 4, available, 0.25)
    mean = (q / q.sum()) @ V
    torch.testing.assert_close(plain.estimate - plain.noise, mean, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(scaled.estimate - 0.25 * plain.noise, mean, rtol=1e-10, atol=1e-15)
    assert scaled.noise_scale == 0.25 * plain.noise_scale > 0
    assert scaled.noise_scale_common == 0.25 * plain.noise_scale_common
