"""Fixtures of the channel tests (here, not in tests/: a conftest there would put tests/ on the import
path, where tests/channels would hide the channels package from a plain `pytest`)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _fresh_caches_under_mutation_testing() -> None:
    """mutmut forks every mutant's test process from one that already ran the clean suite, so a
    memoised result of the original code would hide a mutant of a cached function: empty the
    caches first (only under mutmut; the normal suite keeps them)."""
    if "MUTANT_UNDER_TEST" in os.environ:
        from channels import stats

        stats.sas_median_abs.cache_clear()
