"""``fedsim report``: figures and analytics tables from run directories and sweep folders.

Runs that differ only in their seed form a group; every number across seeds is a median with
its interquartile range (model §8 item 16; § numbers: docs/explanation/model.md), never a bare mean. The report holds

- measured vs theory curves (log-log when the step size decays, §4.3–4.4),
- fitted log-log exponents with a bootstrap CI across seeds (none from a single seed) against
  the theoretical ones,
- rounds-to-target and time-to-target per group,
- a heat map of rounds-to-target over (α, interference level) when runs differ in α,
- server vs server-free panels when the strategy differs,
- accuracy (or loss) against simulated time per latency ratio, with the measured overlap
  speed-up against the §5 prediction, when runs differ in latency ratio or overlap,
- the found architecture, its cost and its retrained accuracy, for architecture searches.

Output: ``<out>/report.md`` and ``<out>/figures/report-*.png`` (200 dpi), each with a vector PDF
beside it, in the style of :mod:`fedsim.figstyle`.
"""

from fedsim.report.build import build_report

__all__ = ["build_report"]
