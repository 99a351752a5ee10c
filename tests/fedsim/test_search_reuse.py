"""A trace does not run a candidate it has already run: a repeat (same config and fidelity) is
answered from the earlier run, costs nothing, and everything else about the trace is unchanged.
References: the table's own values, and the number of distinct candidates counted from the records."""

from __future__ import annotations

import json

import pytest

from fedsim.search import run_search, spec_from_data
from fedsim.search.driver import CANDIDATES
from fedsim.search.tabular import TabularBenchmark, load_table


def _records(folder):
    return [json.loads(line) for line in (folder / CANDIDATES).read_text().splitlines()]


def test_repeated_candidates_are_answered_from_the_earlier_run(tmp_path, monkeypatch):
    asked: list[tuple] = []
    original = TabularBenchmark.evaluate

    def counting(self, batch, tag="batch"):
        asked.extend(batch)
        return original(self, batch, tag)

    monkeypatch.setattr(TabularBenchmark, "evaluate", counting)
    spec = spec_from_data({"name": "t", "mode": "tabular", "methods": ["rl"], "budget": 32, "seeds": [0, 1, 2],
                           "rl": {"p": 4}})
    recs = _records(run_search(spec, tmp_path, plot=False))
    table = TabularBenchmark(load_table())
    distinct = {(r["seed"], json.dumps([r["config"], r["fidelity"]], sort_keys=True)) for r in recs}
    repeats = [r for r in recs if r["reused_from"] is not None]
    assert repeats and len(asked) == len(distinct) == len(recs) - len(repeats)
    by_n = {(r["seed"], r["n"]): r for r in recs}
    for r in recs:
        want = table.lookup(r["config"], r["fidelity"])
        assert r["value"] == want["value"]
        prev = by_n.get((r["seed"], r["n"] - 1), {"cum_cost": 0.0})["cum_cost"]
        if r["reused_from"] is None:
            assert r["cost"] == want["cost"] and r["cum_cost"] == prev + want["cost"]
        else:
            src = by_n[(r["seed"], r["reused_from"])]
            assert src["reused_from"] is None and src["n"] < r["n"]
            assert (src["config"], src["fidelity"]) == (r["config"], r["fidelity"])
            assert r["cost"] == 0.0 and r["cum_cost"] == prev


class Killed(Exception):
    pass


def test_a_repeat_of_a_run_before_a_kill_is_answered_from_the_record_after_resume(tmp_path):
    spec = spec_from_data({"name": "t", "mode": "tabular", "methods": ["rl", "hyperband"], "budget": 12,
                           "seeds": [0, 1], "batch": 3,
                           "reward": {"transport": "analog", "channel": {"interference": "gaussian", "gsnr_db": 10.0}}})
    whole = _records(run_search(spec, tmp_path / "a", plot=False))
    pos = {(r["method"], r["seed"], r["n"]): i for i, r in enumerate(whole)}
    # a repeat whose source lands at least two records earlier: kill right after the source
    k = next(pos[(r["method"], r["seed"], r["reused_from"])] + 1 for r in whole
             if r["reused_from"] is not None and pos[(r["method"], r["seed"], r["reused_from"])] + 1 < pos[
                 (r["method"], r["seed"], r["n"])])

    def hook(record):
        hook.seen += 1
        if hook.seen == k:
            raise Killed
    hook.seen = 0
    try:
        run_search(spec, tmp_path / "b", hook=hook, plot=False)
    except Killed:
        pass
    (cut,) = list((tmp_path / "b").iterdir())
    assert len(_records(cut)) == k
    resumed = _records(run_search(None, resume=cut, plot=False))
    assert resumed == whole


def test_a_repeat_carries_the_ues_own_rewards_of_its_source(tmp_path, monkeypatch):
    """With per-UE rewards (reward.source = "ue-validation" in live mode) a repeat is rewarded from
    the source's per-UE values, not from the pooled value: Σ q_k r_k by hand."""
    original = TabularBenchmark.evaluate

    def with_ue_values(self, batch, tag="batch"):
        out = original(self, batch, tag)
        return [{**r, "ue_values": [r["value"], r["value"] - 0.1], "ue_weights": [1.0, 3.0]}
                if r["value"] is not None else r for r in out]

    monkeypatch.setattr(TabularBenchmark, "evaluate", with_ue_values)
    spec = spec_from_data({"name": "t", "mode": "tabular", "methods": ["rl"], "budget": 32, "seeds": [0],
                           "rl": {"p": 4}})
    recs = _records(run_search(spec, tmp_path, plot=False))
    repeats = [r for r in recs if r["reused_from"] is not None and r["reused_from"] // 4 != r["n"] // 4]
    assert repeats  # repeats of an earlier batch: answered from the record on file
    for r in recs:
        if not r["failed"]:
            assert r["reward_exact"] == pytest.approx((r["value"] + 3 * (r["value"] - 0.1)) / 4, abs=1e-12)
