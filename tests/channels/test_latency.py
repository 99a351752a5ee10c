"""Latency models: airtime formulas and each receiver's exchange, against hand computations."""

from __future__ import annotations

import pytest

from channels import Channel, ChannelConfig, analog_airtime, communication_latency, tdma_airtime


def test_analog_independent_of_n() -> None:
    a = [communication_latency(d=10_000, n_ues=n, resources=100, symbol_time=1e-5) for n in (1, 10, 1000)]
    assert a[0] == a[1] == a[2] == pytest.approx(100 * 1e-5)
    assert analog_airtime(101, 100, 1.0) == 2.0


def test_tdma_linear_in_n() -> None:
    t = [communication_latency(scheme="digital", d=1000, n_ues=n, bits=8, rate=1e6) for n in (1, 10, 100)]
    assert t[1] == pytest.approx(10 * t[0]) and t[2] == pytest.approx(100 * t[0])
    assert tdma_airtime(3, 1000, 8, 1e6) == pytest.approx(0.024)


def test_extra_delays() -> None:
    relay = dict(d=100, resources=10, symbol_time=1e-3, downlink=True, hops=2, propagation=1e-4,
                 relay_processing=5e-4)
    assert communication_latency(**relay) == pytest.approx(2 * 0.01 + 2e-4 + 5e-4)
    # three uplink slots, each with its propagation, then the downlink and the second hop
    assert communication_latency(**relay, slots=3) == pytest.approx(3 * (0.01 + 1e-4) + 0.01 + 1e-4 + 5e-4)
    assert communication_latency(d=100, resources=10, symbol_time=1e-3) == pytest.approx(0.01)
    with pytest.raises(ValueError):
        communication_latency(scheme="smoke")


def test_each_receiver_exchange_by_hand() -> None:
    """d = 250 entries on W = 100 waveforms of 2 ms: 3 symbols = 6 ms of airtime per analog phase;
    digital: N·d·b/rate up plus d·b/rate down; propagation 1 ms per hop; relay processing 4 ms; a
    slotted D2D round is N = 5 uplink phases."""
    cfg = ChannelConfig(resources=100, symbol_time=2e-3, bits=8, rate=1e5, propagation=1e-3, relay_processing=4e-3,
                        power_control="phase")
    air = 3 * 2e-3
    expected = {
        "server": 2 * air + 1e-3,  # uplink + broadcast, one hop
        "relay": 2 * air + 2e-3 + 4e-3,  # uplink + forwarding, two hops, processing
        "d2d": 5 * (air + 1e-3),  # one receive slot per UE, each with its propagation; no downlink
        "d2d-ideal": air + 1e-3,  # one broadcast phase, no downlink
        "digital": 5 * 250 * 8 / 1e5 + 250 * 8 / 1e5 + 1e-3,  # TDMA of 5 UEs + broadcast
    }
    for receiver, want in expected.items():
        assert Channel(cfg, receiver).latency(250, 5) == pytest.approx(want), receiver
