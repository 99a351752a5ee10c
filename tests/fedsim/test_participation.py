"""Who takes part in a round, against independent references: binomial and uniform laws for the
sampled subsets and the injected unavailability, and an exact equivalence between the server-free
medium (which re-delivers estimates to a UE whose reply failed) and server-based FedAvg, where the
global model makes missing an aggregate impossible."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from fedsim.config import apply_overrides, validate
from fedsim.results.rundir import read_metrics
from fedsim.runner import run_experiment
from fedsim.workloads.quadratic import Quadratic

N, ROUNDS = 10, 300


def run(tmp: Path, *overrides: str, rounds: int = ROUNDS, num_ues: int = N) -> list[dict]:
    cfg = validate(apply_overrides({}, [
        "engine.name='inline'", "output.plot=false", f"output.dir={str(tmp)!r}", "checkpoint.every=0",
        f"workload={{name='quadratic', num_ues={num_ues}, dim=3}}", f"rounds={rounds}", "seed=11",
        "channel.interference='gaussian'", "channel.scale=0.1", *overrides]))
    return read_metrics(run_experiment(cfg, quiet=True) / "metrics.jsonl")


@pytest.fixture
def trained(monkeypatch):
    """(step, UE) of every local gradient the run computes (K = 1: step = round - 1), one UE at a
    time (the per-UE path) or all at once (``stochastic_grad_many``: the batched and population
    paths)."""
    calls: list[tuple[int, int]] = []
    inside_many: list[bool] = []
    one, many = Quadratic.stochastic_grad, Quadratic.stochastic_grad_many

    def record(self, w, ue, step):
        if not inside_many:
            calls.append((step, ue))
        return one(self, w, ue, step)

    def record_many(self, ws, ues, step):
        calls.extend((step, int(ue)) for ue in ues)
        inside_many.append(True)
        try:
            return many(self, ws, ues, step)
        finally:
            inside_many.pop()

    monkeypatch.setattr(Quadratic, "stochastic_grad", record)
    monkeypatch.setattr(Quadratic, "stochastic_grad_many", record_many)
    return calls


@pytest.mark.parametrize("strategy", ["server-ota", "server-digital", "serverfree-relay"])
def test_partial_participation_samples_a_fresh_uniform_subset(tmp_path: Path, trained, strategy: str) -> None:
    """fraction = 0.3 of 10 UEs: exactly 3 UEs per round; over 300 rounds each UE takes part
    Binomial(300, 0.3) times (90 ± 7.9), the counts are uniform over UEs (chi-square), and the
    subsets change from round to round (about 110 of the C(10, 3) = 120 subsets are expected)."""
    run(tmp_path, f"strategy.name={strategy!r}", "strategy.fraction=0.3")
    by_round: dict[int, set[int]] = {}
    for step, ue in trained:
        by_round.setdefault(step, set()).add(ue)
    assert sorted(by_round) == list(range(ROUNDS))
    assert all(len(s) == 3 for s in by_round.values())
    counts = Counter(ue for s in by_round.values() for ue in s)
    per_ue = np.array([counts[u] for u in range(N)])
    assert stats.chisquare(per_ue).pvalue > 1e-3, per_ue
    lo, hi = stats.binom.ppf([1e-4, 1 - 1e-4], ROUNDS, 0.3)
    assert np.all((per_ue >= lo) & (per_ue <= hi)), per_ue
    distinct = len({frozenset(s) for s in by_round.values()})
    assert distinct >= 95, distinct
    repeats = sum(by_round[r] == by_round[r + 1] for r in range(ROUNDS - 1))
    assert repeats <= 10, repeats  # a repeat has probability 1/120 per pair of rounds


def test_unavailable_ues_fail_at_the_configured_rate(tmp_path: Path, trained) -> None:
    """faults.unavailable = 0.2 with everyone sampled: the failures over 10 UEs × 300 rounds are
    Binomial(3000, 0.2), spread evenly over UEs, independent across UEs (rounds with no failure:
    0.8^10 ≈ 10.7%), and an unavailable UE computes nothing."""
    rows = run(tmp_path, "strategy.name='server-ota'", "faults.unavailable=0.2")[1:]
    failed = [set(r.get("failed_ues", [])) for r in rows]
    total = sum(len(f) for f in failed)
    assert stats.binomtest(total, N * ROUNDS, 0.2).pvalue > 1e-3, total
    per_ue = np.array([sum(u in f for f in failed) for u in range(N)])
    assert stats.chisquare(per_ue).pvalue > 1e-3, per_ue
    none = sum(not f for f in failed)
    assert stats.binomtest(none, ROUNDS, 0.8**N).pvalue > 1e-3, none
    computed: dict[int, set[int]] = {}
    for step, ue in trained:
        computed.setdefault(step, set()).add(ue)
    for r, f in enumerate(failed):
        assert computed.get(r, set()) == set(range(N)) - f
        assert rows[r]["participants"] == N - len(f)


FAULTS = {
    "raise": ["faults.raise_at=[[3, 1], [4, 1], [6, 2]]"],
    "unavailable": ["faults.trace=[[3, 1], [4, 1], [5, 1], [6, 2]]"],
}


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_a_failed_serverfree_ue_still_receives_every_estimate(tmp_path: Path, kind: str) -> None:
    """Noise-free channel: every estimate is the exact average of the replies. Server-based FedAvg
    holds one global model, so no UE can miss an aggregate; the server-free medium must re-deliver
    the estimates a failed UE did not receive. Then after the failures every UE holds the server's
    model (to rounding): the UEs agree (consensus 0) and their gap is the server run's gap."""
    common = ["channel.interference='none'", "strategy.transmit='gradient'", *FAULTS[kind]]
    server = run(tmp_path, "strategy.name='server-digital'", *common, rounds=9, num_ues=5)
    for strategy in ("serverfree-relay", "serverfree-d2d"):
        free = run(tmp_path, f"strategy.name={strategy!r}", "strategy.mode='accumulate'", *common, rounds=9,
                   num_ues=5)
        assert [r.get("failed_ues", []) for r in free] == [r.get("failed_ues", []) for r in server]
        last = free[-1]
        assert last["consensus"] < 1e-12, (strategy, last["consensus"])
        assert last["ue_gap_max"] == pytest.approx(server[-1]["gap"], rel=1e-9, abs=1e-15), strategy
        assert last["ue_gap_min"] == pytest.approx(server[-1]["gap"], rel=1e-9, abs=1e-15), strategy
