"""Receivers: who listens to the superposition and what each one decodes.

Each receiver is one file with a :class:`~channels.receivers.base.Receiver` subclass and one
line in :data:`RECEIVERS`. A strategy names the receiver it uses.
"""

from channels.receivers.base import Receiver
from channels.registry import Registry

#: name -> Receiver subclass (entry-point group ``fedsim.receivers``).
RECEIVERS: Registry[type[Receiver]] = Registry("receiver", {
    "server": "channels.receivers.server:ServerReceiver",
    "relay": "channels.receivers.relay:RelayReceiver",
    "d2d": "channels.receivers.d2d:D2DReceiver",
    "d2d-ideal": "channels.receivers.d2d_ideal:D2DIdealReceiver",
    "digital": "channels.receivers.digital:DigitalReceiver",
}, group="fedsim.receivers")

__all__ = ["RECEIVERS", "Receiver"]
