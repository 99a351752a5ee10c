"""Fixtures for every test."""

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
