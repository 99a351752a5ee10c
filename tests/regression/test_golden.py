"""The per-round rows of every shipped experiment (small settings) and of corner settings equal the
rows recorded before the redesign of the product floor (tests/regression/golden.json).

This guards refactors: a change that alters numbers on purpose re-records the file with
``python tests/regression/record_golden.py`` and says so in its commit. float64 workloads must
match to 1e-9 relative; float32 ones (CNNs, the transformer) to 1e-4, since another CPU's kernels
may sum in another order.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from record_golden import CASES, GOLDEN, run_case

FLOAT32_CASES = {"moe", "augment", "daas", "nas_dash", "nas_gdas", "nas_tabnas"}


def mismatches(got, want, rel: float, path: str = "") -> list[str]:
    """Where ``got`` differs from ``want``: floats beyond ``rel``, anything else at all."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = [f"{path}.{k}: missing or extra" for k in set(got) ^ set(want)]
        return out + [m for k in set(got) & set(want) for m in mismatches(got[k], want[k], rel, f"{path}.{k}")]
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return [f"{path}: {len(got)} items, recorded {len(want)}"]
        pairs = enumerate(zip(got, want, strict=True))
        return [m for i, (a, b) in pairs for m in mismatches(a, b, rel, f"{path}[{i}]")]
    if isinstance(want, float) and isinstance(got, int | float) and not isinstance(got, bool):
        ok = math.isclose(got, want, rel_tol=rel, abs_tol=rel * 1e-3)
        return [] if ok else [f"{path}: {got!r} != recorded {want!r}"]
    return [] if got == want else [f"{path}: {got!r} != recorded {want!r}"]


@pytest.mark.parametrize("case", list(CASES))
def test_rows_equal_the_recorded_ones(case: str, tmp_path: Path) -> None:
    want = json.loads(GOLDEN.read_text())[case]
    got = run_case(case, tmp_path)
    bad = mismatches(got, want, 1e-4 if case in FLOAT32_CASES else 1e-9)
    assert not bad, f"{len(bad)} differences, first: " + "; ".join(bad[:5])


def test_the_comparison_catches_a_changed_number() -> None:
    rows = {"000": {"rows": [{"round": 1, "loss": 0.5, "failures": 0}]}}
    assert not mismatches(rows, rows, 1e-9)
    changed = {"000": {"rows": [{"round": 1, "loss": 0.5 * (1 + 1e-7), "failures": 0}]}}
    assert mismatches(changed, rows, 1e-9) and not mismatches(changed, rows, 1e-4)
    assert mismatches({"000": {"rows": [{"round": 1, "loss": 0.5, "failures": 1}]}}, rows, 1e-4)
