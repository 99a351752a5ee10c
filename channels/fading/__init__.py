"""Fading laws (block fading: constant within a round, i.i.d. over rounds, UEs and links).

Each law is one file with a :class:`~channels.fading.base.FadingLaw` subclass and one line in
:data:`FADING`. Coefficients are complex baseband ``h`` with unit mean power ``E|h|² = 1``.
"""

from channels.fading.base import FadingLaw, complex_normal, estimate_csi
from channels.registry import Registry

#: name -> FadingLaw subclass; third-party laws register under the entry-point group
#: ``fedsim.fading``.
FADING: Registry[type[FadingLaw]] = Registry("fading law", {
    "none": "channels.fading.none:NoFading",
    "rayleigh": "channels.fading.rayleigh:Rayleigh",
    "rician": "channels.fading.rician:Rician",
}, group="fedsim.fading")

__all__ = ["FADING", "FadingLaw", "complex_normal", "estimate_csi"]
