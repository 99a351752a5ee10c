"""A search killed after candidate k resumes with the same candidates and results as an
uninterrupted one: tabular (every method, analog rewards) by default, live (sweeps) under slow."""

from __future__ import annotations

import importlib.util
import json

import pytest

from fedsim.search import run_search, spec_from_data
from fedsim.search.driver import CANDIDATES


class Killed(Exception):
    pass


def _kill_after(k):
    def hook(record):
        hook.seen += 1
        if hook.seen == k:
            raise Killed
    hook.seen = 0
    return hook


def _records(folder):
    return [json.loads(line) for line in (folder / CANDIDATES).read_text().splitlines()]


def _kill_and_resume(spec, tmp_path, k):
    whole = run_search(spec, tmp_path / "a", plot=False)
    with pytest.raises(Killed):
        run_search(spec, tmp_path / "b", hook=_kill_after(k), plot=False)
    (cut,) = list((tmp_path / "b").iterdir())
    assert len(_records(cut)) == k and not (cut / "summary.json").exists()
    resumed = run_search(None, resume=cut, plot=False)
    a, b = _records(whole), _records(resumed)
    for rec in a + b:
        rec.pop("run_dir")  # folder names carry timestamps
    assert a == b
    return whole, resumed


def test_killed_tabular_search_resumes_with_the_same_candidates(tmp_path):
    methods = ["rl", "random", "hyperband"] + (["tpe"] if importlib.util.find_spec("optuna") else [])
    spec = spec_from_data({"name": "t", "mode": "tabular", "methods": methods,
                           "budget": 12, "seeds": [0, 1], "batch": 3,
                           "reward": {"transport": "analog", "channel": {"interference": "gaussian",
                                                                         "gsnr_db": 10.0}}})
    whole, resumed = _kill_and_resume(spec, tmp_path, 29)
    assert len(_records(whole)) == len(methods) * 2 * 12
    assert (resumed / "curves.csv").read_text() == (whole / "curves.csv").read_text()


@pytest.mark.slow
def test_killed_live_search_resumes_with_the_same_candidates(tmp_path):
    spec = spec_from_data({"name": "live", "experiment": "quickstart", "methods": ["random", "sh"],
                           "set": ["strategy.name=server-digital", "workload.num_ues=4", "engine.name=inline",
                                   "output.plot=false", "checkpoint.every=0"],
                           "budget": 4, "batch": 2, "space": {"train.lr.eta": [0.03, 0.3, 1.0],
                                                              "train.local_steps": [1, 2]},
                           "fidelity": {"rounds": [1, 3]}, "hyperband": {"eta": 3}})
    whole, resumed = _kill_and_resume(spec, tmp_path, 3)  # killed inside the second batch of random
    runs = [p for p in resumed.iterdir() if p.is_dir() and p.name != "figures"]
    assert runs and all((p / "index.json").is_file() for p in runs)  # a sweep folder per batch
