"""The shipped latency table: its loader checks the SHA-256, it lands in the wheel, and the
architecture indexing agrees with a nested enumeration written out by hand."""

from __future__ import annotations

import fnmatch
import itertools
import tomllib
from pathlib import Path

import numpy as np
import pytest

from fedsim.workloads.latency.space import CHANNELS, KERNELS, NUM_ARCHS, PROFILES, decode, encode
from fedsim.workloads.latency.table import TABLE_PATH, TABLE_SHA256, LatencyTableError, load_table, sha256_of

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_table_loads_and_is_small() -> None:
    table = load_table()
    assert table.latency_ms.shape == (len(PROFILES), NUM_ARCHS) and table.latency_ms.min() > 0
    assert [p.name for p in table.profiles] == [p.name for p in PROFILES]
    assert TABLE_PATH.stat().st_size < 1_000_000 and sha256_of(TABLE_PATH) == TABLE_SHA256
    assert {"min", "median", "max"} <= set(table.meta["load_avg_1min"]) and table.meta["repeats"] >= 3


def test_corrupt_copy_is_refused_with_a_clear_message(tmp_path) -> None:
    good = tmp_path / "good.npz"
    good.write_bytes(TABLE_PATH.read_bytes())
    assert np.array_equal(load_table(good).latency_ms, load_table().latency_ms)
    data = bytearray(TABLE_PATH.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(LatencyTableError, match="corrupt or was changed") as err:
        load_table(bad)
    assert TABLE_SHA256 in str(err.value) and "measure_latency.py" in str(err.value)
    with pytest.raises(LatencyTableError, match="not found"):
        load_table(tmp_path / "missing.npz")


def test_table_is_package_data() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["fedsim"]
    rel = TABLE_PATH.relative_to(ROOT / "fedsim").as_posix()
    assert any(fnmatch.fnmatch(rel, g) for g in globs)


def test_indexing_matches_a_nested_enumeration() -> None:
    choices = [(c, k) for c in CHANNELS for k in KERNELS]  # choice = 4 * channel index + kernel index
    by_hand = [(a, b, c) for c, b, a in itertools.product(choices, repeat=3)]  # layer 0 varies fastest
    got = decode(np.arange(NUM_ARCHS))
    assert [tuple(map(tuple, row)) for row in got.tolist()] == by_hand
    assert [encode(list(arch)) for arch in by_hand[:50]] == list(range(50))
