"""Device latency: a measured table, an analytic per-op cost model and a federated learned predictor.

Small public API (the NAS budgets use it, and so can any other search):

- :data:`PROFILES` / :class:`DeviceProfile`: the device profiles (threads, batch, dtype, per-op
  slow-down factors) a UE can be;
- :func:`load_table` / :func:`shipped_table`: the measured table ``latency_ms [P, 4096]`` of the 3-layer
  CNN space, SHA-256 checked;
- :func:`op_summary` (module, batch-of-one example) -> the op summary of any network, and
  :func:`predict_ms` (summary, profile name) -> its latency in ms on that profile under the per-op cost
  model fitted to the table (:mod:`~fedsim.workloads.latency.costmodel`);
- :class:`LatencyBudget`: per-UE limits ``max_latency_ms`` on per-UE profiles; ``fits(summary)`` holds
  when the network meets every UE's limit (:mod:`~fedsim.workloads.latency.budget`);
- the ``latency-predictor`` workload (:mod:`~fedsim.workloads.latency.predictor`).

Example::

    from fedsim.workloads.latency import op_summary, predict_ms
    ms = predict_ms(op_summary(model, torch.zeros(1, 1, 28, 28)), "t1-b4")
"""

from fedsim.workloads.latency.budget import LatencyBudget
from fedsim.workloads.latency.costmodel import cost_model, op_summary, predict_ms
from fedsim.workloads.latency.space import PROFILES, DeviceProfile
from fedsim.workloads.latency.table import LatencyTableError, load_table, shipped_table

__all__ = ["PROFILES", "DeviceProfile", "LatencyBudget", "LatencyTableError", "cost_model", "load_table",
           "op_summary", "predict_ms", "shipped_table"]
