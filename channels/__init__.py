"""fedsim channels: the physics of analog over-the-air FL, in pure torch (no Flower, no Ray).

One schema (:class:`ChannelConfig`) and one entry point (:class:`Channel`), built from registered
parts: fading laws (:data:`FADING`), power control (:data:`POWER_CONTROL`), interference models
(:data:`INTERFERENCE`) and receivers (:data:`RECEIVERS`). Each part is one file plus one registry
line; the docs' how-to "Add a channel model" shows one. Also: latency models, SαS sampling and
distribution facts, tail-index estimators.
"""

from channels.channel import Channel
from channels.config import ChannelConfig
from channels.fading import FADING, FadingLaw, complex_normal, estimate_csi
from channels.interference import INTERFERENCE, InterferenceModel, interference_scale
from channels.latency import analog_airtime, communication_latency, tdma_airtime
from channels.power import POWER_CONTROL, PowerControl, compute_rho
from channels.quantize import stochastic_quantize
from channels.receivers import RECEIVERS, Receiver
from channels.registry import ComponentParams, Dispatch, Registry, UnknownName, component
from channels.result import ChannelResult
from channels.stable import sample_positive_stable, sample_sas, sample_sas_isotropic
from channels.stats import (
    C_G,
    empirical_scale,
    geometric_power,
    hill_estimator,
    mean_scale,
    rayleigh_mean_abs,
    rayleigh_var_abs,
    rician_mean_abs,
    sas_fractional_moment,
    sas_median_abs,
    sas_tail_constant,
    tail_slope_estimator,
)

__all__ = [
    "C_G",
    "FADING",
    "INTERFERENCE",
    "POWER_CONTROL",
    "RECEIVERS",
    "Channel",
    "ChannelConfig",
    "ChannelResult",
    "ComponentParams",
    "Dispatch",
    "FadingLaw",
    "InterferenceModel",
    "PowerControl",
    "Receiver",
    "Registry",
    "UnknownName",
    "analog_airtime",
    "communication_latency",
    "complex_normal",
    "component",
    "compute_rho",
    "empirical_scale",
    "estimate_csi",
    "geometric_power",
    "hill_estimator",
    "interference_scale",
    "mean_scale",
    "rayleigh_mean_abs",
    "rayleigh_var_abs",
    "rician_mean_abs",
    "sample_positive_stable",
    "sample_sas",
    "sample_sas_isotropic",
    "sas_fractional_moment",
    "sas_median_abs",
    "sas_tail_constant",
    "stochastic_quantize",
    "tail_slope_estimator",
    "tdma_airtime",
]
