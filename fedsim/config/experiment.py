"""The experiment schema: every section of an experiment file, validated by pydantic.

Every section has defaults, so an experiment file holds only what differs. The parts that can be
extended live with their owners and are looked up by name: the workload (``fedsim.workloads``),
the strategy (``strategies``) and the channel's fading law, interference model and power control
(``channels``). Nothing here names a particular workload, strategy or channel model.
"""

from __future__ import annotations

import importlib.util
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SerializeAsAny, field_validator, model_validator

from channels import Channel, ChannelConfig, Dispatch
from channels.registry import params_model
from fedsim.device import DEVICE_PATTERN
from fedsim.workloads import WORKLOADS, WorkloadConfig, parse_workload_config
from strategies import STRATEGIES, Strategy, StrategyParams


class Section(BaseModel):
    """Base for every config section: unknown keys and NaN/inf are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)


class LrConfig(Section):
    """Step size eta_s at global step s = r*K + k.

    ``constant``: eta. ``inverse``: theta / (s + gamma) (the strongly convex schedule of the
    theory). ``cosine``: from eta down to eta_min over all rounds*K steps.
    """

    schedule: Literal["constant", "inverse", "cosine"] = Field(
        "constant", description="'constant': η; 'inverse': θ/(s + γ); 'cosine': from η down to eta_min")
    eta: float = Field(0.1, gt=0, le=100, description="η: the constant step size, or the cosine schedule's start")
    theta: float = Field(4.0, gt=0, description="θ of the inverse schedule θ/(s + γ)")
    gamma: float = Field(8.0, gt=0, description="γ of the inverse schedule θ/(s + γ)")
    eta_min: float = Field(0.0, ge=0, description="the cosine schedule's final step size")

    @model_validator(mode="after")
    def _cosine_floor(self) -> LrConfig:
        if self.schedule == "cosine" and self.eta_min > self.eta:
            raise ValueError("train.lr.eta_min must not exceed train.lr.eta")
        return self


class TrainConfig(Section):
    """UE-side training: K local SGD steps per round."""

    local_steps: int = Field(1, ge=1, le=100_000, description="K: local steps of every UE per round")
    lr: LrConfig = LrConfig()


class TimingConfig(Section):
    """Simulated wall clock (seconds). tau_cm is taken from the channel's latency model unless
    ``tau_cm`` or ``latency_ratio`` (tau_cm = ratio * tau_cp) is set."""

    tau_cp: float = Field(1e-3, gt=0, description="compute time of one local step [s]")
    tau_cp_spread: float = Field(0.0, ge=0, description="per-UE tau_cp = tau_cp*(1 + spread*U(0,1))")
    tau_cm: float | None = Field(None, ge=0, description="communication latency per exchange [s]")
    latency_ratio: float | None = Field(None, ge=0, description="tau_cm / tau_cp")


class EngineConfig(Section):
    """How the Flower apps run. ``ray``: Flower's simulation runtime on Ray; ``inline``: an
    in-process Grid (no Ray). Both give identical metrics for the same seed when UEs run one by one;
    the inline engine's population path (the default where it can run) equals them to rounding."""

    name: Literal["ray", "inline"] = Field(
        "ray", description="'ray': Flower's simulation runtime on Ray (sweeps: parallel Ray tasks); 'inline': in "
                           "this process")
    ray_address: str | None = Field(None, description="join an existing Ray cluster")
    num_cpus: int | None = Field(None, ge=1, le=4096, description="CPUs for a local Ray")
    cpus_per_ue: float = Field(1.0, gt=0, le=64, description="CPUs one Ray UE actor asks for (actors = CPUs / this)")
    object_store_mb: int = Field(512, ge=80, le=65536, description="object store of a local Ray [MiB]")
    device: str = Field("cpu", description="where tensors live: 'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when "
                                           "this process sees a GPU)")
    gpus_per_ue: float | None = Field(
        None, ge=0, le=64, description="GPU share of one Ray UE actor, or of one sweep variant task (fractions "
                                       "allowed, e.g. 0.25); default 0 on CPU, an even share of the GPUs on CUDA")
    batched: bool = Field(
        False, description="inline engine: train a round's UEs together through the workload's vectorised "
                           "gradient (server-based strategies with update/model transmission; server-free "
                           "strategies with any transmission, each UE from its own model after its due "
                           "estimates; not with overlap). Equal to the per-UE path to float tolerance")
    threads: int = Field(
        1, ge=1, le=1024, description="torch threads of the run's own process (set-up, evaluation, the population "
                                      "path); 1 keeps the numbers independent of the machine. The per-UE ClientApps "
                                      "always compute with one thread")
    population: bool | Literal["auto"] = Field(
        "auto", description="inline engine, built-in strategies (overlap too), workloads with a vectorised "
                            "gradient: run each round for all UEs as one tensor program (server-free: on the "
                            "stacked UE models [N, d]) instead of one ClientApp call per UE; faults, policies, "
                            "checkpoints and resume as on the per-UE path, numbers equal to it to rounding. "
                            "'auto': wherever it can run; true: refuse a run where it cannot; false: per UE")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.match(DEVICE_PATTERN, value):
            raise ValueError("expected 'cpu', 'cuda', 'cuda:N' (N = 0, 1, ...) or 'auto'")
        return value


#: Result loggers (``output.loggers``) and the package each needs beyond fedsim's own dependencies.
LOGGER_PACKAGES: dict[str, str | None] = {"csv": None, "tensorboard": "tensorboard", "mlflow": "mlflow",
                                          "wandb": "wandb"}


#: A folder name: no separators, not only dots (the characters of a sweep's variant ids).
RUN_NAME = r"^[A-Za-z0-9._+=,()-]*[A-Za-z0-9_+=,()-][A-Za-z0-9._+=,()-]*$"


class OutputConfig(Section):
    """Where results go. ``metrics.jsonl`` is always written; ``loggers`` mirror its rows into
    other formats (see ``fedsim.runtime.loggers``)."""

    dir: str = Field("runs", min_length=1, description="parent folder of run directories and sweep folders")
    run_name: str | None = Field(None, min_length=1, max_length=200, pattern=RUN_NAME,
                                 description="folder name of the run directory (suffixed if taken); unset: "
                                             "NAME-UTC timestamp; a sweep names each variant's folder by its id")
    plot: bool = Field(True, description="write figures/convergence.{png,pdf} when the run ends")
    loggers: list[Literal["csv", "tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=list, description="also log every round to: 'csv' (metrics.csv), 'tensorboard', 'mlflow', "
                                          "'wandb' (each but csv needs its extra: pip install 'fedsim[NAME]')")
    mlflow_uri: str | None = Field(None, min_length=1, description="MLflow tracking URI; unset: MLFLOW_TRACKING_URI, "
                                                                   "else the file store OUTPUT_DIR/mlruns")

    @field_validator("loggers")
    @classmethod
    def _installed(cls, value: list[str]) -> list[str]:
        # find_spec, not import: validation runs in every Ray actor and must stay cheap
        for name in value:
            package = LOGGER_PACKAGES[name]
            if package is not None and importlib.util.find_spec(package) is None:
                raise ValueError(f"{name!r} needs the {package} package: pip install 'fedsim[{name}]'")
        if len(set(value)) < len(value):
            raise ValueError("a logger is named twice")
        return value


class CheckpointConfig(Section):
    """Resumable state under ``RUN_DIR/checkpoints/``.

    ``every``: checkpoint after every ``every`` rounds; 0 disables checkpoints; unset (the
    default) picks it from the state size: every round while the state is at most
    ``auto_mib`` MiB, otherwise about every ``size / auto_mib`` rounds. Temp file + rename makes a
    checkpoint atomic against a killed process; ``fsync`` also makes it durable across a machine
    crash (costs about 10-20 ms per checkpoint on this kind of disk).
    """

    every: int | None = Field(None, ge=0, le=1_000_000, description="checkpoint every this many rounds; 0: never; "
                                                                      "unset: chosen from the state size")
    auto_mib: float = Field(8.0, gt=0, le=1e6, description="with every unset: checkpoint about this many MiB per "
                                                           "round")
    fsync: bool = Field(False, description="fsync checkpoint files: survives power loss, not only a killed process")


class DivergenceConfig(Section):
    """A run ends cleanly with status ``diverged`` when a model (global, or any UE model) has a
    non-finite entry or a Euclidean norm above ``max_norm``."""

    max_norm: float = Field(1e8, gt=0, description="a model norm above this ends the run as diverged")


class FaultsConfig(Section):
    """Injected UE faults (all seeded from stream ``"faults"``; rounds count from 1).

    ``unavailable``: probability that a UE is unavailable in a round. ``trace``: [round, ue]
    pairs that are unavailable. ``raise_at``: [round, ue] pairs where the UE raises mid-training.
    ``nan_at``: [round, ue] pairs where the UE transmits NaN. ``slowdown``: [ue, factor] pairs
    multiplying that UE's compute time; with ``deadline`` (seconds of compute per round) a UE
    whose ``steps * tau_cp * factor`` exceeds it is dropped from the superposition.
    ``policy`` for non-finite contributions: ``exclude`` (leave them out, the rest is aggregated),
    ``skip-round`` (no aggregate that round) or ``zero`` (non-finite entries become 0).
    ``kill_at`` is a testing aid, not a UE fault: the run's own process sends itself SIGKILL right
    after round ``kill_at``'s row (and its checkpoint, when one is due) is written, as ``kill -9``
    would; a run resumed from a checkpoint does not fire it again (see ``fedsim.runtime.faults``).
    """

    unavailable: float = Field(0.0, ge=0, le=1, description="probability that a UE is unavailable in a round")
    trace: list[tuple[int, int]] = Field(default_factory=list, description="[round, ue] pairs that are unavailable")
    raise_at: list[tuple[int, int]] = Field(default_factory=list,
                                            description="[round, ue] pairs where the UE raises mid-training")
    nan_at: list[tuple[int, int]] = Field(default_factory=list,
                                          description="[round, ue] pairs where the UE transmits NaN")
    slowdown: list[tuple[int, float]] = Field(default_factory=list,
                                              description="[ue, factor] pairs multiplying that UE's compute time")
    deadline: float | None = Field(None, gt=0, description="seconds of compute per round; slower UEs miss the "
                                                           "superposition")
    policy: Literal["exclude", "skip-round", "zero"] = Field(
        "exclude", description="non-finite transmissions: 'exclude' them, 'skip-round' (no aggregate), or 'zero' "
                               "their non-finite entries")
    kill_at: int | None = Field(
        None, ge=1, description="testing aid: SIGKILL this run's process right after round kill_at is recorded and "
                                "checkpointed (a run resumed from a checkpoint ignores it)")

    @model_validator(mode="after")
    def _check_pairs(self) -> FaultsConfig:
        for key in ("trace", "raise_at", "nan_at"):
            for r, ue in getattr(self, key):
                if r < 1 or ue < 0:
                    raise ValueError(f"faults.{key}: [{r}, {ue}] needs round >= 1 and ue >= 0")
        for ue, factor in self.slowdown:
            if ue < 0 or not factor > 0:
                raise ValueError(f"faults.slowdown: [{ue}, {factor}] needs ue >= 0 and factor > 0")
        return self

    @property
    def active(self) -> bool:
        return bool(self.unavailable or self.trace or self.raise_at or self.nan_at or
                    (self.deadline is not None and self.slowdown))


def _parse_strategy(value: Any) -> StrategyParams:
    if isinstance(value, StrategyParams):
        return value
    if not isinstance(value, dict):
        raise ValueError("expected a table such as {name = 'server-ota'}")
    name = value.get("name", StrategyParams.model_fields["name"].default)
    return params_model(STRATEGIES, name).Params.model_validate({**value, "name": name})


def _parse_workload(value: Any) -> WorkloadConfig:
    if isinstance(value, dict) and "name" not in value:
        value = {**value, "name": "synthetic-logreg"}
    return parse_workload_config(value)


WorkloadField = Annotated[SerializeAsAny[WorkloadConfig], BeforeValidator(_parse_workload),
                          Dispatch(lambda node: WORKLOADS.get(node.get("name", "synthetic-logreg")), WORKLOADS)]
StrategyField = Annotated[SerializeAsAny[StrategyParams], BeforeValidator(_parse_strategy),
                          Dispatch(lambda node: STRATEGIES.get(node.get("name", "server-digital")).Params, STRATEGIES)]


class ExperimentConfig(Section):
    """A whole experiment. ``fedsim list`` shows the shipped experiment files."""

    model_config = ConfigDict(validate_default=True)

    name: str = Field("experiment", pattern=r"^[A-Za-z0-9_.+-]{1,80}$",
                      description="names the run directory (letters, digits, _ . + -)")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="the experiment seed every random stream is keyed by")
    rounds: int = Field(50, ge=1, le=1_000_000, description="communication rounds")
    eval_every: int = Field(1, ge=1, description="evaluate the models every this many rounds (and the last)")
    eval_ue_sample: int = Field(
        32, ge=0, description="UE-held models: per-UE metric spread over at most this many UE models (0 = all)")
    workload: WorkloadField = Field(default_factory=lambda: {"name": "synthetic-logreg"})
    train: TrainConfig = TrainConfig()
    strategy: StrategyField = Field(default_factory=lambda: {"name": "server-digital"})
    channel: ChannelConfig = ChannelConfig()
    timing: TimingConfig = TimingConfig()
    engine: EngineConfig = EngineConfig()
    output: OutputConfig = OutputConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    divergence: DivergenceConfig = DivergenceConfig()
    faults: FaultsConfig = FaultsConfig()
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="dotted key -> list of values; the grid of variants (see fedsim.sweep)",
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_total_steps(cls, data: Any) -> Any:
        """Workloads that schedule by training progress (e.g. moe-lm's stage switch) take
        ``total_steps``; unless given, it is rounds * train.local_steps of this experiment."""
        if not isinstance(data, dict) or not isinstance(data.get("workload"), dict):
            return data
        name = str(data["workload"].get("name", ""))
        if name not in WORKLOADS or "total_steps" in data["workload"]:
            return data
        if "total_steps" not in WORKLOADS.get(name).model_fields:
            return data
        rounds, train = data.get("rounds", 50), data.get("train", {})
        steps = train.get("local_steps", 1) if isinstance(train, dict) else 1
        if isinstance(rounds, int) and isinstance(steps, int) and rounds > 0 and steps > 0:
            data = {**data, "workload": {**data["workload"], "total_steps": rounds * steps}}
        return data

    @model_validator(mode="after")
    def _check_cross_fields(self) -> ExperimentConfig:
        strategy = self.strategy_class(self.strategy)(self.strategy, self.train.local_steps)
        strategy.check()
        Channel(self.channel, strategy.receiver)  # parts that cannot work together raise ValueError
        for key, values in self.sweep.items():
            if not values:
                raise ValueError(f"sweep.{key}: needs at least one value")
        return self

    @staticmethod
    def strategy_class(params: StrategyParams) -> type[Strategy]:
        return STRATEGIES.get(params.name)

    def make_strategy(self) -> Strategy:
        """The strategy object of this experiment."""
        return self.strategy_class(self.strategy)(self.strategy, self.train.local_steps)
