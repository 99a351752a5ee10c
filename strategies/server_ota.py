"""Server-based analog over-the-air FedAvg (``server-ota``).

UEs transmit v_n (gradient, model update or model) simultaneously; the server's matched filter
returns one noisy estimate of Σ_n q_n v_n (the ``server`` receiver), applies it to the global
model and broadcasts the model error-free. K = 1 with gradients is the "Revisiting" algorithm
(Yang et al. 2022); K > 1 with updates is the COTAF-style generalisation. Everything else is
digital FedAvg's (:mod:`strategies.fedavg`).
"""

from __future__ import annotations

from strategies.fedavg import ServerDigital


class ServerOTA(ServerDigital):
    """FedAvg whose aggregation is the analog ``server`` receiver; ``transmit = "auto"`` sends
    gradients when K = 1, else model updates."""

    receiver = "server"

    def default_transmit(self) -> str:
        return "gradient" if self.local_steps == 1 else "update"
