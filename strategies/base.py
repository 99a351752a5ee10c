"""What every strategy is made of: its parameters, its medium/server side and its UE rule.

A strategy is one file holding a :class:`Strategy` subclass (with its ``Params`` model beside it)
plus one line in :data:`strategies.STRATEGIES`. fedsim's round loop and ClientApp only talk to
these interfaces:

- the **server side** (:class:`ServerSide`, a Flower strategy) turns a round into messages and
  the replies into a :class:`RoundResult`;
- the **UE rule** (:meth:`Strategy.ue_round`) turns what a UE received into what it transmits,
  given a :class:`UEContext` (its id, training functions and private state).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import torch
from flwr.app import ConfigRecord, Message
from pydantic import BaseModel, ConfigDict, Field

from channels import Channel, ChannelResult
from strategies.common import Failure

GradFn = Callable[[torch.Tensor, int], torch.Tensor]  # (w, global step) -> g
LrFn = Callable[[int], float]  # global step -> step size
TrainFn = Callable[[torch.Tensor, int, int], torch.Tensor]  # (w, first step, steps) -> new model
NoiseFactor = Callable[[int], float]  # round -> f_r: the channel's noise is scaled by f_r


# ----------------------------------------------------------------------------- parameters


class OverlapParams(BaseModel):
    """Computation overlapped with the exchange, DGA-style.

    The aggregate of a block arrives D = ceil(tau_cm / tau_cp) local steps after the block ends.
    ``merge = "swap"`` replaces the UE's own stale block by the aggregate; ``"replace"`` resets
    the model to the stale synchronised model (local progress since is dropped).
    ``in_flight = "pipelined"``: blocks queue in a FIFO; ``"single"``: one block in flight, so
    a block lasts max(K, D) steps.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    in_flight: Literal["pipelined", "single"] = "pipelined"
    merge: Literal["swap", "replace"] = "swap"


class StrategyParams(BaseModel):
    """Options every strategy takes. A strategy with options of its own subclasses this.

    ``transmit``: what UEs put on the air. ``auto`` lets the strategy choose (gradients when
    K = 1, else model updates, unless the strategy says otherwise)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = "server-digital"
    fraction: float = Field(1.0, gt=0, le=1, description="fraction of UEs sampled per round")
    transmit: Literal["auto", "gradient", "update", "model"] = "auto"
    overlap: OverlapParams = OverlapParams()


# ----------------------------------------------------------------------------- what crosses the loop


@dataclass
class HeldModels:
    """Models someone holds at the end of a round: ``models [M, d]`` and their holders (UE ids),
    or ``holders = None`` for the one global model that every UE receives."""

    models: torch.Tensor
    holders: list[int] | None = None

    def as_dict(self) -> dict[int, torch.Tensor]:
        """UE id -> model (UE-held models only)."""
        return dict(zip(self.holders or [], self.models, strict=True))


@dataclass
class RoundResult:
    """What the server side reports for one exchange.

    Attributes:
        participants: UEs whose transmission entered the aggregate this exchange.
        failures: UEs whose reply failed or whose transmission was unusable.
        channel: the channel's result this exchange (None: nothing was transmitted).
        models: the models to evaluate for the round this exchange completes (None: not asked).
        row: strategy-specific fields for that round's metrics row.
    """

    participants: list[int] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    channel: ChannelResult | None = None
    models: HeldModels | None = None
    row: dict[str, Any] = field(default_factory=dict)


@dataclass
class Exchange:
    """One exchange's messages, and the UEs asked to transmit in it."""

    messages: list[Message]
    transmitting: set[int]


@dataclass
class ServerSetup:
    """Everything a server side is built from (assembled once per run by fedsim).

    ``delay`` is D in local steps for an overlapped schedule, None for the sequential one;
    ``steps`` is the block length (local steps per round)."""

    channel: Channel
    weights: torch.Tensor
    node_of_ue: dict[int, int]
    seed: int
    lr: LrFn
    steps: int
    delay: int | None
    init: torch.Tensor
    device: torch.device
    noise_factor: NoiseFactor | None = None


class ServerSide(Protocol):
    """The medium/server side of a strategy, as fedsim's round loop drives it.

    ``lag`` is 0 when a round's models are known when it ends (a global model), 1 when UEs report
    their models with the next exchange (then the loop runs one final flush exchange)."""

    lag: int

    def initial_models(self) -> HeldModels | None: ...

    def configure(self, server_round: int, config: ConfigRecord, *, report: bool, flush: bool) -> Exchange: ...

    def aggregate(self, server_round: int, replies: Iterable[Message]) -> RoundResult: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


# ----------------------------------------------------------------------------- the UE side


@dataclass
class UEContext:
    """What a UE's rule may use in one round.

    Attributes:
        ue: the UE id (partition id).  first_step, steps: the round's global steps.
        lr, grad, train: step size, stochastic gradient and the workload's local training.
        init: the common initial model (the same on every UE).
        state: the UE's private records (name -> {key -> tensor}); changes persist only if the
            round succeeds (a UE that fails keeps its previous state).
    """

    ue: int
    first_step: int
    steps: int
    lr: LrFn
    grad: GradFn
    train: TrainFn
    init: Callable[[], torch.Tensor]
    state: dict[str, dict[str, torch.Tensor]]
    device: torch.device


@dataclass
class UEOutput:
    """What a UE sends back: its transmission (None: it does not transmit) and reported vectors
    (for example its own model, so that it can be evaluated)."""

    transmission: torch.Tensor | None
    reports: list[torch.Tensor] = field(default_factory=list)


# ----------------------------------------------------------------------------- the strategy


class Strategy(ABC):
    """One registered algorithm.

    Args:
        params: its validated parameters (``Params``).
        local_steps: K, local steps per round (some choices depend on it).

    Class attributes:
        Params: the parameter model (a :class:`StrategyParams` subclass).
        receiver: the channel receiver this algorithm uses (see ``channels.RECEIVERS``).
        serverfree: UEs keep their own models and no model lives on a server.
    """

    Params: ClassVar[type[StrategyParams]] = StrategyParams
    receiver: ClassVar[str] = "server"
    serverfree: ClassVar[bool] = False
    #: The built-in family whose UE rule the population path reproduces (``engine.population``;
    #: set by ``strategies.fedavg`` and ``strategies.serverfree``). A subclass with its own
    #: ``ue_round`` runs per UE.
    population_family: ClassVar[type | None] = None

    def __init__(self, params: StrategyParams, local_steps: int) -> None:
        self.params = params
        self.local_steps = local_steps

    # ------------------------------------------------------------------ choices
    def default_transmit(self) -> str:
        """What ``transmit = "auto"`` means: gradients when K = 1, else model updates."""
        return "gradient" if self.local_steps == 1 else "update"

    @property
    def transmit(self) -> str:
        """The resolved transmitted quantity: "gradient", "update" or "model"."""
        t = self.params.transmit
        return self.default_transmit() if t == "auto" else t

    @property
    def resets_models(self) -> bool:
        """UEs replace their model by the aggregate of transmitted models."""
        return False

    @property
    def holds_ue_models(self) -> bool:
        """UEs keep their own models between rounds (server-free, or any overlapped schedule)."""
        return self.serverfree or self.params.overlap.enabled

    @property
    def supports_batched(self) -> str | None:
        """Why the batched path (one vectorised local training for a round's UEs) cannot run this
        strategy, or None when it can."""
        if self.params.overlap.enabled:
            return ("strategy.overlap merges estimates between a UE's local steps, so its training cannot be "
                    "run ahead of the UE; use the per-UE path (engine.batched = false)")
        if self.holds_ue_models:
            return (f"strategy {self.params.name} keeps a model per UE and has no rule for where its local "
                    "training starts (training_start); use the per-UE path")
        if self.transmit == "gradient":
            return "strategy.transmit = 'gradient' takes no local steps; use 'update' or 'model'"
        return None

    @property
    def supports_population(self) -> str | None:
        """Why the population path (a round as one tensor program, no per-UE calls) cannot run this
        strategy, or None when it can: the built-in UE rules, sequential or overlapped."""
        family = self.population_family
        if family is None or type(self).ue_round is not family.ue_round:
            return (f"strategy {self.params.name} has a UE rule of its own, which only the per-UE path runs; "
                    "use engine.population = false")
        return None

    def training_start(self, records: dict[str, dict[str, torch.Tensor]], received: list[torch.Tensor],
                       config: ConfigRecord, init: Callable[[], torch.Tensor], lr: LrFn) -> torch.Tensor | None:
        """The model this round's local training (or gradient) of one UE starts from, computed
        from its private records (its ``Context.state``), its message, the common initial model and
        the step size, without changing any of them;
        None when the UE does not train. The batched path trains from it ahead of the UE rule,
        which must start from the same model. Default: the received (global) model."""
        return received[0] if received else None

    def check(self) -> None:
        """Raise ValueError for parameter combinations this algorithm cannot run."""
        p = self.params
        if p.transmit == "gradient" and self.local_steps != 1:
            raise ValueError("strategy.transmit='gradient' needs train.local_steps = 1")
        if p.overlap.enabled:
            if self.transmit == "model" or self.resets_models:
                raise ValueError("strategy.overlap needs gradient or update transmission (not models/reset)")
            if p.fraction < 1:
                raise ValueError("strategy.overlap needs full participation (strategy.fraction = 1)")

    # ------------------------------------------------------------------ the two sides
    @abstractmethod
    def server(self, setup: ServerSetup) -> ServerSide:
        """The medium/server side for one run."""

    @abstractmethod
    def ue_round(self, ctx: UEContext, received: list[torch.Tensor], config: ConfigRecord) -> UEOutput:
        """One round of one UE: ``received`` are the vectors its message carried, ``config`` the
        message's config record (as the server side wrote it)."""
