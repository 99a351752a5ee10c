"""Communication latency τ_cm per aggregation round (reference §5). All times in **seconds**.

- Analog OTA: all UEs share the same ``d`` real symbols, so the uplink airtime is
  ``τ_up = ⌈d / W⌉ · T_sym``, **independent of N** (W orthogonal resources per symbol time).
- Digital TDMA: UEs take turns, each sending ``d·b`` bits at ``rate`` bit/s:
  ``τ_up = N · d · b / rate`` (linear in N).
- ``τ_cm = τ_up + propagation + relay processing + downlink``; the downlink is one more analog
  airtime (relay forwarding / D2D needs none) or a digital broadcast of ``d·b`` bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def analog_airtime(d: int, resources: int, symbol_time: float) -> float:
    """``⌈d / W⌉ · T_sym`` seconds: ``d`` real symbols on ``W = resources`` parallel waveforms."""
    if d < 0 or resources < 1 or symbol_time < 0:
        raise ValueError("need d >= 0, resources >= 1, symbol_time >= 0")
    return math.ceil(d / resources) * float(symbol_time)


def tdma_airtime(n_ues: int, d: int, bits: int, rate: float) -> float:
    """``N · d · b / rate`` seconds: N UEs in turn, ``d`` entries of ``b`` bits, ``rate`` bit/s."""
    if n_ues < 0 or d < 0 or bits < 1 or rate <= 0:
        raise ValueError("need n_ues >= 0, d >= 0, bits >= 1, rate > 0 (bit/s)")
    return n_ues * d * bits / float(rate)


@dataclass
class LatencyConfig:
    """Inputs of :func:`communication_latency`.

    Attributes:
        scheme: "analog" (OTA) or "digital" (TDMA).
        d: entries per transmitted vector.
        n_ues: number of UEs N (digital only matters).
        resources: W, orthogonal real waveforms per symbol time (analog).
        symbol_time: T_sym in seconds (analog).
        bits: b, bits per entry (digital).
        rate: per-UE link rate in bit/s (digital).
        propagation: one-way propagation delay in seconds (added once per hop).
        relay_processing: AP forwarding delay in seconds (relay architectures).
        downlink: add a downlink phase (server broadcast or relay forwarding).
        hops: 1 for server/D2D, 2 for relay (propagation counted per hop).
    """

    scheme: str = "analog"
    d: int = 1
    n_ues: int = 1
    resources: int = 1
    symbol_time: float = 1e-6
    bits: int = 32
    rate: float = 1e6
    propagation: float = 0.0
    relay_processing: float = 0.0
    downlink: bool = False
    hops: int = 1


def communication_latency(cfg: LatencyConfig) -> float:
    """τ_cm in seconds for one aggregation round under ``cfg`` (see module docstring)."""
    if cfg.scheme == "analog":
        up = analog_airtime(cfg.d, cfg.resources, cfg.symbol_time)
        down = up if cfg.downlink else 0.0
    elif cfg.scheme == "digital":
        up = tdma_airtime(cfg.n_ues, cfg.d, cfg.bits, cfg.rate)
        down = cfg.d * cfg.bits / float(cfg.rate) if cfg.downlink else 0.0
    else:
        raise ValueError(f"scheme must be 'analog' or 'digital', got {cfg.scheme!r}")
    if cfg.propagation < 0 or cfg.relay_processing < 0 or cfg.hops < 1:
        raise ValueError("propagation and relay_processing must be >= 0 s, hops >= 1")
    return up + down + cfg.hops * cfg.propagation + cfg.relay_processing
