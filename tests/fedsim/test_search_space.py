"""Search spaces: grid points to configs, rounding to the grid, per-level list entries folded into
whole lists on the base experiment, and a live candidate's experiment."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.config import read_toml
from fedsim.errors import ConfigError
from fedsim.search import LiveBenchmark
from fedsim.search.space import FidelitySpace, SearchSpace, expand_indexed


def test_grid_points_and_rounding():
    space = SearchSpace({"a": [0.1, 0.3, 1.0], "b": ["max", "avg"]})
    assert space.cardinality == 6 and space.all_points().tolist()[1] == [0, 1]
    assert space.config([2, 1]) == {"a": 1.0, "b": "avg"}
    assert space.index_of({"a": 0.3, "b": "max"}) == [1, 0]
    assert space.clip(np.array([2.6, -0.4])).tolist() == [2, 0]  # 3 clipped to 2, -0 to 0
    assert FidelitySpace({"rounds": [3, 9, 27], "x": [1, 2]}).at_level("rounds", 0) == {"rounds": 3, "x": 2}


def test_indexed_keys_fold_into_the_base_lists():
    resolved = {"workload": {"filters": [8, 16, 32], "kernels": [3, 3, 3], "pooling": ["max", "max"]}, "rounds": 5}
    got = expand_indexed({"workload.filters[1]": 48, "workload.kernels[2]": 5, "workload.pooling[0]": "avg",
                          "rounds": 2}, resolved)
    assert got == {"rounds": 2, "workload.filters": [8, 48, 32], "workload.kernels": [3, 3, 5],
                   "workload.pooling": ["avg", "max"]}
    assert resolved["workload"]["filters"] == [8, 16, 32]  # the base is not changed
    with pytest.raises(ConfigError, match="3 entries"):
        expand_indexed({"workload.filters[3]": 8}, resolved)
    with pytest.raises(ConfigError, match="not a list"):
        expand_indexed({"rounds[0]": 8}, resolved)
    with pytest.raises(ConfigError, match="not a list"):
        expand_indexed({"workload.kernels[0]": 5}, {"workload": {"kernels": 3}})


def test_live_candidate_is_the_validated_experiment():
    base = read_toml("seg_unet")
    base["sweep"] = {}
    base["workload"].update(filters=[8, 16, 32], pooling=["max", "max"])
    space = SearchSpace({"workload.filters[0]": [4, 8], "workload.pooling[1]": ["max", "avg"]})
    bench = LiveBenchmark(base, space, FidelitySpace({"rounds": [2, 30]}), "dice")
    v = bench.variant(0, "x", space.config([0, 1]), {"rounds": 2})
    assert v.config.workload.filters == [4, 16, 32] and v.config.workload.pooling == ["max", "avg"]
    assert v.config.rounds == 2 and v.config.output.run_name == "x"
