"""Interference and noise after the matched filter.

Each model is one file with an :class:`~channels.interference.base.InterferenceModel` subclass and
one line in :data:`INTERFERENCE`. Levels are per-coordinate SαS **scales** ``c``
(``E e^{iuξ} = exp(-c^α|u|^α)``), so Gaussian interference at scale ``c`` has the law of SαS(2, c):
variance ``2c²``.
"""

from channels.interference.base import InterferenceModel, interference_scale
from channels.registry import Registry

#: name -> InterferenceModel subclass; third-party models register under the entry-point group
#: ``fedsim.interference``.
INTERFERENCE: Registry[type[InterferenceModel]] = Registry("interference model", {
    "none": "channels.interference.none:NoInterference",
    "gaussian": "channels.interference.gaussian:GaussianInterference",
    "sas": "channels.interference.sas:SaSInterference",
}, group="fedsim.interference")

__all__ = ["INTERFERENCE", "InterferenceModel", "interference_scale"]
