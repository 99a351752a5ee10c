"""Communication latency τ_cm per aggregation round. All times in **seconds**.

- Analog OTA: all UEs share the same ``d`` real symbols, so the uplink airtime is
  ``τ_up = ⌈d / W⌉ · T_sym``, **independent of N** (W orthogonal resources per symbol time).
- Digital TDMA: UEs take turns, each sending ``d·b`` bits at ``rate`` bit/s:
  ``τ_up = N · d · b / rate`` (linear in N).
- ``τ_cm = τ_up + hops·propagation + relay processing + downlink``; the downlink is one more
  analog airtime (relay forwarding, server broadcast; D2D needs none) or a digital broadcast of
  ``d·b`` bits. A slotted D2D round repeats the uplink phase (and its propagation) once per
  receiver. A receiver supplies its own traits (:meth:`channels.receivers.Receiver.latency`).
"""

from __future__ import annotations

import math


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


def uplink_airtime(scheme: str, d: int, n_ues: int, resources: int, symbol_time: float, bits: int,
                   rate: float) -> float:
    """Seconds one uplink phase occupies the channel: the analog airtime, or N turns of TDMA."""
    if scheme == "analog":
        return analog_airtime(d, resources, symbol_time)
    if scheme == "digital":
        return tdma_airtime(n_ues, d, bits, rate)
    raise ValueError(f"scheme must be 'analog' or 'digital', got {scheme!r}")


def communication_latency(*, scheme: str = "analog", d: int = 1, n_ues: int = 1, resources: int = 1,
                          symbol_time: float = 1e-6, bits: int = 32, rate: float = 1e6, propagation: float = 0.0,
                          relay_processing: float = 0.0, downlink: bool = False, hops: int = 1,
                          slots: int = 1) -> float:
    """τ_cm in seconds for one aggregation round.

    Args:
        scheme: "analog" (OTA) or "digital" (TDMA).
        d: entries per transmitted vector.  n_ues: number of UEs N (digital only).
        resources: W, orthogonal real waveforms per symbol time (analog).
        symbol_time: T_sym in seconds (analog).  bits: b, bits per entry (digital).
        rate: per-UE link rate in bit/s (digital).
        propagation: one-way propagation delay in seconds (added once per hop).
        relay_processing: AP forwarding delay in seconds (relay architectures).
        downlink: add a downlink phase (server broadcast or relay forwarding).
        hops: 1 for server/D2D, 2 for relay.
        slots: uplink phases per exchange, each with its own propagation (N for a slotted D2D round).
    """
    up = uplink_airtime(scheme, d, n_ues, resources, symbol_time, bits, rate)
    if scheme == "analog":
        down = up if downlink else 0.0
    else:
        down = d * bits / float(rate) if downlink else 0.0
    if propagation < 0 or relay_processing < 0 or hops < 1 or slots < 1:
        raise ValueError("propagation and relay_processing must be >= 0 s, hops >= 1, slots >= 1")
    if slots == 1:  # kept in this order: one slot sums exactly as before
        return up + down + hops * propagation + relay_processing
    return slots * (up + propagation) + down + (hops - 1) * propagation + relay_processing
