"""Speed of the SαS sampler and of one D2D receive.  Run: ``python benchmarks/bench_channels.py``.

Prints samples/s of ``channels.sample_sas`` (float32, 10^7 draws) beside ``torch.randn`` on the
same number of draws and ``scipy.stats.levy_stable.rvs`` (timed on 10^6 draws and scaled ×10,
said in the output), the ratios, and the time of one ``d2d`` receive at N = 1000, d = 10^5 with
per-UE SαS interference. Options: ``--n``, ``--alpha``, ``--skip-d2d``, ``--threads``.
"""

from __future__ import annotations

import argparse
import time
import timeit

import numpy as np
import torch
from scipy import stats

from channels import Channel, ChannelConfig, sample_sas


def best_of(fn, repeat: int = 5) -> float:
    """The fastest of ``repeat`` single calls, in seconds."""
    return min(timeit.repeat(fn, number=1, repeat=repeat))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10**7)
    ap.add_argument("--alpha", type=float, default=1.5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-d2d", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n, alpha = args.n, args.alpha
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, alpha={alpha}, n={n:.0e}")

    sample_sas((n,), alpha, generator=g)  # warm-up at full size (allocator, thread pool)
    t_sas32 = best_of(lambda: sample_sas((n,), alpha, generator=g))
    t_sas64 = best_of(lambda: sample_sas((n,), alpha, generator=g, dtype=torch.float64))
    t_randn = best_of(lambda: torch.randn(n, generator=g))
    n_sp = min(n, 10**6)
    rng = np.random.default_rng(0)
    t_sp = best_of(lambda: stats.levy_stable.rvs(alpha, 0.0, size=n_sp, random_state=rng), 2)
    t_scipy = t_sp * n / n_sp
    rate = lambda t: n / t / 1e6  # noqa: E731

    print(f"{'sampler':<40}{'time (s)':>10}{'Msamples/s':>12}")
    print(f"{'channels.sample_sas float32':<40}{t_sas32:>10.3f}{rate(t_sas32):>12.1f}")
    print(f"{'channels.sample_sas float64':<40}{t_sas64:>10.3f}{rate(t_sas64):>12.1f}")
    print(f"{'torch.randn float32':<40}{t_randn:>10.3f}{rate(t_randn):>12.1f}")
    sp_label = f"scipy levy_stable.rvs (timed 1e6, x{n // n_sp})"
    print(f"{sp_label:<40}{t_scipy:>10.3f}{rate(t_scipy):>12.1f}")
    print(f"speed-up vs scipy: {t_scipy / t_sas32:.1f}x (target >= 30x)")
    print(f"cost vs torch.randn: {t_sas32 / t_randn:.2f}x (target <= 4x)")

    if not args.skip_d2d:
        N, d = 1000, 10**5
        v = torch.randn(N, d, generator=g)
        ch = Channel(ChannelConfig(fading="rayleigh", power_control="phase",
                                   interference={"name": "sas", "alpha": alpha}, scale=0.1), "d2d")
        ch.transmit(v[:, :100].contiguous(), seed=0, round=0)  # warm-up
        t0 = time.perf_counter()
        res = ch.transmit(v, seed=0, round=1)
        t_d2d = time.perf_counter() - t0
        print(f"d2d receive N={N}, d={d:.0e}, per-UE SaS, float32: {t_d2d:.2f} s "
              f"(estimate {tuple(res.estimate.shape)})")


if __name__ == "__main__":
    main()
