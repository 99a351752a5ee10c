"""A server (or an AP with a computing unit): one estimate of the aggregate, broadcast error-free."""

from __future__ import annotations

from channels.receivers.base import Receiver


class ServerReceiver(Receiver):
    """Uplink superposition to one receiver; one common interference draw; ``[d]`` estimate."""
