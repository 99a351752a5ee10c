"""A new strategy in one file: FedAvg whose server takes the coordinate-wise median of what the UEs
send (a robust aggregator) instead of their weighted mean.

It reuses digital FedAvg's UE rule and server side and changes only the aggregation. With an even
number of transmitting UEs torch's median is the lower of the two middle values.
"""

from __future__ import annotations

import torch

from channels import ChannelResult
from strategies import STRATEGIES, ServerSetup, ServerSide
from strategies.fedavg import GlobalModelServer, ServerDigital


class MedianServer(GlobalModelServer):
    """The global model's server side, aggregating by coordinate-wise median (no channel)."""

    def estimate(self, server_round: int, transmitted: dict[int, torch.Tensor]
                 ) -> tuple[torch.Tensor | None, ChannelResult | None]:
        V = torch.stack([transmitted[ue] for ue in sorted(transmitted)])
        return V.median(dim=0).values, None


class ServerMedian(ServerDigital):
    """Digital FedAvg with a coordinate-wise median at the server (``transmit = "auto"``: models)."""

    def check(self) -> None:
        super().check()
        if self.params.overlap.enabled:
            raise ValueError("server-median has no overlapped schedule: set strategy.overlap.enabled = false")

    def server(self, setup: ServerSetup) -> ServerSide:
        return MedianServer(setup, transmit=self.transmit, fraction=self.params.fraction)


STRATEGIES.register("server-median", ServerMedian)
