"""The batched path (``engine.batched``) for the server-free strategies: every sampled UE's local
training (or gradient) runs in one vectorised call from the start model the strategy's
``training_start`` gives (the UE's own model after the estimates due before step 0), and the
numbers equal the per-UE path, digital FedAvg on a noise-free channel, and a hand-written loop."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from interrupt import interrupted_run
from serverfree_cases import CASES, FAULTY, LOGREG, NOISY, _models, _run, _same_numbers

from fedsim.config import apply_overrides, validate
from fedsim.errors import ConfigError
from fedsim.results.rundir import load_run
from fedsim.runner import run_experiment
from fedsim.runtime.execute import preflight
from fedsim.workloads.base import Workload
from fedsim.workloads.quadratic import Quadratic
from fedsim.workloads.synthetic import SyntheticLogreg


def _count_per_ue_training(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Calls of the per-UE kernels (local SGD, single-UE gradients) from now on."""
    calls: list[int] = []
    for cls in (Workload, SyntheticLogreg, Quadratic):
        for name in ("local_sgd", "stochastic_grad"):
            if name in vars(cls):
                orig = vars(cls)[name]
                monkeypatch.setattr(cls, name, lambda self, *a, _o=orig, **k: (calls.append(1), _o(self, *a, **k))[1])
    return calls


@pytest.mark.parametrize("case", list(CASES))
def test_batched_serverfree_equals_the_per_ue_path_without_per_ue_training(
        tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    per_ue = _run(tmp_path, "per-ue", *CASES[case])
    calls = _count_per_ue_training(monkeypatch)
    together = _run(tmp_path, "batched", "engine.batched=true", *CASES[case])
    assert calls == []  # every sampled UE took the batched result: its start model was right
    _same_numbers(per_ue, together)


@pytest.mark.parametrize("path", ["engine.batched=true", "engine.population=true"])
@pytest.mark.parametrize(("extra", "mode"), [
    (["train.local_steps=3"], "accumulate"),
    (["strategy.transmit='model'", "train.local_steps=3"], "reset"),
    (["strategy.transmit='gradient'", "train.local_steps=1"], "accumulate"),
])
def test_batched_and_population_relay_on_a_noise_free_channel_equal_digital_fedavg(
        tmp_path: Path, extra: list[str], mode: str, path: str) -> None:
    """The batched path and the population path (a round as one tensor program) alike."""
    base = [LOGREG.replace("batch_size=8", "batch_size=0"), "train.lr.eta=0.2", *extra]
    _, fedavg = _run(tmp_path, "digital", *base)
    _, relay = _run(tmp_path, "relay", path, "strategy.name='serverfree-relay'",
                    f"strategy.mode={mode!r}", *base)
    models = _models(relay)
    assert models.shape[0] == 6
    torch.testing.assert_close(models, fedavg["final_model"].expand(6, -1), rtol=1e-9, atol=1e-12)


def test_batched_d2d_on_quadratics_follows_a_hand_written_loop(tmp_path: Path) -> None:
    """Noise-free D2D, full batch, accumulate updates: every UE runs K steps of
    ``w <- w - eta a_n (w - b_n)`` from its model, then adds the mean update of all UEs."""
    wl_cfg = "workload={name='quadratic', num_ues=6, dim=5, hessian='heterogeneous'}"
    rounds, K, eta = 4, 3, 0.05
    _, res = _run(tmp_path, "d2d", wl_cfg, "engine.batched=true", "strategy.name='serverfree-d2d'",
                  "channel.power_control='none'", f"train.local_steps={K}", f"train.lr.eta={eta}")
    wl = Quadratic(validate(apply_overrides({}, [wl_cfg])).workload, validate({}).seed)
    a, b = wl.a.numpy(), wl.b.numpy()
    w = wl.init_params().numpy()[None].repeat(6, 0)
    for _ in range(rounds):
        x = w.copy()
        for _ in range(K):
            x = x - eta * a * (x - b)
        w = w + (x - w).mean(0)
    torch.testing.assert_close(_models(res), torch.from_numpy(w), rtol=1e-9, atol=1e-12)


def test_batched_overlap_is_refused_with_its_reason(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="strategy.overlap merges estimates"):
        preflight(validate(apply_overrides({}, [
            "engine.name='inline'", "engine.batched=true", f"output.dir={str(tmp_path)!r}", LOGREG,
            "strategy.name='serverfree-relay'", "strategy.overlap.enabled=true"])))


def test_batched_serverfree_resumes_to_the_per_ue_run(tmp_path: Path) -> None:
    """Interrupted after round 2 and resumed from its checkpoint (the UE models restored into
    each UE's Context.state), the batched run ends where the uninterrupted per-UE run ends."""
    extra = [LOGREG, "strategy.name='serverfree-d2d'", "train.local_steps=2", *FAULTY, *NOISY]
    per_ue = _run(tmp_path, "per-ue", *extra)
    cfg = validate(apply_overrides({}, [
        "engine.name='inline'", "output.plot=false", f"output.dir={str(tmp_path / 'cut')!r}",
        "checkpoint.every=1", "rounds=4", "engine.batched=true", *extra]))
    run_dir = interrupted_run(cfg, 3)
    result: dict = {}
    run_experiment(cfg, quiet=True, resume=run_dir, result=result)
    _same_numbers(per_ue, (load_run(run_dir).metrics, result))
