"""Federated hyperparameter search over whole runs (``fedsim search SPEC.toml``).

- :mod:`.space`: search and fidelity spaces over config keys (grids of values);
- :mod:`.objective`: the benchmark interface, ``objective(config, fidelity) -> {value, cost}``, and
  its live mode (candidates run as sweeps, in parallel as Ray tasks);
- :mod:`.tabular`: the tabular mode, answering from a shipped lookup table;
- :mod:`.rl`, :mod:`.hyperband`, :mod:`.baselines`: the policy-gradient search, successive
  halving and Hyperband, random search and TPE;
- :mod:`.reward`: the UEs' rewards, summed digitally or over the air;
- :mod:`.driver`, :mod:`.outputs`: the search folder, its resume, candidates and curves.
"""

from fedsim.search.driver import run_search
from fedsim.search.objective import Benchmark, LiveBenchmark
from fedsim.search.space import FidelitySpace, SearchSpace
from fedsim.search.spec import SearchSpec, load_spec, spec_from_data
from fedsim.search.tabular import TabularBenchmark, load_table

__all__ = ["Benchmark", "FidelitySpace", "LiveBenchmark", "SearchSpace", "SearchSpec", "TabularBenchmark",
           "load_spec", "load_table", "run_search", "spec_from_data"]
