"""Parameter sweeps: expansion of a ``[sweep]`` table into validated variants (:mod:`.expand`),
a single run's preflight for every variant (:mod:`.preflight`), running them in one sweep folder
(:mod:`.run`) and continuing a killed sweep (:mod:`.resume`)."""

from fedsim.results.sweepdir import expand_run_dirs, is_sweep_dir, read_index, sweep_table, variant_run_dirs
from fedsim.sweep.expand import Variant, base_config, expand_sweep, split_sweep
from fedsim.sweep.preflight import preflight_sweep
from fedsim.sweep.resume import sweep_to_resume
from fedsim.sweep.run import new_sweep_dir, run_sweep

__all__ = [
    "Variant",
    "base_config",
    "expand_run_dirs",
    "expand_sweep",
    "is_sweep_dir",
    "new_sweep_dir",
    "preflight_sweep",
    "read_index",
    "run_sweep",
    "split_sweep",
    "sweep_table",
    "sweep_to_resume",
    "variant_run_dirs",
]
