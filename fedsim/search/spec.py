"""The search spec: a TOML file that ``fedsim search SPEC.toml`` reads.

    name = "lr-search"
    experiment = "quickstart"          # the base experiment: a shipped name or a TOML file
    set = ["sweep={}", "rounds=27"]    # overrides on the base, as --set takes them
    mode = "live"                      # live: run the federated training; tabular: the lookup table
    methods = ["rl", "random", "hyperband", "tpe"]
    budget = 16                        # evaluations per method and seed
    seeds = [0, 1, 2]
    metric = "accuracy"

    [space]
    "train.lr.eta" = [0.01, 0.03, 0.1, 0.3, 1.0]
    [fidelity]
    rounds = [3, 9, 27]

Everything is validated, and every candidate's config too (each space and fidelity value on the
base), before the search writes anything.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from channels import ChannelConfig
from fedsim.config import apply_overrides, read_toml, validate
from fedsim.config.messages import format_errors
from fedsim.errors import ConfigError

__all__ = ["METHOD_NAMES", "SearchSpec", "load_spec", "spec_from_data"]

METHOD_NAMES = ("rl", "random", "hyperband", "sh", "tpe")


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class RlParams(_Part):
    """The finite-difference policy-gradient search."""

    p: int = Field(8, ge=1, description="perturbations (candidates) per iteration")
    eps: int = Field(1, ge=1, description="perturbation size ε in grid steps (every dimension)")
    eta: float = Field(1.0, gt=0, description="step size η of the update, in grid steps")
    init: Literal["center", "random"] = Field("center", description="π_0: the grid's centre or a random point")


class HyperbandParams(_Part):
    """Successive halving and Hyperband (Li et al., 2018)."""

    eta: int = Field(3, ge=2, description="halving rate η: keep the best 1/η of a rung")
    fidelity: str | None = Field(None, description="the fidelity key whose levels are the resource "
                                                   "(default: the first fidelity key)")


class TpeParams(_Part):
    """Optuna's tree-structured Parzen estimator."""

    startup: int = Field(5, ge=1, description="random trials before TPE models the results")


class RewardParams(_Part):
    """How the UEs' scalar rewards reach every UE."""

    source: Literal["pooled", "ue-validation"] = Field(
        "pooled", description="pooled: every UE reports the run's final metric on the pooled test set; "
                              "ue-validation: UE k reports the final model's metric on its own validation data")
    transport: Literal["digital", "analog"] = Field(
        "digital", description="digital: the weighted sum exactly; analog: over the air through `channel`")
    channel: ChannelConfig = Field(default_factory=lambda: ChannelConfig(interference="gaussian", gsnr_db=20.0),
                                   description="the channel of the analog transport (server receiver)")


class SearchSpec(_Part):
    """A federated hyperparameter search."""

    name: str = Field("search", pattern=r"^[A-Za-z0-9_.-]+$", description="the search folder's name")
    experiment: str | None = Field(None, description="live: the base experiment (shipped name or TOML file)")
    set: list[str] = Field(default_factory=list, description="overrides on the base experiment")
    mode: Literal["live", "tabular"] = Field("live", description="live runs, or the shipped lookup table")
    table: str | None = Field(None, description="tabular: a table file (default: the shipped one)")
    methods: list[Literal["rl", "random", "hyperband", "sh", "tpe"]] = Field(
        default_factory=lambda: ["rl", "random"], min_length=1, description="the search methods to run")
    budget: int = Field(16, ge=1, le=100000, description="evaluations per method and seed")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="search seeds")
    metric: str = Field("accuracy", description="the metric of summary.json's final that is the reward")
    maximize: bool = Field(True, description="whether a larger metric is better")
    batch: int = Field(4, ge=1, description="random search and TPE: candidates evaluated together")
    fail_value: float = Field(0.0, description="the value of a candidate whose run failed")
    space: dict[str, list[Any]] = Field(default_factory=dict, description="search keys to grids")
    fidelity: dict[str, list[Any]] = Field(default_factory=dict, description="fidelity keys to levels")
    reward: RewardParams = Field(default_factory=RewardParams)
    rl: RlParams = Field(default_factory=RlParams)
    hyperband: HyperbandParams = Field(default_factory=HyperbandParams)
    tpe: TpeParams = Field(default_factory=TpeParams)
    base: dict[str, Any] = Field(default_factory=dict, description="resolved base experiment (written by "
                                                                   "the search; overrides `experiment`)")


def load_spec(path: str | Path) -> SearchSpec:
    """Read and validate a spec file (ConfigError for any problem)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"search spec not found: {p}")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: malformed TOML: {exc}") from None
    return spec_from_data(data, source=str(p), root=p.parent)


def spec_from_data(data: dict[str, Any], source: str = "search spec", root: Path | None = None) -> SearchSpec:
    """Validate ``data`` as a spec; a live spec's base experiment is read and stored in ``base``."""
    try:
        spec = SearchSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid search spec\n" + format_errors(exc, data)) from None
    if spec.mode == "live":
        if not spec.base:
            if spec.experiment is None:
                raise ConfigError(f"{source}: a live search needs `experiment` (a shipped name or a TOML file)")
            exp = Path(spec.experiment)
            if root is not None and not exp.is_absolute() and (root / exp).is_file():
                exp = root / exp
            spec.base = apply_overrides(read_toml(exp), spec.set)
            spec.base["sweep"] = {}
            spec.base.setdefault("output", {}).pop("dir", None)
        if not spec.space:
            raise ConfigError(f"{source}: a live search needs a [space] table")
        validate(spec.base, f"{source}: base experiment")
    if spec.mode == "tabular" and spec.reward.source != "pooled":
        raise ConfigError(f"{source}: reward.source = {spec.reward.source!r} needs live runs (the table holds "
                          "pooled values only)")
    if spec.hyperband.fidelity is not None and spec.hyperband.fidelity not in spec.fidelity and spec.mode == "live":
        raise ConfigError(f"{source}: hyperband.fidelity = {spec.hyperband.fidelity!r} is not a [fidelity] key")
    if any(m in ("hyperband", "sh") for m in spec.methods) and spec.mode == "live" and not spec.fidelity:
        raise ConfigError(f"{source}: hyperband and sh need a [fidelity] table (their resource levels)")
    return spec
