"""Legend labels: the config keys that tell runs apart, with channel parts as one value."""

from __future__ import annotations

from fedsim.results.labels import differing_keys, flatten, label_of


def test_quickstart_like_runs_are_told_apart_by_strategy_and_interference() -> None:
    base = {"seed": 0, "channel": {"scale": 0.5, "fading": "none"}, "workload": {"name": "synthetic-logreg"}}
    configs = [
        {**base, "strategy": {"name": "server-ota"}, "channel": {**base["channel"], "interference": "gaussian"}},
        {**base, "strategy": {"name": "server-ota"},
         "channel": {**base["channel"], "interference": {"name": "sas", "alpha": 1.5}}},
        {**base, "strategy": {"name": "serverfree-relay", "mode": "accumulate"},
         "channel": {**base["channel"], "interference": "gaussian"}, "seed": 3},
    ]
    flats = [flatten(c) for c in configs]
    assert flats[1]["channel.interference"] == "sas(alpha=1.5)"
    keys = differing_keys(flats)
    # strategy.mode exists for one strategy only, with one value: the strategy name already shows it;
    # the seed never tells groups apart
    assert keys == ["channel.interference", "strategy.name"]
    assert [label_of({k: f.get(k) for k in keys}, keys) for f in flats] == [
        "interference=gaussian, strategy.name=server-ota",
        "interference=sas(alpha=1.5), strategy.name=server-ota",
        "interference=gaussian, strategy.name=serverfree-relay",
    ]


def test_a_key_present_everywhere_or_with_two_values_differs() -> None:
    flats = [{"strategy.mode": "reset"}, {"strategy.mode": "accumulate"}, {}]
    assert differing_keys(flats) == ["strategy.mode"]
    assert differing_keys([{"a": 1}, {"a": 2}]) == ["a"] and differing_keys([{"a": 1}, {"a": 1}]) == []


def test_a_key_set_in_some_runs_only_differs_when_nothing_else_explains_it() -> None:
    """Two relay runs, one with interference_mode = common and one with the key unset: without the
    key they would be merged into one group; with strategies that differ, a strategy-only key is
    still left out."""
    relay = {"strategy.name": "serverfree-relay"}
    assert differing_keys([{**relay, "channel.interference_mode": "common"}, dict(relay)]) == [
        "channel.interference_mode"]
    flats = [{"strategy.name": "serverfree-relay", "strategy.mode": "reset"}, {"strategy.name": "server-ota"}]
    assert differing_keys(flats) == ["strategy.name"]
