"""Workloads: federated tasks on flat parameter vectors, built from a typed config.

>>> from fedsim.workloads import build_workload, parse_workload_config
>>> wl = build_workload(parse_workload_config({"name": "synthetic-logreg", "num_ues": 5}), seed=0)
>>> wl.dim
610
"""

from fedsim.workloads.base import LrFn, TheoryConstants, Workload, WorkloadConfig
from fedsim.workloads.registry import WORKLOADS, build_workload, parse_workload_config

__all__ = [
    "WORKLOADS",
    "LrFn",
    "TheoryConstants",
    "Workload",
    "WorkloadConfig",
    "build_workload",
    "parse_workload_config",
]
