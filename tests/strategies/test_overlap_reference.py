"""The overlapped schedule against a hand-written reference, for every merge rule and both in-flight
modes, on a noise-free channel: a plain loop over global steps that keeps each UE's model, its own
block updates and the synchronised model, with no Flower, no inbox and no message indices.

Blocks last S steps (S = K pipelined, max(K, D) with one block in flight); block b's exact average
update arrives before global step b·S + D; at the end every aggregate still in flight is merged.
``swap`` replaces the UE's own block update by the average, ``replace`` moves every UE to the
synchronised model (the sum of all averages so far).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedsim.config import apply_overrides, validate
from fedsim.runner import run_experiment
from fedsim.runtime.schedule import make_lr
from fedsim.workloads import build_workload

N, ROUNDS = 4, 6


def overrides(tmp: Path, strategy: str, K: int, D: int, merge: str, in_flight: str) -> list[str]:
    return ["engine.name='inline'", "output.plot=false", f"output.dir={str(tmp)!r}", "checkpoint.every=0",
            f"workload={{name='synthetic-logreg', num_ues={N}, batch_size=0}}", f"rounds={ROUNDS}",
            "train.lr.eta=0.2", f"train.local_steps={K}", f"strategy.name={strategy!r}",
            "strategy.transmit='update'", "channel.interference='none'", "strategy.overlap.enabled=true",
            f"strategy.overlap.merge={merge!r}", f"strategy.overlap.in_flight={in_flight!r}",
            f"timing.latency_ratio={D}"]


def reference(cfg, S: int, D: int, merge: str) -> torch.Tensor:
    """Every UE's final model ``[N, d]`` by the rule in the module docstring."""
    wl = build_workload(cfg.workload, cfg.seed)
    lr = make_lr(cfg.train.lr, ROUNDS * S)
    q = wl.ue_weights().to(torch.float64)
    w = wl.init_params().to(torch.float64).expand(N, -1).clone()
    sync = w[0].clone()
    own: dict[int, torch.Tensor] = {}
    average: dict[int, torch.Tensor] = {}
    arriving: dict[int, list[int]] = {}  # global step -> blocks merged before it
    delta = torch.zeros_like(w)

    def merge_block(b: int) -> None:
        nonlocal w, sync
        if merge == "swap":
            w = w - own.pop(b) + average[b]
        else:
            sync = sync + average[b]
            w = sync.expand(N, -1).clone()

    for s in range(ROUNDS * S):
        for b in sorted(arriving.pop(s, [])):
            merge_block(b)
        step = -lr(s) * torch.stack([wl.stochastic_grad(w[m], m, s) for m in range(N)])
        w, delta = w + step, delta + step
        if s % S == S - 1:
            b = s // S + 1
            own[b], average[b] = delta, q @ delta
            arriving.setdefault(b * S + D, []).append(b)
            delta = torch.zeros_like(w)
    for s in sorted(arriving):  # the final flush, in block order
        for b in sorted(arriving[s]):
            merge_block(b)
    return w


CASES = [  # (K, D, merge, in_flight)
    (2, 3, "swap", "pipelined"),
    (2, 3, "replace", "pipelined"),
    (1, 2, "replace", "pipelined"),
    (2, 3, "swap", "single"),
    (2, 3, "replace", "single"),
    (3, 2, "replace", "single"),
]


@pytest.mark.parametrize("population", [True, False])
@pytest.mark.parametrize("strategy", ["server-digital", "serverfree-relay"])
@pytest.mark.parametrize(("K", "D", "merge", "in_flight"), CASES)
def test_overlap_matches_the_hand_reference(tmp_path: Path, strategy: str, K: int, D: int, merge: str,
                                            in_flight: str, population: bool) -> None:
    """On the population path (one tensor program per round) and on the per-UE path."""
    cfg = validate(apply_overrides({}, [*overrides(tmp_path, strategy, K, D, merge, in_flight),
                                        f"engine.population={str(population).lower()}"]))
    result: dict = {}
    run_experiment(cfg, quiet=True, result=result)
    got = torch.stack([result["final_models"][m] for m in range(N)]).to(torch.float64)
    S = K if in_flight == "pipelined" else max(K, D)
    want = reference(cfg, S, D, merge)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    if merge == "replace":  # after the flush every UE holds the synchronised model
        torch.testing.assert_close(got, got[0].expand(N, -1), rtol=0, atol=1e-12)
