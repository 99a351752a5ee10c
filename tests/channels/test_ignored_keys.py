"""``Receiver.ignored()`` is exactly the set of channel keys that change nothing a receiver computes.

Sweeps refuse a channel key that every variant's receiver ignores (a silent no-op axis), so the
set must be right in both directions. The reference is behaviour, not the method's own table:
each key of the schema is changed, one at a time, from a few base configurations, and the
receiver's whole result (estimate, noise, gains, energy, delivery), its latency and its uplink
airtime are compared with the base run's under the same seed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pydantic
import pytest
import torch

from channels import RECEIVERS, Channel, ChannelConfig

#: One other valid value for every key of the schema (a new key must be added here).
OTHER: dict[str, Any] = {
    "fading": {"name": "rician", "k": 1.0},
    "csi_error": 0.2,
    "power_control": "phase",
    "h_th": 0.9,
    "power": 3.0,
    "rho": "fixed",
    "interference": {"name": "sas", "alpha": 1.3},
    "scale": 0.3,
    "dispersion": 0.05,
    "gsnr_db": 3.0,
    "interference_mode": "common",
    "downlink_scale": 4.0,
    "downlink_h_th": 1.2,
    "quant_bits": 3,
    "resources": 7,
    "symbol_time": 3e-6,
    "bits": 8,
    "rate": 5e5,
    "propagation": 2e-3,
    "relay_processing": 1e-3,
}
#: Keys that act outside the receiver: ``rho_growth`` sets the strategies' per-round noise factor.
OUTSIDE = {"rho_growth"}

BASES = {
    "rayleigh-inversion-gaussian": {"fading": "rayleigh", "interference": "gaussian", "gsnr_db": 10.0},
    "rician-phase-sas": {"fading": {"name": "rician", "k": 3.0}, "power_control": "phase",
                         "interference": {"name": "sas", "alpha": 1.7}, "scale": 0.1, "rho": "norm"},
    "relay-noise-common": {"fading": "rayleigh", "interference": "gaussian", "scale": 0.2,
                           "interference_mode": "common", "rho": "fixed"},
    "no-fading-no-interference": {"rho": "cotaf", "quant_bits": 6},
    "no-fading-csi-error": {"csi_error": 0.1, "interference": "gaussian", "dispersion": 0.01,
                            "power_control": "none"},
}


def outputs(cfg: ChannelConfig, receiver: str) -> list[Any]:
    """Everything the receiver computes for a fixed payload and seed, flattened."""
    ch = Channel(cfg, receiver)
    g = torch.Generator().manual_seed(5)
    V = 0.01 * torch.randn(6, 9, generator=g, dtype=torch.float64)  # small: no budget cap binds
    q = torch.tensor([1.0, 2.0, 1.0, 3.0, 1.0, 2.0], dtype=torch.float64)
    res = ch.transmit(V, q, seed=11, round=3)
    fields = [getattr(res, f.name) for f in dataclasses.fields(res)]
    return [*fields, ch.latency(9, 6), ch.receiver.uplink_airtime(9, 6)]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape \
            and bool(torch.equal(a.nan_to_num(), b.nan_to_num()))
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def changed(base: dict[str, Any], key: str) -> ChannelConfig | None:
    """The base config with ``key`` set to its other value (None when that combination is refused).
    A new interference level replaces the base's level, since exactly one may be given."""
    data = dict(base)
    if key in ("scale", "dispersion", "gsnr_db"):
        for level in ("scale", "dispersion", "gsnr_db"):
            data.pop(level, None)
    data[key] = OTHER[key]
    try:
        return ChannelConfig(**data)
    except pydantic.ValidationError:
        return None


def usable(cfg: ChannelConfig, receiver: str) -> bool:
    try:
        Channel(cfg, receiver)
    except ValueError:
        return False
    return True


def test_every_key_has_another_value() -> None:
    assert set(OTHER) | OUTSIDE == set(ChannelConfig.model_fields)


@pytest.mark.parametrize("receiver", RECEIVERS.names())
@pytest.mark.parametrize("base", list(BASES))
def test_ignored_keys_are_exactly_those_without_effect(receiver: str, base: str) -> None:
    cfg = ChannelConfig(**BASES[base])
    if not usable(cfg, receiver):
        pytest.skip(f"{receiver} refuses the base {base}")
    ignored = Channel(cfg, receiver).receiver.ignored()
    reference = outputs(cfg, receiver)
    wrong = []
    for key in OTHER:
        other = changed(BASES[base], key)
        if other is None or other == cfg or not usable(other, receiver):
            continue
        no_effect = all(same(a, b) for a, b in zip(reference, outputs(other, receiver), strict=True))
        if no_effect != (key in ignored):
            wrong.append(f"{key}: {'no effect' if no_effect else 'an effect'} but "
                         f"{'' if key in ignored else 'not '}listed as ignored")
    assert not wrong, wrong
