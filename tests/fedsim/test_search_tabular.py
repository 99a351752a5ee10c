"""Tabular mode: the shipped table passes its hash check and answers exactly what it recorded; an
altered table is refused; a search is deterministic and its outputs are written."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from fedsim.errors import ConfigError
from fedsim.search import TabularBenchmark, load_table
from fedsim.search.reward import RewardLink
from fedsim.search.tabular import SHIPPED_SHA256, SHIPPED_TABLE


def test_shipped_table_matches_its_hash_and_is_small():
    raw = SHIPPED_TABLE.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == SHIPPED_SHA256
    assert len(raw) < 1_000_000


def test_tabular_mode_returns_exactly_the_recorded_values():
    table = load_table()
    bench = TabularBenchmark(table)
    raw = json.loads(SHIPPED_TABLE.read_text(encoding="utf-8"))["records"]  # read independently
    assert len(raw) == bench.space.cardinality * bench.fidelity.cardinality
    for key, (value, cost) in raw.items():
        pair = json.loads(key)
        got = bench.objective(pair["config"], pair["fidelity"])
        assert got["value"] == value and got["cost"] == cost
    with pytest.raises(ConfigError, match="no entry"):
        bench.objective({"train.lr.eta": 0.5, "train.local_steps": 1, "workload.batch_size": 0})


def test_an_altered_table_is_refused(tmp_path):
    text = SHIPPED_TABLE.read_text(encoding="utf-8")
    altered = tmp_path / "t.json"
    altered.write_text(text.replace("0.", "0.9", 1), encoding="utf-8")
    with pytest.raises(ConfigError, match="altered"):
        load_table(altered, sha256=SHIPPED_SHA256)


def test_digital_reward_is_the_weighted_sum_and_noiseless_analog_equals_it():
    v, q = np.array([0.9, 0.7, 0.8, 0.6]), np.array([1.0, 3.0, 2.0, 2.0])
    exact = (0.9 * 1 + 0.7 * 3 + 0.8 * 2 + 0.6 * 2) / 8  # 0.725
    assert RewardLink("digital").combine(v, q, seed=0, round=0) == pytest.approx(exact, abs=1e-15)
    from channels import ChannelConfig

    clean = RewardLink("analog", ChannelConfig(interference="none"))
    assert clean.combine(v, q, seed=0, round=0) == pytest.approx(exact, abs=1e-12)
    noisy = RewardLink("analog", ChannelConfig(interference="gaussian", gsnr_db=0.0))
    draws = np.array([noisy.combine(v, q, seed=0, round=r) for r in range(200)])
    assert abs(np.median(draws) - exact) < 0.05 and draws.std() > 1e-3  # unbiased, noisy
    assert noisy.combine(v, q, seed=0, round=5) == draws[5]  # keyed by (seed, round)
