"""Typed experiment configuration: TOML files validated by pydantic, with ``--set`` overrides.

Every section has defaults, so an experiment file holds only what differs. Invalid input
raises :class:`fedsim.errors.ConfigError` naming the key path, the bad value and what is
allowed; nothing is written to disk before validation succeeds.
"""

from __future__ import annotations

import copy
import math
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedsim.device import DEVICE_PATTERN
from fedsim.errors import ConfigError
from fedsim.workloads import WORKLOAD_NAMES, WorkloadConfig

QUICKSTART = Path(__file__).resolve().parent.parent / "experiments" / "quickstart.toml"


class Section(BaseModel):
    """Base for every config section: unknown keys and NaN/inf are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)


class LrConfig(Section):
    """Step size eta_s at global step s = r*K + k.

    ``constant``: eta. ``inverse``: theta / (s + gamma) (the strongly convex schedule of the
    theory). ``cosine``: from eta down to eta_min over all rounds*K steps.
    """

    schedule: Literal["constant", "inverse", "cosine"] = "constant"
    eta: float = Field(0.1, gt=0, le=100)
    theta: float = Field(4.0, gt=0)
    gamma: float = Field(8.0, gt=0)
    eta_min: float = Field(0.0, ge=0)


class TrainConfig(Section):
    """UE-side training: K local SGD steps per round."""

    local_steps: int = Field(1, ge=1, le=100_000)
    lr: LrConfig = LrConfig()


StrategyName = Literal["server-digital", "server-ota", "serverfree-relay", "serverfree-d2d"]
STRATEGY_NAMES: tuple[str, ...] = ("server-digital", "server-ota", "serverfree-relay", "serverfree-d2d")
RECEIVER_OF = {"server-digital": "digital", "server-ota": "server",
               "serverfree-relay": "relay", "serverfree-d2d": "d2d"}


class OverlapConfig(Section):
    """Computation overlapped with the exchange, DGA-style (reference §3(d), §9 items 6-7).

    The aggregate of a block arrives D = ceil(tau_cm / tau_cp) local steps after the block ends.
    ``merge = "swap"`` replaces the UE's own stale block by the aggregate; ``"replace"`` resets
    the model to the stale synchronised model (local progress since is dropped).
    ``in_flight = "pipelined"``: blocks queue in a FIFO; ``"single"``: one block in flight, so
    a block lasts max(K, D) steps.
    """

    enabled: bool = False
    in_flight: Literal["pipelined", "single"] = "pipelined"
    merge: Literal["swap", "replace"] = "swap"


class StrategyConfig(Section):
    """The algorithm (reference §3).

    ``server-digital``: (a) error-free FedAvg. ``server-ota``: (b) analog over-the-air FedAvg
    through the ``server`` receiver. ``serverfree-relay`` / ``serverfree-d2d``: (c) no server;
    each UE keeps its own model and applies its own matched-filter output.
    ``transmit`` (§2.4): ``auto`` = ``model`` for server-digital and for mode ``reset``,
    ``gradient`` when K = 1, else ``update``. ``mode`` (server-free only, §9 item 4):
    ``accumulate`` (transmit gradients/updates) or ``reset`` (transmit models).
    """

    name: StrategyName = "server-digital"
    fraction: float = Field(1.0, gt=0, le=1, description="fraction of UEs sampled per round")
    transmit: Literal["auto", "gradient", "update", "model"] = "auto"
    mode: Literal["accumulate", "reset"] = "accumulate"
    overlap: OverlapConfig = OverlapConfig()

    @property
    def serverfree(self) -> bool:
        return self.name.startswith("serverfree")


class ChannelSection(Section):
    """The physical layer (reference §2, §5; channels.ChannelConfig). Ignored by
    server-digital except ``quant_bits``. Interference level: set at most one of ``scale``
    (SaS scale c), ``dispersion`` (c^alpha) or ``gsnr_db`` (geometric SNR, §2.4)."""

    fading: Literal["none", "rayleigh", "rician"] = "none"
    rician_k: float = Field(1.0, ge=0)
    csi_error: float = Field(0.0, ge=0)
    power_control: Literal["inversion", "phase", "none"] = "inversion"
    h_th: float = Field(0.3, ge=0)
    power: float = Field(1.0, gt=0)
    rho: Literal["fixed", "norm", "cotaf"] = "fixed"
    rho_growth: Literal["none", "lr"] = Field(
        "none", description="'lr': rho_t grows as (eta_0/eta_t)^2, so noise shrinks with the step size (§2.4 c)")
    interference: Literal["none", "gaussian", "sas"] = "none"
    alpha: float = Field(2.0, gt=0, le=2)
    scale: float | None = Field(None, ge=0)
    dispersion: float | None = Field(None, ge=0)
    gsnr_db: float | None = Field(None, ge=-100, le=200)
    sas_vector: Literal["iid", "isotropic"] = "iid"
    interference_mode: Literal["common", "per_ue", "common+per_ue"] | None = None
    downlink_scale: float = Field(1.0, ge=0)
    quant_bits: int | None = Field(None, ge=1, le=32)
    # latency (§5): analog airtime ceil(d/W)*T_sym; digital TDMA N*d*bits/rate
    resources: int = Field(1000, ge=1, description="W: orthogonal real waveforms per symbol")
    symbol_time: float = Field(1e-6, gt=0, description="T_sym [s]")
    bits: int = Field(32, ge=1, le=64)
    rate: float = Field(1e6, gt=0, description="digital per-UE link rate [bit/s]")
    propagation: float = Field(0.0, ge=0, description="one-way propagation delay [s]")
    relay_processing: float = Field(0.0, ge=0, description="relay forwarding delay [s]")

    @model_validator(mode="after")
    def _one_level(self) -> ChannelSection:
        given = [k for k in ("scale", "dispersion", "gsnr_db") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"set only one of channel.scale, channel.dispersion, channel.gsnr_db (got {given})")
        return self


class TimingConfig(Section):
    """Simulated wall clock (seconds, reference §5). tau_cm is taken from the channel's
    latency model unless ``tau_cm`` or ``latency_ratio`` (tau_cm = ratio * tau_cp) is set."""

    tau_cp: float = Field(1e-3, gt=0, description="compute time of one local step [s]")
    tau_cp_spread: float = Field(0.0, ge=0, description="per-UE tau_cp = tau_cp*(1 + spread*U(0,1))")
    tau_cm: float | None = Field(None, ge=0, description="communication latency per exchange [s]")
    latency_ratio: float | None = Field(None, ge=0, description="tau_cm / tau_cp")


class EngineConfig(Section):
    """How the Flower apps run. ``ray``: Flower's simulation runtime on Ray; ``inline``: an
    in-process Grid (no Ray). Both give identical metrics for the same seed."""

    name: Literal["ray", "inline"] = "ray"
    ray_address: str | None = Field(None, description="join an existing Ray cluster")
    num_cpus: int | None = Field(None, ge=1, le=4096, description="CPUs for a local Ray")
    cpus_per_ue: float = Field(1.0, gt=0, le=64)
    object_store_mb: int = Field(512, ge=80, le=65536)
    device: str = Field("cpu", description="where tensors live: 'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when "
                                           "this process sees a GPU)")
    gpus_per_ue: float | None = Field(
        None, ge=0, le=64, description="GPU share of one Ray UE actor, or of one sweep variant task (fractions "
                                       "allowed, e.g. 0.25); default 0 on CPU, an even share of the GPUs on CUDA")
    batched: bool = Field(
        False, description="inline engine, server-based strategies: train a round's UEs together through the "
                           "workload's vectorised gradient (equal to the per-UE path to float tolerance)")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.match(DEVICE_PATTERN, value):
            raise ValueError("expected 'cpu', 'cuda', 'cuda:N' (N = 0, 1, ...) or 'auto'")
        return value


class OutputConfig(Section):
    """Where results go."""

    dir: str = Field("runs", min_length=1)
    plot: bool = True


class CheckpointConfig(Section):
    """Resumable state under ``RUN_DIR/checkpoints/`` (see the README, "Reliability").

    ``every``: checkpoint after every ``every`` rounds; 0 disables checkpoints; unset (the
    default) picks it from the state size: every round while the state is at most
    ``auto_mib`` MiB, otherwise about every ``size / auto_mib`` rounds. Temp file + rename makes a
    checkpoint atomic against a killed process; ``fsync`` also makes it durable across a machine
    crash (costs about 10-20 ms per checkpoint on this kind of disk).
    """

    every: int | None = Field(None, ge=0, le=1_000_000)
    auto_mib: float = Field(8.0, gt=0, le=1e6)
    fsync: bool = Field(False, description="fsync checkpoint files: survives power loss, not only a killed process")


class DivergenceConfig(Section):
    """A run ends cleanly with status ``diverged`` when a model (global, or any UE model) has a
    non-finite entry or a Euclidean norm above ``max_norm``."""

    max_norm: float = Field(1e8, gt=0)


class FaultsConfig(Section):
    """Injected UE faults (all seeded from stream ``"faults"``; rounds count from 1).

    ``unavailable``: probability that a UE is unavailable in a round. ``trace``: [round, ue]
    pairs that are unavailable. ``raise_at``: [round, ue] pairs where the UE raises mid-training.
    ``nan_at``: [round, ue] pairs where the UE transmits NaN. ``slowdown``: [ue, factor] pairs
    multiplying that UE's compute time; with ``deadline`` (seconds of compute per round) a UE
    whose ``steps * tau_cp * factor`` exceeds it is dropped from the superposition.
    ``policy`` for non-finite contributions: ``exclude`` (leave them out, the rest is aggregated),
    ``skip-round`` (no aggregate that round) or ``zero`` (non-finite entries become 0).
    """

    unavailable: float = Field(0.0, ge=0, le=1)
    trace: list[tuple[int, int]] = Field(default_factory=list)
    raise_at: list[tuple[int, int]] = Field(default_factory=list)
    nan_at: list[tuple[int, int]] = Field(default_factory=list)
    slowdown: list[tuple[int, float]] = Field(default_factory=list)
    deadline: float | None = Field(None, gt=0)
    policy: Literal["exclude", "skip-round", "zero"] = "exclude"

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


class ExperimentConfig(Section):
    """A whole experiment. See experiments/*.toml and the README for examples."""

    name: str = Field("experiment", pattern=r"^[A-Za-z0-9_.+-]{1,80}$")
    seed: int = Field(0, ge=0, le=2**63 - 1)
    rounds: int = Field(50, ge=1, le=1_000_000)
    eval_every: int = Field(1, ge=1)
    eval_ue_sample: int = Field(
        32, ge=0, description="server-free: per-UE metric spread over at most this many UE models (0 = all)")
    workload: WorkloadConfig = Field(default_factory=lambda: _default_workload())
    train: TrainConfig = TrainConfig()
    strategy: StrategyConfig = StrategyConfig()
    channel: ChannelSection = ChannelSection()
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
        wl_cls = _workload_class(str(data["workload"].get("name", "")))
        if wl_cls is None or "total_steps" not in wl_cls.model_fields or "total_steps" in data["workload"]:
            return data
        rounds, train = data.get("rounds", 50), data.get("train", {})
        steps = train.get("local_steps", 1) if isinstance(train, dict) else 1
        if isinstance(rounds, int) and isinstance(steps, int) and rounds > 0 and steps > 0:
            data = {**data, "workload": {**data["workload"], "total_steps": rounds * steps}}
        return data

    @model_validator(mode="after")
    def _check_cross_fields(self) -> ExperimentConfig:
        if self.train.lr.schedule == "cosine" and self.train.lr.eta_min > self.train.lr.eta:
            raise ValueError("train.lr.eta_min must not exceed train.lr.eta")
        st, K = self.strategy, self.train.local_steps
        if st.transmit == "gradient" and K != 1:
            raise ValueError("strategy.transmit='gradient' needs train.local_steps = 1")
        if st.serverfree and st.mode == "reset" and st.transmit not in ("auto", "model"):
            raise ValueError("strategy.mode='reset' transmits models: use strategy.transmit='model' or 'auto'")
        if st.transmit == "model" and st.serverfree and st.mode == "accumulate":
            raise ValueError("strategy.mode='accumulate' cannot transmit models: use 'gradient' or 'update'")
        if st.overlap.enabled:
            if st.transmit == "model" or (st.serverfree and st.mode == "reset"):
                raise ValueError("strategy.overlap needs gradient or update transmission (not models/reset)")
            if st.fraction < 1:
                raise ValueError("strategy.overlap needs full participation (strategy.fraction = 1)")
        if st.name == "serverfree-d2d" and self.channel.power_control == "inversion" and self.channel.fading != "none":
            raise ValueError("serverfree-d2d cannot invert N-1 links: set channel.power_control to 'phase' or 'none'")
        if self.channel.interference != "none" and all(
            getattr(self.channel, k) is None for k in ("scale", "dispersion", "gsnr_db")
        ):
            raise ValueError("channel.interference is set: give channel.scale, channel.dispersion or channel.gsnr_db")
        for key, values in self.sweep.items():
            if not values:
                raise ValueError(f"sweep.{key}: needs at least one value")
        return self


def _default_workload() -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(WorkloadConfig).validate_python({"name": "synthetic-logreg"})


# --------------------------------------------------------------------------- loading


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=1.5"`` -> (["a", "b"], 1.5). Values are read as TOML, else taken as strings."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, for example workload.num_ues=10")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in path):
        raise ConfigError(f"--set {item!r}: empty key path")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``key.path=value`` in a copy of ``data``."""
    data = copy.deepcopy(data)
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, turning every failure into a ConfigError."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"experiment file not found: {p}")
    if not p.is_file():
        raise ConfigError(f"experiment path is not a file: {p}")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not a UTF-8 text file ({exc.reason})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: malformed TOML: {exc}") from None


def validate(data: dict[str, Any], source: str = "experiment") -> ExperimentConfig:
    """Validate a plain dict into an ExperimentConfig or raise a readable ConfigError."""
    _reject_non_finite(data, [])
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid configuration\n" + format_errors(exc)) from None


def load_experiment(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load ``path`` (the embedded quickstart when None), apply overrides, validate."""
    source = str(path) if path is not None else str(QUICKSTART)
    data = read_toml(source)
    data = apply_overrides(data, overrides or [])
    return validate(data, source)


def to_toml_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """The fully resolved config as TOML-writable data (None values dropped)."""
    return cfg.model_dump(mode="json", exclude_none=True)


# --------------------------------------------------------------------------- messages


def _reject_non_finite(node: Any, path: list[str]) -> None:
    # TOML allows nan/inf literals; no fedsim setting accepts them.
    if isinstance(node, dict):
        for k, v in node.items():
            _reject_non_finite(v, [*path, str(k)])
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _reject_non_finite(v, [*path, str(i)])
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{'.'.join(path)}: got {node!r}; NaN and infinity are not allowed")


_TAGS = set(WORKLOAD_NAMES) | set(STRATEGY_NAMES)


def format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"] if str(p) not in _TAGS]
        key = ".".join(loc) or "(top level)"
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(err["loc"][:-1])
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            lines.append(f"  {key}: unknown key{hint}")
        elif err["type"] == "union_tag_invalid":
            lines.append(f"  {key}.name: {err['msg']}")
        else:
            lines.append(f"  {key}: {err['msg']} (got {value!r})")
    return "\n".join(lines)


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model at ``loc`` (best effort, for error messages)."""
    model: Any = ExperimentConfig
    for part in loc:
        part = str(part)
        if part in WORKLOAD_NAMES:
            model = _workload_class(part)
            continue
        field = getattr(model, "model_fields", {}).get(part) if model is not None else None
        if field is None:
            return []
        ann = field.annotation
        # a discriminated union (the workload) resolves at the next loc part, its tag
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return sorted(getattr(model, "model_fields", {}).keys())


def _workload_class(name: str) -> Any:
    from typing import get_args

    union = get_args(WorkloadConfig)[0]
    for cls in get_args(union):
        if cls.model_fields["name"].default == name:
            return cls
    return None
