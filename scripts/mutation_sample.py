"""A seeded uniform sample of mutmut's mutants, for a mutation score within a CPU budget.

A full ``mutmut run`` over ``channels/``, ``strategies/`` and the analytics fits is about 4,000
mutants; a surviving mutant of a function every test reaches re-runs the whole selected suite
(about 3 minutes on 2 cores), so a full run takes many hours on 2 cores. A ``mutmut run`` stopped
after its first minutes has generated every mutant (what this script samples from). A uniform
sample gives an unbiased estimate of the score (mutmut itself runs the cheapest mutants first, so
a stopped full run is biased towards them). Usage (docs/testing.md)::

    python scripts/mutation_sample.py --size 360 --seed 0 > /tmp/sample.txt
    xargs -a /tmp/sample.txt mutmut run --max-children 2
    python scripts/mutation_sample.py --score /tmp/sample.txt
"""

from __future__ import annotations

import argparse
import math
import random
import subprocess
from collections import Counter


def mutant_status() -> dict[str, str]:
    """Every mutant's name and status, from ``mutmut results --all true``."""
    out = subprocess.run(["mutmut", "results", "--all", "true"], capture_output=True, text=True, check=True).stdout
    pairs = (line.strip().rsplit(": ", 1) for line in out.splitlines() if ": " in line)
    return {name: status for name, status in pairs}


def score(names: list[str]) -> str:
    """Killed share of the sampled mutants a test reaches, with a Wilson 95 % interval, per module."""
    status = mutant_status()
    names = [n for n in names if n in status]  # mutants of code changed since the sample was drawn are gone
    counts = Counter(status[n] for n in names)
    reached = [n for n in names if status[n] in ("killed", "survived", "timeout")]
    killed = sum(status[n] in ("killed", "timeout") for n in reached)
    lines = [f"sample of {len(names)}: {dict(counts)}"]
    if reached:
        p, n, z = killed / len(reached), len(reached), 1.96
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        lines.append(f"score {killed}/{n} = {p:.1%} of the reached mutants "
                     f"(95 % CI {centre - half:.1%} to {centre + half:.1%})")
    by_module: dict[str, Counter] = {}
    for name in names:
        by_module.setdefault(name.split(".x")[0], Counter())[status[name]] += 1
    lines += [f"  {module}: {dict(c)}" for module, c in sorted(by_module.items())]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=360)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--score", metavar="SAMPLE_FILE", help="print the score of a sample already run")
    args = ap.parse_args()
    if args.score:
        with open(args.score) as f:
            print(score([line.strip() for line in f if line.strip()]))
        return
    names = sorted(mutant_status())
    print("\n".join(sorted(random.Random(args.seed).sample(names, min(args.size, len(names))))))


if __name__ == "__main__":
    main()
