"""Every shipped experiment file validates, sweep variants included, and passes preflight."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsim.config import EXPERIMENTS_DIR, read_toml
from fedsim.run.execute import preflight
from fedsim.sweep import expand_sweep

EXPERIMENTS = sorted(EXPERIMENTS_DIR.glob("*.toml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_experiment_file_is_valid(path: Path) -> None:
    variants = expand_sweep(read_toml(path), [], source=str(path))
    assert variants, "no variants"
    names = {v.config.strategy.name for v in variants}
    assert names
    # building the workload and channel catches incompatible choices before anything runs;
    # one variant per strategy/workload combination keeps this fast
    seen: set[tuple[str, str]] = set()
    for v in variants:
        key = (v.config.strategy.name, v.config.workload.model_dump_json())
        if key not in seen:
            seen.add(key)
            assert preflight(v.config).num_ues >= 1
