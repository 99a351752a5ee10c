"""The shipped ``latency_predictor`` experiment runs tiny through the CLI's runner, and its rows agree
with the workload's own evaluation and with a FedAvg loop written out here (digital arm)."""

from __future__ import annotations

import pytest
import torch
from test_experiments import _check_common, _run  # the shared tiny-run helpers

from fedsim.workloads import build_workload, parse_workload_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_latency_predictor_experiment(tmp_path) -> None:
    cfg, rows, summary, _ = _run("latency_predictor", tmp_path)
    wl = build_workload(cfg.workload, cfg.seed)
    _check_common(cfg, rows, wl)
    # the digital arm is FedAvg of the UEs' local training (embeddings kept per UE) written out here
    k, lr = cfg.train.local_steps, cfg.train.lr.eta
    w, states = wl.init_params(), [{} for _ in range(wl.num_ues)]
    for r in range(cfg.rounds):
        w = wl.ue_weights().float() @ torch.stack(
            [wl.local_train(w, n, r * k, k, lambda s: lr, states[n]) for n in range(wl.num_ues)])
    want = wl.evaluate(w)
    for key in ("loss", "kendall", "spearman", "mape"):
        assert rows[-1][key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key


def test_live_source_measures_on_this_machine() -> None:
    wl = build_workload(parse_workload_config({"name": "latency-predictor", "num_ues": 1, "measurements": 3,
                                               "source": "live", "adapt_shots": 2}), 0)
    assert wl.ue_ms[0].shape == (3,) and bool((wl.ue_ms[0] > 0).all())
