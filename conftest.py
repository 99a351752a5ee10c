"""Fixtures for every test (here at the root, not in tests/: a conftest there would put tests/ on
sys.path, where tests/channels would shadow the channels package under a plain `pytest`)."""

from __future__ import annotations

import pytest

from fedsim.workloads.registry import forget_built_workloads


@pytest.fixture(autouse=True)
def _fresh_workloads():
    """Every test builds its workloads afresh: one that changes a workload's tensors in place
    must not reach the next test through ``build_workload``'s kept workloads."""
    forget_built_workloads()
    yield
    forget_built_workloads()
