"""Power control: per-UE precoders ``p_n`` and the real gains ``a_n`` the receiver decodes.

A UE transmits ``p_n·v_n``; the receiver sees ``Re(h_n p_n)·v_n`` (real payload on complex
baseband; the matched filter keeps the in-phase part) and divides by a known gain, so that the
decoded coefficient is ``a_n`` (``a_n = 1`` for perfect inversion). Each law is one file with a
:class:`~channels.power.base.PowerControl` subclass and one line in :data:`POWER_CONTROL`; the
power scaling ``ρ_t`` rules are in :mod:`channels.power.rho`.
"""

from channels.power.base import PowerControl
from channels.power.rho import RHO_RULES, compute_rho
from channels.registry import Registry

#: name -> PowerControl subclass (entry-point group ``fedsim.power_control``).
POWER_CONTROL: Registry[type[PowerControl]] = Registry("power-control law", {
    "inversion": "channels.power.inversion:TruncatedInversion",
    "phase": "channels.power.phase:PhaseOnly",
    "none": "channels.power.none:NoPowerControl",
}, group="fedsim.power_control")

__all__ = ["POWER_CONTROL", "RHO_RULES", "PowerControl", "compute_rho"]
