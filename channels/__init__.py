"""fedsim channels: the physics of analog over-the-air FL, in pure torch (no flwr, no ray).

Interference (Gaussian, SαS, isotropic SαS), block fading, power control, receivers (server,
relay, d2d, digital), latency models and distribution facts. See reference §2, §5, §7, §8.
"""

from channels.channel import (
    INTERFERENCE_MODES,
    RECEIVERS,
    Channel,
    ChannelConfig,
    ChannelResult,
)
from channels.fading import (
    complex_normal,
    estimate_csi,
    mean_abs_gain,
    mean_real_gain,
    sample_fading,
)
from channels.interference import (
    GaussianInterference,
    InterferenceModel,
    NoInterference,
    SaSInterference,
    interference_scale,
    make_interference,
)
from channels.latency import LatencyConfig, analog_airtime, communication_latency, tdma_airtime
from channels.power import compute_rho, gains
from channels.quantize import stochastic_quantize
from channels.stable import sample_positive_stable, sample_sas, sample_sas_isotropic
from channels.stats import (
    C_G,
    dropout_probability,
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
    "INTERFERENCE_MODES",
    "RECEIVERS",
    "Channel",
    "ChannelConfig",
    "ChannelResult",
    "GaussianInterference",
    "InterferenceModel",
    "LatencyConfig",
    "NoInterference",
    "SaSInterference",
    "analog_airtime",
    "communication_latency",
    "complex_normal",
    "compute_rho",
    "dropout_probability",
    "empirical_scale",
    "estimate_csi",
    "gains",
    "geometric_power",
    "hill_estimator",
    "interference_scale",
    "make_interference",
    "mean_abs_gain",
    "mean_real_gain",
    "mean_scale",
    "rayleigh_mean_abs",
    "rayleigh_var_abs",
    "rician_mean_abs",
    "sample_fading",
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
