"""Assemble a validated experiment once: workload, strategy, channel, schedule and clock inputs.

:func:`assemble` is also the preflight: everything that can be wrong with a config that
validated (memory, device, parts that cannot work together) raises :class:`ConfigError` here,
before anything is written. The result is handed to the engines explicitly; UE processes that do
not share this one (Ray actors) rebuild their side from the config text (:func:`ue_side`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from channels import Channel
from fedsim.config import ExperimentConfig
from fedsim.device import run_device
from fedsim.errors import ConfigError, FedsimError
from fedsim.runtime import faults
from fedsim.runtime.clock import Clock, communication_time, compute_times
from fedsim.runtime.schedule import make_lr
from fedsim.workloads import Workload, build_workload
from strategies import ServerSetup, Strategy
from strategies.base import LrFn, NoiseFactor
from strategies.overlap import delay_in_steps, steps_per_block


@dataclass
class UESide:
    """What every UE of a run needs: the config, the workload, the strategy's UE rule, the step
    size and the per-UE compute times (for fault plans)."""

    config: ExperimentConfig
    workload: Workload
    strategy: Strategy
    lr: LrFn
    tau_cp: torch.Tensor

    def fault(self, server_round: int, ue: int, steps: int) -> str | None:
        """The fault injected into ``ue`` in ``server_round`` (None: none)."""
        cfg = self.config
        if not cfg.faults.active or not 0 < server_round <= cfg.rounds:
            return None
        return faults.plan(cfg, server_round, self.workload.num_ues, self.tau_cp, steps).get(ue)


def ue_side(cfg: ExperimentConfig) -> UESide:
    """A UE process's side of a run, built from the config (the workload on the run's device)."""
    workload = build_workload(cfg.workload, cfg.seed, run_device(cfg))
    return UESide(cfg, workload, cfg.make_strategy(), make_lr(cfg.train.lr, cfg.rounds * cfg.train.local_steps),
                  compute_times(cfg, workload.num_ues))


@dataclass
class Experiment:
    """A validated config, assembled once for one run.

    Attributes:
        config: the config.  config_json: its JSON text (what travels to the UEs).
        ue: the UE side (workload on the run's device, strategy, schedule).
        channel: the channel through the strategy's receiver.
        tau_cm: communication latency of one exchange [s].  delay: D, the overlap delay in local
            steps (0 for the sequential schedule).  steps: local steps per round (block length).
    """

    config: ExperimentConfig
    config_json: str
    ue: UESide
    channel: Channel
    tau_cm: float
    delay: int
    steps: int
    population: bool = False

    @property
    def workload(self) -> Workload:
        return self.ue.workload

    @property
    def strategy(self) -> Strategy:
        return self.ue.strategy

    @property
    def num_ues(self) -> int:
        return self.ue.workload.num_ues

    @cached_property
    def cpu_workload(self) -> Workload:
        """The workload on CPU, for the analytics (numpy, scipy): the run's own one on CPU runs."""
        wl = self.workload
        return wl if wl.device.type == "cpu" else build_workload(self.config.workload, self.config.seed)

    def noise_factor(self) -> NoiseFactor | None:
        """round -> factor scaling the channel noise (``channel.rho_growth = "lr"``), or None."""
        if self.config.channel.rho_growth == "none":
            return None
        lr, steps = self.ue.lr, self.steps
        eta0 = lr(0)
        return lambda r: lr((r - 1) * steps) / eta0

    def server_setup(self, node_of_ue: dict[int, int]) -> ServerSetup:
        """What the strategy's server side is built from, once the UEs' node ids are known."""
        wl = self.workload
        overlapped = self.config.strategy.overlap.enabled
        return ServerSetup(channel=self.channel, weights=wl.ue_weights(), node_of_ue=node_of_ue, seed=self.config.seed,
                           lr=self.ue.lr, steps=self.steps, delay=self.delay if overlapped else None,
                           init=wl.init_params().to(wl.device), device=wl.device, noise_factor=self.noise_factor())

    def clock(self) -> Clock:
        """A fresh simulated clock (per-UE compute times include the injected slow-downs)."""
        tau_cp = self.ue.tau_cp * faults.slowdowns(self.config, self.num_ues)
        return Clock(tau_cp, self.tau_cm, self.steps, self.config.strategy.overlap.enabled)


def assemble(cfg: ExperimentConfig) -> Experiment:
    """Build everything a run needs once; a ConfigError for choices that cannot run together."""
    check_memory(cfg)
    side = ue_side(cfg)  # a ConfigError when CUDA is asked for but missing
    workload, strategy = side.workload, side.strategy
    try:
        channel = Channel(cfg.channel, strategy.receiver)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    tau_cm = communication_time(cfg, channel, workload.dim, workload.num_ues)
    overlap = cfg.strategy.overlap
    delay = delay_in_steps(tau_cm, cfg.timing.tau_cp) if overlap.enabled else 0
    steps = steps_per_block(cfg.train.local_steps, delay, overlap.in_flight)
    if strategy.transmit == "gradient" and steps != 1:
        raise ConfigError(f"gradient transmission needs 1 step per block; this schedule has {steps} (D = {delay})")
    if workload.custom_local_train and (strategy.transmit == "gradient" or overlap.enabled):
        raise ConfigError(f"workload {cfg.workload.name} trains with its own local rule: use strategy.transmit="
                          "'update' or 'model' and no overlap")
    check_pipeline(cfg, channel, side, steps)
    faults.check_faults(cfg, workload.num_ues)
    check_batched(cfg, strategy, workload)
    population = population_path(cfg, strategy, workload)
    return Experiment(cfg, cfg.model_dump_json(), side, channel, tau_cm, delay, steps, population)


def check_pipeline(cfg: ExperimentConfig, channel: Channel, side: UESide, steps: int) -> None:
    """Refuse a pipelined overlap the channel cannot carry: a block is ready every K·τ_cp seconds
    (the slowest UE's), and one exchange's uplink occupies the channel for τ_up; with τ_up > K·τ_cp
    blocks would queue behind each other and arrive later than D steps. Only checked when τ_cm comes
    from the channel's latency model: an explicit timing.tau_cm or latency_ratio is a delay."""
    overlap, t = cfg.strategy.overlap, cfg.timing
    if not overlap.enabled or overlap.in_flight != "pipelined" or t.tau_cm is not None or t.latency_ratio is not None:
        return
    tau_up = channel.receiver.uplink_airtime(side.workload.dim, side.workload.num_ues)
    block = steps * float((side.tau_cp * faults.slowdowns(cfg, side.workload.num_ues)).max())
    if tau_up > block * (1 + 1e-12):
        raise ConfigError(f"strategy.overlap: the channel needs {tau_up:.3g} s to carry one block's uplink but a "
                          f"block is computed in {block:.3g} s (K = {steps} steps), so blocks would queue; use "
                          "strategy.overlap.in_flight = 'single', more local steps, or more channel.resources")


def check_batched(cfg: ExperimentConfig, strategy: Strategy, workload: Workload) -> None:
    """Refuse ``engine.batched`` where the batched path cannot run (a ConfigError naming why)."""
    if not cfg.engine.batched:
        return
    why = None
    if cfg.engine.name != "inline":
        why = "it needs engine.name = 'inline' (Ray's UE actors train one UE each)"
    elif strategy.supports_batched is not None:
        why = strategy.supports_batched
    elif workload.custom_local_train or not workload.batched_grad:
        why = f"workload {cfg.workload.name} has no vectorised gradient (batched_grad); use the per-UE path"
    if why is not None:
        raise ConfigError(f"engine.batched = true cannot be used here: {why}")


def population_path(cfg: ExperimentConfig, strategy: Strategy, workload: Workload) -> bool:
    """Whether the run takes the population path (``engine.population``): "auto" takes it wherever it
    can run; true where it cannot is a ConfigError naming why."""
    wanted = cfg.engine.population
    if wanted is False:
        return False
    why = None
    if cfg.engine.name != "inline":
        why = "it needs engine.name = 'inline' (Ray's UE actors hold one UE each)"
    elif cfg.engine.batched:
        why = "it already trains every UE at once; leave engine.batched = false"
    elif strategy.supports_population is not None:
        why = strategy.supports_population
    elif workload.custom_local_train or not workload.batched_grad:
        why = f"workload {cfg.workload.name} has no vectorised gradient (batched_grad); use the per-UE path"
    if why is not None and wanted is True:
        raise ConfigError(f"engine.population = true cannot be used here: {why}")
    return why is None


#: Copies of an [N, d] block a run holds at once: UE models, sync models, inbox, the channel's
#: transmitted, noise and estimate matrices (a deliberately rough upper estimate).
MODEL_COPIES = 6


def memory_estimate(cfg: ExperimentConfig) -> tuple[int, int]:
    """(bytes, d): a rough estimate of the model state of a run, N * d * 8 B * MODEL_COPIES.
    d comes from the same workload built with 2 UEs (it does not depend on N)."""
    n = int(cfg.workload.num_ues)
    small = cfg.workload.model_copy(update={"num_ues": min(n, 2)})
    d = build_workload(small, cfg.seed).dim
    return n * d * 8 * MODEL_COPIES, d


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def check_memory(cfg: ExperimentConfig) -> None:
    """Refuse, before building the workload, a run whose N x d state cannot fit in memory."""
    if cfg.workload.num_ues <= 1000:
        return  # small runs: not worth building a probe workload
    try:
        need, d = memory_estimate(cfg)
    except FedsimError:
        raise
    except Exception:  # noqa: BLE001 - the probe is best effort; the real build reports errors
        return
    have = available_memory()
    if have is not None and need > have:
        raise ConfigError(
            f"workload.num_ues = {cfg.workload.num_ues} with d = {d} needs about {need / 2**30:.1f} GiB "
            f"(N x d x 8 B x {MODEL_COPIES} copies) but only {have / 2**30:.1f} GiB is available; reduce num_ues")
