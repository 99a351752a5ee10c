"""The inline engine's batched path (``engine.batched``): the UEs of a round
train together through vectorised gradients and give the per-UE path's numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from flwr.app import Message, MessageType, RecordDict

from fedsim.apps.client import PREFETCHED, _prefetched
from fedsim.config import apply_overrides, validate
from fedsim.errors import ConfigError
from fedsim.results.rundir import load_run
from fedsim.runner import run_experiment
from fedsim.runtime.execute import preflight
from fedsim.runtime.schedule import make_lr
from fedsim.workloads import build_workload, parse_workload_config
from fedsim.workloads.base import Workload
from strategies.common import to_record


@pytest.mark.parametrize(("workload", "tol"), [
    ({"name": "synthetic-logreg", "num_ues": 6, "batch_size": 8}, 1e-12),
    ({"name": "synthetic-logreg", "num_ues": 6, "batch_size": 0}, 1e-12),
    ({"name": "quadratic", "num_ues": 6}, 1e-12),
    ({"name": "digits-cnn", "num_ues": 6}, 2e-5),
])
def test_local_sgd_many_equals_the_per_ue_loop(workload: dict, tol: float) -> None:
    wl = build_workload(parse_workload_config(workload), 3)
    assert wl.batched_grad
    g = torch.Generator().manual_seed(0)
    w0 = wl.init_params()
    ws = w0 + 0.05 * torch.randn(6, wl.dim, generator=g, dtype=w0.dtype)  # a different start per UE
    ues = [4, 0, 5, 2, 1, 3]
    lr = make_lr(validate({}).train.lr, 100)
    many = wl.local_sgd_many(ws, ues, 7, 4, lr)
    loop = torch.stack([wl.local_sgd(w, ue, 7, 4, lr) for w, ue in zip(ws, ues, strict=True)])
    scale = float(loop.abs().max())
    torch.testing.assert_close(many, loop, rtol=0, atol=tol * max(scale, 1.0))
    assert not torch.equal(many[0], many[1])


def test_unequal_image_minibatches_fall_back_to_the_per_ue_loop() -> None:
    wl = build_workload(parse_workload_config({"name": "digits-cnn", "num_ues": 40, "batch_size": 40,
                                               "partition": "dirichlet", "dirichlet_alpha": 0.1}), 0)
    sizes = {min(wl.num_examples(n), 40) for n in range(40)}
    assert len(sizes) > 1  # some UE holds fewer than 40 examples
    ws = wl.init_params().expand(40, -1).clone()
    loop = torch.stack([wl.stochastic_grad(ws[n], n, 2) for n in range(40)])
    torch.testing.assert_close(wl.stochastic_grad_many(ws, list(range(40)), 2), loop)


def _cfg(tmp_path: Path, *extra: str):
    return validate(apply_overrides({}, [
        "engine.name='inline'", "output.plot=false", f"output.dir={str(tmp_path)!r}", "checkpoint.every=0",
        "workload={name='synthetic-logreg', num_ues=8, batch_size=16}", "rounds=4", "train.local_steps=3",
        *extra,
    ]))


@pytest.mark.parametrize("extra", [
    [],
    ["strategy.name='server-ota'", "channel.interference={name='sas', alpha=1.5}", "channel.scale=0.05"],
    ["strategy.fraction=0.5", "strategy.transmit='model'"],
    ["faults.unavailable=0.3", "faults.raise_at=[[2, 1]]"],
])
def test_batched_runs_give_the_per_ue_metrics_and_skip_per_ue_training(
        tmp_path: Path, extra: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    per_ue = load_run(run_experiment(_cfg(tmp_path, *extra), quiet=True)).metrics
    calls = []
    original = Workload.local_sgd
    monkeypatch.setattr(Workload, "local_sgd", lambda self, *a, **k: (calls.append(a[1]), original(self, *a, **k))[1])
    together = load_run(run_experiment(_cfg(tmp_path, "engine.batched=true", *extra), quiet=True)).metrics
    assert calls == []  # every UE's local training came from the batched prefetch
    assert len(per_ue) == len(together) == 5
    for a, b in zip(per_ue, together, strict=True):
        assert a.keys() == b.keys()
        for k, v in a.items():
            if isinstance(v, float) and not k.endswith("_s"):  # wall-clock timings differ
                assert b[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
            elif not isinstance(v, float):
                assert b[k] == v, k


def test_a_prefetch_is_used_only_from_its_own_start_model_and_steps() -> None:
    w, out = torch.zeros(3), torch.ones(3)
    msg = Message(RecordDict({PREFETCHED: to_record(out)}), 1, MessageType.TRAIN)
    take = _prefetched(msg, [w], 0, 2)
    cases = [(w, 0, 2, True), (w + 1, 0, 2, False), (w, 2, 2, False), (w, 0, 3, False)]
    for start, first, steps, hit in cases:
        got = take(start, first, steps)
        assert (got is not None) == hit
        if hit:
            assert torch.equal(got, out)
    assert _prefetched(Message(RecordDict(), 1, MessageType.TRAIN), [w], 0, 2) is None  # nothing attached


@pytest.mark.parametrize(("extra", "match"), [
    (["engine.name='ray'"], "engine.name = 'inline'"),
    (["strategy.name='serverfree-relay'", "strategy.overlap.enabled=true"], "strategy.overlap merges"),
    (["strategy.transmit='gradient'", "train.local_steps=1"], "takes no local steps"),
    (["workload={name='nas-tabnas', num_ues=3}"], "no vectorised gradient"),
])
def test_batched_is_refused_where_it_cannot_run(tmp_path: Path, extra: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        preflight(_cfg(tmp_path, "engine.batched=true", *extra))
    assert not list(tmp_path.iterdir())  # nothing written
