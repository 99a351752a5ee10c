"""``build_workload`` hands a shareable workload built once to every run with the same inputs in a
process (a sweep's variants that differ only in strategy or channel), and nothing else: another
seed, config, device or thread count builds anew, and a run on the shared workload has the numbers
of a run on a fresh one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fedsim.workloads.registry as registry
from fedsim.config import apply_overrides, validate
from fedsim.results.rundir import load_run
from fedsim.runner import run_experiment
from fedsim.workloads import build_workload
from fedsim.workloads.keep import tensor_bytes
from fedsim.workloads.quadratic import Quadratic
from fedsim.workloads.synthetic import SyntheticLogreg

QUAD = "workload={name='quadratic', num_ues=5, dim=4, hessian='heterogeneous', grad_noise=0.1}"
LOGREG = "workload={name='synthetic-logreg', num_ues=5, batch_size=4}"


def _cfg(*extra: str):
    return validate(apply_overrides({}, [QUAD, *extra])).workload


def test_the_same_inputs_give_the_same_workload_and_others_a_new_one(one_thread) -> None:
    wl = build_workload(_cfg(), 0)
    assert build_workload(_cfg(), 0) is wl
    other_seed = build_workload(_cfg(), 1)
    assert other_seed is not wl and not torch.equal(other_seed.b, wl.b)  # the data follows the seed
    assert build_workload(_cfg("workload.dim=3"), 0).dim == 3
    torch.set_num_threads(2)  # another thread count rounds otherwise: built anew
    assert build_workload(_cfg(), 0) is not wl
    torch.set_num_threads(1)
    assert build_workload(_cfg(), 0) is wl


def test_only_shareable_workloads_within_the_byte_budget_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Quadratic, "shareable", False)
    assert build_workload(_cfg(), 0) is not build_workload(_cfg(), 0)
    monkeypatch.setattr(Quadratic, "shareable", True)
    wl = build_workload(_cfg(), 0)
    size = tensor_bytes(wl)
    assert size == sum(t.element_size() * t.nelement() for t in (wl.a, wl.b, wl.q, wl.w_star))
    monkeypatch.setattr(registry, "SHARED_BYTES", size * 2)  # room for two: the least recently used goes
    b, c = build_workload(_cfg(), 1), build_workload(_cfg(), 2)
    assert all(kept is not wl for kept in registry._shared.values())  # dropped for c
    assert build_workload(_cfg(), 2) is c and build_workload(_cfg(), 1) is b  # b used last
    build_workload(_cfg(), 3)  # drops c
    assert build_workload(_cfg(), 1) is b and build_workload(_cfg(), 2) is not c
    monkeypatch.setattr(registry, "SHARED_BYTES", size - 1)  # too large to keep
    registry.forget_built_workloads()
    assert build_workload(_cfg(), 0) is not build_workload(_cfg(), 0)


def _run(tmp_path: Path, name: str, workload: str, *extra: str) -> list[dict]:
    cfg = validate(apply_overrides({}, [
        "engine.name='inline'", "output.plot=false", f"output.dir={str(tmp_path / name)!r}", "rounds=4", workload,
        "strategy.name='serverfree-relay'", "train.local_steps=2", "channel.fading='rayleigh'",
        "channel.interference={name='sas', alpha=1.5}", *extra]))  # the GSNRs below differ in earnest
    return load_run(run_experiment(cfg, quiet=True)).metrics


@pytest.mark.parametrize(("workload", "cls"), [(QUAD, Quadratic), (LOGREG, SyntheticLogreg)])
def test_a_run_on_a_shared_workload_has_the_numbers_of_a_fresh_build(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workload: str, cls: type) -> None:
    """Variants of a sweep in one process: the second shares the first's workload (and the theory
    constants it computed) and its rows equal those of the same run after a fresh build."""
    built: list[int] = []
    init = cls.__init__
    monkeypatch.setattr(cls, "__init__", lambda self, *a: (built.append(1), init(self, *a))[1])
    first_rows = _run(tmp_path, "first", workload, "channel.gsnr_db=10.0")
    first = len(built)
    shared = _run(tmp_path, "shared", workload, "channel.gsnr_db=20.0")
    assert first >= 1 and len(built) == first  # the second run built nothing
    assert shared[-1]["loss"] != first_rows[-1]["loss"]  # another channel: other numbers
    registry.forget_built_workloads()
    fresh = _run(tmp_path, "fresh", workload, "channel.gsnr_db=20.0")
    for a, b in zip(shared, fresh, strict=True):
        assert {k: v for k, v in a.items() if not k.endswith("_s")} == {k: v for k, v in b.items()
                                                                          if not k.endswith("_s")}
