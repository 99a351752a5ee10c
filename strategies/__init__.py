"""fedsim strategies: the algorithms, one file per family, each holding its parameters, its
medium/server side (a Flower strategy) and its UE rule (pure tensor functions).

:data:`STRATEGIES` maps a name to a :class:`~strategies.base.Strategy` subclass. A new strategy
is one file plus one line here, or an entry point in the group ``fedsim.strategies`` of the
user's own package (see the docs' how-to "Add a strategy").
"""

from channels import Registry
from strategies.base import (
    Exchange,
    HeldModels,
    OverlapParams,
    RoundResult,
    ServerSetup,
    ServerSide,
    Strategy,
    StrategyParams,
    UEContext,
    UEOutput,
)

STRATEGIES: Registry[type[Strategy]] = Registry("strategy", {
    "server-digital": "strategies.fedavg:ServerDigital",
    "server-ota": "strategies.server_ota:ServerOTA",
    "serverfree-relay": "strategies.serverfree:ServerFreeRelay",
    "serverfree-d2d": "strategies.serverfree:ServerFreeD2D",
    "serverfree-d2d-ideal": "strategies.serverfree:ServerFreeD2DIdeal",
}, group="fedsim.strategies")

__all__ = [
    "STRATEGIES",
    "Exchange",
    "HeldModels",
    "OverlapParams",
    "RoundResult",
    "ServerSetup",
    "ServerSide",
    "Strategy",
    "StrategyParams",
    "UEContext",
    "UEOutput",
]
