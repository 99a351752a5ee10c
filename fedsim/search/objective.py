"""The benchmark interface (in the style of FedHPO-Bench): a search space, a fidelity space and an
objective ``objective(config, fidelity) -> {"value", "cost"}``.

``value`` is the run's final metric (summary.json's ``final[metric]``); ``cost`` is the run's
simulated wall clock, the ``sim_time`` of its last row (compute of the slowest participant plus
the communication latency, summed over rounds), so cheap fidelities cost less simulated time.

:class:`LiveBenchmark` runs the federated training: a batch of candidates is one sweep
(:func:`fedsim.sweep.run_sweep`) inside the search folder, so candidates run as parallel Ray tasks
with the ``ray`` engine (one after another with ``inline``), and a killed batch resumes from its
sweep folder. :class:`fedsim.search.tabular.TabularBenchmark` answers from a lookup table.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from fedsim.config import apply_overrides, to_toml_dict, validate
from fedsim.errors import ConfigError
from fedsim.results.rundir import read_metrics
from fedsim.search.space import FidelitySpace, SearchSpace, assignments, expand_indexed
from fedsim.search.ue_reward import check_ue_validation, ue_rewards
from fedsim.sweep import Variant, preflight_sweep, read_index, run_sweep
from fedsim.workloads.registry import build_workload

__all__ = ["Benchmark", "LiveBenchmark"]

Candidate = tuple[dict[str, Any], dict[str, Any]]  # (config, fidelity)


class Benchmark(ABC):
    """A search space, a fidelity space, and an objective returning ``{value, cost}``."""

    space: SearchSpace
    fidelity: FidelitySpace
    num_ues: int = 1  # K, the UEs whose rewards are summed (a fidelity may change it)

    def objective(self, config: dict[str, Any], fidelity: dict[str, Any] | None = None) -> dict[str, Any]:
        """One evaluation: ``{"value": float | None, "cost": float}`` (``None``: the run failed)."""
        return self.evaluate([(config, fidelity if fidelity is not None else self.fidelity.full())])[0]

    @abstractmethod
    def evaluate(self, batch: list[Candidate], tag: str = "batch") -> list[dict[str, Any]]:
        """Evaluate ``batch`` together; ``tag`` names the batch (a live batch's sweep folder)."""

    def full_value(self, config: dict[str, Any]) -> float | None:
        """The value at full fidelity when it is known without running (tabular); else None."""
        return None

    def optimum(self) -> float | None:
        """The best full-fidelity value over the whole space when known (tabular); else None."""
        return None


class LiveBenchmark(Benchmark):
    """Evaluate candidates by running them: one sweep per batch in ``folder``."""

    def __init__(self, base: dict[str, Any], space: SearchSpace, fidelity: FidelitySpace, metric: str,
                 folder: Path | None = None, *, quiet: bool = True, parallel: bool | None = None,
                 reward_source: str = "pooled") -> None:
        self.base, self.space, self.fidelity, self.metric = base, space, fidelity, metric
        self.reward_source = reward_source
        self.folder, self.quiet, self.parallel = folder, quiet, parallel
        resolved = validate(base, "base experiment")
        self.num_ues = int(getattr(resolved.workload, "num_ues", 1))
        self.resolved = to_toml_dict(resolved)

    def variant(self, i: int, vid: str, config: dict[str, Any], fidelity: dict[str, Any]) -> Variant:
        """The validated experiment of one candidate (ConfigError naming it if invalid)."""
        items = assignments(expand_indexed({**config, **fidelity}, self.resolved))
        data = apply_overrides(self.base, items)
        data.setdefault("output", {})["run_name"] = vid
        return Variant(i, vid, items, validate(data, f"search candidate {vid}"))

    def check(self, folder_parent: Path) -> None:
        """Every single space and fidelity value on the base validates, and those candidates pass
        a single run's preflight: bad input is refused before any write (ConfigError naming the value)."""
        base_cfg = validate(self.base, "base experiment")
        first = {d.key: d.values[0] for d in self.space.dims}
        full = self.fidelity.full()
        variants = []
        for what, dims in (("space", self.space.dims), ("fidelity", self.fidelity.dims)):
            for d in dims:
                for v in d.values:
                    cfg, fid = ({**first, d.key: v}, full) if what == "space" else (first, {**full, d.key: v})
                    try:
                        variants.append(self.variant(len(variants), f"check-{len(variants)}", cfg, fid))
                    except ConfigError as exc:
                        raise ConfigError(f"{what}.{d.key} = {v!r}: {exc}") from None
        if self.reward_source == "ue-validation":
            if base_cfg.checkpoint.every == 0:
                raise ConfigError("reward.source = 'ue-validation' reads the final model from the last checkpoint; "
                                  "do not set checkpoint.every = 0")
            check_ue_validation(build_workload(base_cfg.workload, base_cfg.seed), "base experiment")
        base_cfg.output.dir = str(folder_parent)
        preflight_sweep(variants, base_cfg, parallel=self._parallel(base_cfg.engine.name))

    def _parallel(self, engine: str) -> bool:
        return self.parallel if self.parallel is not None else engine == "ray"

    def evaluate(self, batch: list[Candidate], tag: str = "batch") -> list[dict[str, Any]]:
        if self.folder is None:
            raise ConfigError("a live benchmark needs a folder to run its candidates in")
        width = len(str(len(batch)))
        variants = [self.variant(i, f"{i:0{width}d}-{tag}", c, f) for i, (c, f) in enumerate(batch)]
        base_cfg = validate({**self.base, "name": tag, "output": {**self.base.get("output", {}),
                                                                 "dir": str(self.folder)}}, "base experiment")
        old = sorted(p for p in self.folder.glob(f"{tag}-*") if (p / "index.json").is_file())
        sweep_dir = run_sweep(variants, base_cfg, quiet=self.quiet, resume=old[-1] if old else None,
                              plot=False, parallel=self._parallel(base_cfg.engine.name))
        return [self._result(sweep_dir, e) for e in read_index(sweep_dir)["variants"]]

    def _result(self, sweep_dir: Path, entry: dict[str, Any]) -> dict[str, Any]:
        run_dir = sweep_dir / entry["run_dir"] if entry.get("run_dir") else None
        value, cost = None, 0.0
        if run_dir is not None and (run_dir / "summary.json").is_file():
            summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
            final, status = summary.get("final", {}), summary.get("status")
            value = final.get(self.metric) if status == "completed" else None
            if status == "completed" and self.metric not in final:
                entry = {**entry, "status": f"completed without metric {self.metric!r}"}
            rows = read_metrics(run_dir / "metrics.jsonl")
            cost = float(rows[-1].get("sim_time", 0.0)) if rows else 0.0
        rel = str(run_dir.relative_to(self.folder)) if run_dir is not None and self.folder else None
        out = {"value": None if value is None else float(value), "cost": cost, "run_dir": rel,
               "status": entry.get("status")}
        if self.reward_source == "ue-validation" and value is not None and run_dir is not None:
            try:
                r, q = ue_rewards(run_dir, self.metric)
                out.update(ue_values=r.tolist(), ue_weights=q.tolist())
            except (ConfigError, KeyError) as exc:
                out.update(value=None, status=f"no UE rewards: {exc}")
        return out
