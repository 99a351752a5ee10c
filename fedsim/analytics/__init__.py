"""Convergence theory (model §4), run-time model (§5) and post-run statistics (§8).

Pure functions over numpy; no Flower, no file I/O (§ numbers: docs/explanation/model.md). Modules:

- :mod:`.theory`: Theorem A bound (§4.3), exact quadratic reference (§4.4), K > 1 form (§4.6).
- :mod:`.consensus`: server-free deviation and drift scales (§4.5).
- :mod:`.runtime`: sequential / pipelined / single-in-flight wall clock and speed-ups (§5).
- :mod:`.fits`: log-log rate fits, seed summaries, hitting times, median-of-means.
"""

from .consensus import (
    accumulate_consensus_scale,
    lr_power_sum,
    lr_power_sum_exact_limit,
    lr_power_sum_limit,
    reset_deviation_moment_bound,
    reset_deviation_scale,
    s_n,
)
from .errors import AnalyticsError
from .fits import (
    LogLogFit,
    SeedBands,
    SeedSlopes,
    first_hit,
    loglog_fit,
    median_of_means,
    pth_moment_mom,
    rounds_to_target,
    running_median,
    seed_bands,
    seed_slopes,
    time_to_target,
)
from .runtime import (
    delay_steps,
    effective_k,
    pipeline_valid,
    pipelined_speedup,
    pipelined_time,
    sequential_time,
    single_in_flight_round_time,
    single_in_flight_speedup,
    single_in_flight_time,
    time_to_accuracy_speedup,
)
from .theory import (
    b_ota,
    default_p,
    fedavg_gaussian_bound,
    inverse_time_lr,
    quadratic_reference,
    reference_median_abs,
    reference_pth_moment,
    theorem_a_bound,
    theorem_a_vp,
)

__all__ = [
    "AnalyticsError",
    "LogLogFit",
    "SeedBands",
    "SeedSlopes",
    "accumulate_consensus_scale",
    "b_ota",
    "default_p",
    "delay_steps",
    "effective_k",
    "fedavg_gaussian_bound",
    "first_hit",
    "inverse_time_lr",
    "loglog_fit",
    "lr_power_sum",
    "lr_power_sum_exact_limit",
    "lr_power_sum_limit",
    "median_of_means",
    "pipeline_valid",
    "pipelined_speedup",
    "pipelined_time",
    "pth_moment_mom",
    "quadratic_reference",
    "reference_median_abs",
    "reference_pth_moment",
    "reset_deviation_moment_bound",
    "reset_deviation_scale",
    "rounds_to_target",
    "running_median",
    "s_n",
    "seed_bands",
    "seed_slopes",
    "sequential_time",
    "single_in_flight_round_time",
    "single_in_flight_speedup",
    "single_in_flight_time",
    "theorem_a_bound",
    "theorem_a_vp",
    "time_to_accuracy_speedup",
    "time_to_target",
]
