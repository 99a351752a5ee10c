"""Speed of ``fedsim search``'s tabular mode.  Run: ``python benchmarks/bench_search_tabular.py``.

Times 1,000 objective queries on the shipped table (random (config, fidelity) pairs drawn from a
seeded generator, best of 5 repeats), the table's load with its SHA-256 check, and a whole tabular
search: RL, random search, Hyperband and TPE (if optuna is installed), 3 seeds, 32 evaluations each.
The issue's target is 1,000 queries in under a second.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np

from fedsim.search import TabularBenchmark, load_table, run_search, spec_from_data


def best_of(fn, repeat: int = 5) -> float:
    """The fastest of ``repeat`` single calls, in seconds."""
    return min(timeit.repeat(fn, number=1, repeat=repeat))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=1000)
    args = ap.parse_args()
    t_load = best_of(load_table)
    bench = TabularBenchmark(load_table())
    rng = np.random.default_rng(0)
    configs = [bench.space.config(p) for p in bench.space.sample(rng, args.queries)]
    fids = [bench.fidelity.config(p) for p in bench.fidelity.sample(rng, args.queries)]
    t_q = best_of(lambda: [bench.objective(c, f) for c, f in zip(configs, fids, strict=True)])
    print(f"table load + SHA-256 check: {t_load * 1e3:.1f} ms")
    print(f"{args.queries} queries: {t_q * 1e3:.1f} ms ({t_q / args.queries * 1e6:.1f} us per query); "
          f"target < 1 s: {'met' if t_q < 1.0 else 'MISSED'}")
    try:
        import optuna  # noqa: F401
        methods = ["rl", "random", "hyperband", "tpe"]
    except ImportError:
        methods = ["rl", "random", "hyperband"]
    spec = spec_from_data({"name": "bench", "mode": "tabular", "methods": methods, "budget": 32,
                           "seeds": [0, 1, 2]})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_search(spec, Path(tmp))
        print(f"whole tabular search ({', '.join(methods)}; 3 seeds x 32 evaluations, outputs and figure): "
              f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
