"""Server-free configurations and helpers shared by the batched-path and population-path tests:
runs of 6 UEs x 4 rounds on the inline engine (the per-UE path unless the extra overrides ask
for another), and the comparison of two runs' numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedsim.config import apply_overrides, validate
from fedsim.results.rundir import load_run
from fedsim.runner import run_experiment

LOGREG = "workload={name='synthetic-logreg', num_ues=6, batch_size=8}"
QUAD = "workload={name='quadratic', num_ues=6, dim=5, grad_noise=0.1, hessian='heterogeneous'}"
#: SaS interference at every receiver (the relay's default adds per-UE downlink noise, so every UE's
#: estimate differs), Rayleigh fading with truncation
NOISY = ["channel.interference={name='sas', alpha=1.5}", "channel.scale=0.05", "channel.fading='rayleigh'",
         "channel.h_th=0.3"]
FAULTY = ["faults.unavailable=0.3", "strategy.fraction=0.5"]


def _run(tmp_path: Path, name: str, *extra: str) -> tuple[list[dict], dict]:
    cfg = validate(apply_overrides({}, [
        "engine.name='inline'", "output.plot=false", f"output.dir={str(tmp_path / name)!r}",
        "checkpoint.every=0", "rounds=4", "engine.population=false", *extra]))
    result: dict = {}
    rows = load_run(run_experiment(cfg, quiet=True, result=result)).metrics
    return rows, result


def _models(result: dict) -> torch.Tensor:
    if "final_model" in result:
        return result["final_model"].unsqueeze(0)
    return torch.stack([result["final_models"][u] for u in sorted(result["final_models"])])


def _same_numbers(a: tuple[list[dict], dict], b: tuple[list[dict], dict]) -> None:
    (rows_a, res_a), (rows_b, res_b) = a, b
    assert len(rows_a) == len(rows_b)
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert ra.keys() == rb.keys()
        for k, v in ra.items():
            if not k.endswith("_s"):  # wall-clock timings differ
                _same(v, rb[k], k)
    ma, mb = _models(res_a), _models(res_b)
    torch.testing.assert_close(mb.expand_as(ma), ma, rtol=1e-9, atol=1e-12)


def _same(a, b, where: str) -> None:
    """Equal, floats to 1e-9 relative (also inside dicts and lists: the theory constants are
    computed with the process's torch threads, which the per-UE path sets to one)."""
    if isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert b == a, where


CASES = {
    "relay-update-faults": [LOGREG, "strategy.name='serverfree-relay'", "train.local_steps=3", *FAULTY, *NOISY],
    "relay-reset-model": [LOGREG, "strategy.name='serverfree-relay'", "strategy.mode='reset'",
                          "train.local_steps=2", *NOISY],
    "relay-gradient-faults": [QUAD, "strategy.name='serverfree-relay'", "strategy.transmit='gradient'",
                              "train.local_steps=1", "train.lr.schedule='inverse'", *FAULTY, *NOISY],
    "d2d-update": [QUAD, "strategy.name='serverfree-d2d'", "train.local_steps=3", "strategy.fraction=0.5", *NOISY],
    "d2d-reset-faults": [LOGREG, "strategy.name='serverfree-d2d'", "strategy.mode='reset'",
                         "train.local_steps=2", *FAULTY, *NOISY],
    "d2d-ideal-gradient": [LOGREG, "strategy.name='serverfree-d2d-ideal'", "strategy.transmit='gradient'",
                           "train.local_steps=1", "faults.unavailable=0.3", "channel.power_control='phase'", *NOISY],
    "d2d-ideal-reset": [QUAD, "strategy.name='serverfree-d2d-ideal'", "strategy.mode='reset'",
                        "train.local_steps=3", "channel.power_control='phase'", *FAULTY, *NOISY],
}


