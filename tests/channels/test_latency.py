"""Latency models (reference §5)."""

from __future__ import annotations

import pytest

from channels import LatencyConfig, analog_airtime, communication_latency, tdma_airtime


def test_analog_independent_of_n() -> None:
    a = [communication_latency(LatencyConfig(d=10_000, n_ues=n, resources=100, symbol_time=1e-5))
         for n in (1, 10, 1000)]
    assert a[0] == a[1] == a[2] == pytest.approx(100 * 1e-5)
    assert analog_airtime(101, 100, 1.0) == 2.0


def test_tdma_linear_in_n() -> None:
    t = [communication_latency(LatencyConfig(scheme="digital", d=1000, n_ues=n, bits=8, rate=1e6))
         for n in (1, 10, 100)]
    assert t[1] == pytest.approx(10 * t[0]) and t[2] == pytest.approx(100 * t[0])
    assert tdma_airtime(3, 1000, 8, 1e6) == pytest.approx(0.024)


def test_extra_delays() -> None:
    base = LatencyConfig(d=100, resources=10, symbol_time=1e-3)
    relay = LatencyConfig(d=100, resources=10, symbol_time=1e-3, downlink=True, hops=2,
                          propagation=1e-4, relay_processing=5e-4)
    assert communication_latency(relay) == pytest.approx(2 * 0.01 + 2e-4 + 5e-4)
    assert communication_latency(base) == pytest.approx(0.01)
    with pytest.raises(ValueError):
        communication_latency(LatencyConfig(scheme="smoke"))
