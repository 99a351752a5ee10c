"""Fourier-domain vs explicit (k, d) mixture in DASH (Shen et al., NeurIPS 2022), forward + backward.

Part 1 times one searched conv layer (batch 32, 8 -> 8 channels) on a 784-long sequence and on a 28x28
image, for the federated kernel sets (#K·#D = 9) and the paper's larger default ones, three ways:

- explicit:  Σ_{k,d} c_{k,d} · conv(x, w_{k,d}, dilation d)     (|K||D| convs; O(|K||D|·n·S))
- mixed:     one direct conv with the aggregated kernel w̄        (O(n·S))
- fourier:   the aggregated kernel applied through rfftn/irfftn (O(n log n), independent of S)

Part 2 times one local step (``_grads``: Gumbel sample, forward, backward) of the ``nas-dash`` workload
with ``evaluation = "fourier"`` vs ``"explicit"`` at its defaults (1-D and 2-D mnist_5k). The arms are
interleaved over repeats so that machine load hits them alike; medians, one torch thread.

    python benchmarks/bench_dash.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fedsim.workloads import build_workload
from fedsim.workloads.nas.dash import DashConfig
from fedsim.workloads.nas.fourier import aggregate_kernel, direct_conv, explicit_mixture, fourier_conv

LAYER_CASES = [  # (label, dims, input size, K, D)
    ("1-D 784, fed K3-11 D1-7", 1, (784,), (3, 7, 11), (1, 3, 7)),
    ("1-D 784, paper K3-19 D1-15", 1, (784,), (3, 7, 11, 15, 19), (1, 3, 7, 15)),
    ("2-D 28x28, fed K3-7 D1-4", 2, (28, 28), (3, 5, 7), (1, 2, 4)),
    ("2-D 28x28, K3-9 D1-7", 2, (28, 28), (3, 5, 7, 9), (1, 3, 7)),
]


def _timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def layer_arms(dims, size, K, D, batch=32, channels=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, *size, generator=g)
    pairs = [(k, d) for k in K for d in D]
    ws = [(torch.randn(channels, channels, *(k,) * dims, generator=g) * 0.1).requires_grad_() for k, _ in pairs]
    c = torch.softmax(torch.randn(len(pairs), generator=g), 0).requires_grad_()
    dils = [d for _, d in pairs]
    up = torch.randn(batch, channels, *size, generator=g)

    def run(forward):
        def step():
            (forward() * up).sum().backward()
        return step

    return {
        "explicit": run(lambda: explicit_mixture(x, ws, c, dils)),
        "mixed": run(lambda: direct_conv(x, aggregate_kernel(ws, c, dils))),
        "fourier": run(lambda: fourier_conv(x, aggregate_kernel(ws, c, dils))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats per arm")
    args = ap.parse_args()
    torch.set_num_threads(1)

    print("one searched conv layer, batch 32, 8 -> 8 channels, forward + backward, 1 thread")
    print(f"{'case':<30}{'#KD':>4}{'S':>5}{'explicit ms':>13}{'mixed ms':>10}{'fourier ms':>12}"
          f"{'expl/four':>11}{'mixed/four':>12}")
    for label, dims, size, K, D in LAYER_CASES:
        arms = layer_arms(dims, size, K, D)
        times: dict[str, list[float]] = {k: [] for k in arms}
        for _ in range(args.repeats):
            for k, fn in arms.items():
                times[k] += _timed(fn, 1)
        m = {k: statistics.median(v) for k, v in times.items()}
        S = max(d * (k - 1) + 1 for k in K for d in D)
        print(f"{label:<30}{len(K) * len(D):>4}{S:>5}{1e3 * m['explicit']:>13.1f}{1e3 * m['mixed']:>10.1f}"
              f"{1e3 * m['fourier']:>12.1f}{m['explicit'] / m['fourier']:>11.2f}{m['mixed'] / m['fourier']:>12.2f}")

    print("\nnas-dash local step (Gumbel sample + forward + backward), batch 32, workload defaults, 1 thread")
    print(f"{'workload':<24}{'explicit ms':>13}{'fourier ms':>12}{'expl/four':>11}")
    for dims in (1, 2):
        wls = {ev: build_workload(DashConfig(dims=dims, evaluation=ev, total_steps=100), seed=0)
               for ev in ("explicit", "fourier")}
        w = wls["fourier"].init_params()
        times = {k: [] for k in wls}
        for r in range(args.repeats):
            for k, wl in wls.items():
                times[k] += _timed(lambda wl=wl, r=r, w=w: wl._grads(w, r % wl.num_ues, r), 1)
        m = {k: statistics.median(v) for k, v in times.items()}
        print(f"{f'mnist {dims}-D':<24}{1e3 * m['explicit']:>13.1f}{1e3 * m['fourier']:>12.1f}"
              f"{m['explicit'] / m['fourier']:>11.2f}")


if __name__ == "__main__":
    main()
