"""Running a search: every (method, seed) trace in one search folder, resumable after a kill.

Layout of ``<out>/<name>-<UTC timestamp>/``:

- ``search.toml``: the spec as it ran, with the resolved base experiment (a resume needs nothing else);
- ``candidates.jsonl``: one line per evaluation, appended as each batch lands (method, seed, n, config,
  fidelity, value, reward, cost, cumulative cost, run folder, status); ``candidates.csv`` the same;
- live mode: one sweep folder per batch (``<method>-s<seed>-e<first n>-<timestamp>/``) holding every
  candidate's run directory;
- ``curves.csv``, ``figures/search-curves.{png,pdf}``, ``summary.json`` at the end.

Resume: the methods are deterministic given their seed and the rewards they were told, so a resumed
search replays each trace, answering the evaluations already in ``candidates.jsonl`` from the file
(checking that the replay asks for the same candidates) and running the rest; an unfinished batch
continues in its own sweep folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from fedsim.errors import ConfigError, RunDirError, RunInterrupted
from fedsim.results.rundir import atomic_write_text, dumps, stamped_dir
from fedsim.search.baselines import random_search, tpe_search
from fedsim.search.hyperband import hyperband_search
from fedsim.search.objective import Benchmark, LiveBenchmark
from fedsim.search.outputs import write_outputs
from fedsim.search.reward import RewardLink
from fedsim.search.rl import rl_search
from fedsim.search.space import FidelitySpace, SearchSpace
from fedsim.search.spec import SearchSpec, spec_from_data
from fedsim.search.tabular import TabularBenchmark, load_table
from fedsim.sweep.preflight import check_parent_writable

__all__ = ["CANDIDATES", "SPEC", "make_benchmark", "prepare_search", "run_search"]

SPEC, CANDIDATES = "search.toml", "candidates.jsonl"
Hook = Callable[[dict[str, Any]], None]


def make_benchmark(spec: SearchSpec, folder: Path | None = None, quiet: bool = True) -> Benchmark:
    """The spec's benchmark: the table (tabular) or live runs in ``folder``."""
    if spec.mode == "tabular":
        bench = TabularBenchmark(load_table(spec.table))
        for what, mine, theirs in (("space", spec.space, bench.table["space"]),
                                   ("fidelity", spec.fidelity, bench.table["fidelity"])):
            if mine and mine != theirs:
                raise ConfigError(f"tabular mode: [{what}] differs from the table's {theirs}; omit it")
        return bench
    return LiveBenchmark(spec.base, SearchSpace(spec.space), FidelitySpace(spec.fidelity), spec.metric,
                         folder, quiet=quiet, reward_source=spec.reward.source)


def prepare_search(spec: SearchSpec, out: Path) -> Benchmark:
    """Everything a search refuses, checked before it writes anything (ConfigError/RunDirError)."""
    bench = make_benchmark(spec)
    if any(m in ("hyperband", "sh") for m in spec.methods):
        key = spec.hyperband.fidelity or (bench.fidelity.keys[0] if bench.fidelity.dims else None)
        if key is None or key not in bench.fidelity.keys:
            raise ConfigError(f"hyperband/sh need a fidelity key for their resource, got {key!r}")
    if isinstance(bench, LiveBenchmark):
        bench.check(out)
    check_parent_writable(out, "--out", "create a search folder")
    return bench


def run_search(spec: SearchSpec | None, out: Path | None = None, *, resume: Path | None = None,
               quiet: bool = True, hook: Hook | None = None, plot: bool = True) -> Path:
    """Run (or resume) a search and return its folder. ``hook(record)`` is called after each
    evaluation is on disk (tests use it to stop a search at a chosen point); ``plot`` draws the
    figure."""
    spec, folder, bench, done = _open(spec, out, resume, quiet)
    cache = {(r["method"], r["seed"], r["n"]): r for r in done}
    link = RewardLink(spec.reward.transport, spec.reward.channel)
    try:
        for method in spec.methods:
            for seed in spec.seeds:
                trace = _Trace(spec, bench, link, method, seed, folder, cache, hook)
                _run_method(spec, bench, method, seed, trace)
    except (KeyboardInterrupt, RunInterrupted) as exc:
        raise RunInterrupted(f"search interrupted; continue with: fedsim search --resume {folder}") from exc
    write_outputs(folder, spec, bench, _read_candidates(folder / CANDIDATES), plot=plot)
    return folder


def _open(spec: SearchSpec | None, out: Path | None, resume: Path | None, quiet: bool
          ) -> tuple[SearchSpec, Path, Benchmark, list[dict[str, Any]]]:
    """A new search folder (after every check) or the one being resumed, with its records so far
    (a torn last line of candidates.jsonl, from a kill mid-write, is dropped from the file)."""
    if resume is not None:
        folder = Path(resume)
        if not (folder / SPEC).is_file():
            raise RunDirError(f"--resume {folder}: not a search folder (needs {SPEC})")
        spec = spec_from_data(_read_spec(folder / SPEC), source=str(folder / SPEC))
        done = _read_candidates(folder / CANDIDATES)
        atomic_write_text(folder / CANDIDATES, "".join(json.dumps(r) + "\n" for r in done))
        return spec, folder, make_benchmark(spec, folder, quiet), done
    if spec is None:
        raise ConfigError("run_search needs a spec or resume")
    out = Path(out or "runs")
    prepare_search(spec, out)
    folder = stamped_dir(out, spec.name)
    saved = json.loads(dumps(spec.model_dump(mode="json", exclude_none=True)))
    atomic_write_text(folder / SPEC, tomli_w.dumps(saved))
    return spec, folder, make_benchmark(spec, folder, quiet), []


def _run_method(spec: SearchSpec, bench: Benchmark, method: str, seed: int, trace: _Trace) -> None:
    args = (bench.space, bench.fidelity, spec.budget, seed, trace)
    if method == "rl":
        rl_search(*args, p=spec.rl.p, eps=spec.rl.eps, eta=spec.rl.eta, init=spec.rl.init)
    elif method == "random":
        random_search(*args, batch=spec.batch)
    elif method in ("hyperband", "sh"):
        hyperband_search(*args, eta=spec.hyperband.eta, key=spec.hyperband.fidelity, only_sh=method == "sh")
    else:
        tpe_search(*args, batch=spec.batch, startup=spec.tpe.startup)


class _Trace:
    """The ``evaluate`` a method calls: numbers its evaluations, answers replayed ones from the
    record, answers a candidate this trace has already run (same config and fidelity; from an
    earlier batch only if that run did not fail) from that run, since a run of the same experiment
    gives the same numbers (recorded with ``reused_from`` and cost 0), runs the rest as one batch,
    sends each value through the reward link, and appends the records. Returns the rewards the
    method sees (larger is better)."""

    def __init__(self, spec: SearchSpec, bench: Benchmark, link: RewardLink, method: str, seed: int,
                 folder: Path, cache: dict[tuple[str, int, int], dict[str, Any]], hook: Hook | None) -> None:
        self.spec, self.bench, self.link, self.method, self.seed = spec, bench, link, method, seed
        self.folder, self.cache, self.hook = folder, cache, hook
        self.n, self.cum_cost = 0, 0.0
        self.ran: dict[str, int] = {}  # candidate -> n of this trace's first successful run of it

    def __call__(self, points: list[tuple[np.ndarray, dict[str, Any]]]) -> list[float]:
        batch = [(self.bench.space.config(pt), fid) for pt, fid in points]
        first = self.n
        keys = [(self.method, self.seed, first + i) for i in range(len(batch))]
        for key, (config, fid) in zip(keys, batch, strict=True):
            rec = self.cache.get(key)
            if rec is not None and (rec["config"] != config or rec["fidelity"] != fid):
                raise ConfigError(f"cannot resume: evaluation {key} was {rec['config']} at {rec['fidelity']}, "
                                  f"the replay asks for {config} at {fid}; start a new search")
        # Which evaluations run and which repeat one: decided from the runs before this batch only,
        # so that a resumed batch hands its sweep folder the same candidates in the same order.
        source, runs = self._plan(batch, first)
        if any(key not in self.cache for key in keys):
            fresh = self.bench.evaluate([batch[i] for i in runs], tag=f"{self.method}-s{self.seed}-e{first:04d}")
            results = {first + i: res for i, res in zip(runs, fresh, strict=True)}
            for i, key in enumerate(keys):
                if key not in self.cache:
                    n = source[i]
                    res = results[n] if n >= first else _as_result(self.cache[(self.method, self.seed, n)])
                    self._record(key, batch[i], res, None if n == key[2] else n)
        for i, key in enumerate(keys):
            if source[i] == key[2] and not self.cache[key]["failed"]:
                self.ran[_candidate_key(batch[i])] = key[2]
        self.n += len(batch)
        recs = [self.cache[key] for key in keys]
        self.cum_cost = recs[-1]["cum_cost"] if recs else self.cum_cost
        return [float(r["reward"]) if self.spec.maximize else -float(r["reward"]) for r in recs]

    def _plan(self, batch: list[tuple[dict[str, Any], dict[str, Any]]], first: int) -> tuple[list[int], list[int]]:
        """``source[i]``: the evaluation whose run answers evaluation ``first + i`` (itself, an
        earlier one of this batch, or one of an earlier batch that did not fail); ``runs``: the batch
        indices that run, in order."""
        source, runs, seen = [], [], dict(self.ran)
        for i, cand in enumerate(batch):
            ck = _candidate_key(cand)
            if ck not in seen:
                seen[ck] = first + i
                runs.append(i)
            source.append(seen[ck])
        return source, runs

    def _record(self, key: tuple[str, int, int], cand: tuple[dict[str, Any], dict[str, Any]],
                res: dict[str, Any], reused_from: int | None = None) -> None:
        """Append the record of evaluation ``key``; ``reused_from``: the evaluation whose run answers
        it (then its cost is 0)."""
        value = res["value"] if res["value"] is not None else self.spec.fail_value
        prev = self.cache.get((key[0], key[1], key[2] - 1))
        if "ue_values" in res:  # each UE's own metric, weighted by its data share
            values, weights = np.asarray(res["ue_values"]), np.asarray(res["ue_weights"])
        else:  # every UE reports the pooled value
            values, weights = np.full(max(int(cand[1].get("workload.num_ues", self.bench.num_ues)), 1), value), None
        reward = self.link.combine(values, weights, seed=self.seed, round=key[2])
        exact = float(np.dot(values, weights) / np.sum(weights)) if weights is not None else float(value)
        cost = 0.0 if reused_from is not None else res["cost"]
        rec = {"method": key[0], "seed": key[1], "n": key[2], "config": cand[0], "fidelity": cand[1],
               "value": value, "reward": reward, "reward_exact": exact, "cost": cost,
               "cum_cost": (prev["cum_cost"] if prev else 0.0) + cost,
               "status": res.get("status"), "run_dir": res.get("run_dir"), "failed": res["value"] is None,
               "reused_from": reused_from}
        if "ue_values" in res:
            rec.update(ue_values=res["ue_values"], ue_weights=res["ue_weights"])
        with open(self.folder / CANDIDATES, "a", encoding="utf-8") as f:
            f.write(json.dumps(json.loads(dumps(rec))) + "\n")
        self.cache[key] = rec
        if self.hook is not None:
            self.hook(rec)


def _candidate_key(cand: tuple[dict[str, Any], dict[str, Any]]) -> str:
    return json.dumps(cand, sort_keys=True, default=str)


def _as_result(rec: dict[str, Any]) -> dict[str, Any]:
    """What the benchmark returned for a recorded evaluation, to answer a repeat of it."""
    out = {k: rec[k] for k in ("value", "cost", "run_dir", "status")}
    out.update({k: rec[k] for k in ("ue_values", "ue_weights") if k in rec})
    return out


def _read_spec(path: Path) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(path.read_text(encoding="utf-8"))


def _read_candidates(path: Path) -> list[dict[str, Any]]:
    """The records of ``candidates.jsonl``, stopping at a torn last line."""
    out: list[dict[str, Any]] = []
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            break
    return out
