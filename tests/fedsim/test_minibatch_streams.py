"""Every UE draws its own minibatches: a minibatch stream keyed by (seed, step) but not by the UE
would give two UEs that hold the same data the same gradient at the same step.

The reference is an exact equivalence: UE 1 is made to hold UE 0's data; then with full batches
their gradients at the same step are equal (the control: the twin really holds the same data), and
with minibatches they differ, at every step, in the per-UE and in the batched gradient paths.
"""

from __future__ import annotations

import pytest
import torch

from fedsim.workloads import build_workload, parse_workload_config

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {
    "synthetic-logreg": {"num_ues": 4},
    "digits-cnn": {"num_ues": 4},
    "digits-augsearch": {"num_ues": 4},
    "moe-lm": {"num_ues": 3, "train_seqs_per_ue": 32, "total_steps": 4},
    "nas-dash": {"dataset": "digits", "channels": [4, 8], "num_ues": 3, "retrain_rounds": 0},
    "nas-gdas": {"num_ues": 3, "cells": 1, "channels": 4, "retrain_rounds": 0},
    "nas-tabnas": {"num_ues": 3, "max_samples_per_ue": 100, "hidden_layers": 2, "retrain_rounds": 0},
}
# mnist-cnn and mnist-augsearch share the image code path of their digits counterparts.


def holder(wl):
    """The object that owns the per-UE training data."""
    for name in ("base", "data"):
        inner = getattr(wl, name, None)
        if inner is not None and hasattr(inner, "ue_data"):
            return inner
    return wl


def make_twin(wl) -> None:
    """UE 1 holds exactly UE 0's training data (and count)."""
    if hasattr(wl, "_train"):  # the language model indexes its sequences directly
        wl._train[1] = wl._train[0]
        return
    if hasattr(wl, "_batch"):  # tabular NAS: a list of (x, y) per UE
        wl.data.train[1] = wl.data.train[0]
        return
    h = holder(wl)
    data0, n0 = h.ue_data(0), h.num_examples(0)
    original_data, original_count = h.ue_data, h.num_examples
    h.ue_data = lambda ue: data0 if ue in (0, 1) else original_data(ue)
    h.num_examples = lambda ue: n0 if ue in (0, 1) else original_count(ue)
    if hasattr(h, "counts"):
        h.counts = list(h.counts)
        h.counts[1] = h.counts[0]


def inputs(wl, ue: int, step: int) -> torch.Tensor:
    """The training inputs UE ``ue`` uses at ``step`` (before any augmentation)."""
    if hasattr(wl, "train_batch"):  # the NAS image workloads
        return wl.train_batch(ue, step)[0]
    if hasattr(wl, "_batch"):  # tabular NAS
        return wl._batch(ue, step)[0]
    if hasattr(wl, "batch") and not hasattr(wl, "base"):  # the language model
        return wl.batch(ue, step)
    h = holder(wl)
    x = h.ue_data(ue)[0]
    rows = h.batch_rows(ue, step)
    return x if rows is None else x[rows]


def twin_workload(name: str, batch_size: int):
    cfg = parse_workload_config({"name": name, **SMALL[name], "batch_size": batch_size})
    wl = build_workload(cfg, seed=5)
    make_twin(wl)
    return wl


@pytest.mark.parametrize("name", sorted(SMALL))
def test_twins_draw_different_minibatches(name: str) -> None:
    """Full batches: the twins train on identical inputs (the control). Minibatches of 4: different
    inputs at every step, and the same inputs again for the same (UE, step)."""
    full = twin_workload(name, batch_size=0)
    for step in (0, 3):
        assert torch.equal(inputs(full, 0, step), inputs(full, 1, step))
    wl = twin_workload(name, batch_size=4)
    for step in (0, 1, 7):
        b0, b1 = inputs(wl, 0, step), inputs(wl, 1, step)
        assert len(b0) == len(b1) == 4
        assert not torch.equal(b0, b1), f"{name}: UEs 0 and 1 drew the same minibatch at step {step}"
        assert torch.equal(inputs(wl, 0, step), b0)
    assert not torch.equal(inputs(wl, 0, 0), inputs(wl, 0, 1))


# Workloads whose gradient has no per-UE randomness besides the minibatch (augmentation, Gumbel
# and child sampling are drawn per UE on purpose), so twins' gradients show the stream directly.
PLAIN = ["synthetic-logreg", "digits-cnn", "moe-lm"]


@pytest.mark.parametrize("name", PLAIN)
def test_twins_gradients_differ_only_with_minibatches(name: str) -> None:
    full, mini = twin_workload(name, batch_size=0), twin_workload(name, batch_size=4)
    w = full.init_params()
    for step in (0, 3):
        assert torch.equal(full.stochastic_grad(w, 0, step), full.stochastic_grad(w, 1, step))
        assert not torch.equal(mini.stochastic_grad(w, 0, step), mini.stochastic_grad(w, 1, step))
    if getattr(mini, "batched_grad", False):
        many = mini.stochastic_grad_many(torch.stack([w, w]), [0, 1], 2)
        assert not torch.equal(many[0], many[1]), f"{name}: the batched path shares one minibatch stream"
        torch.testing.assert_close(many[0], mini.stochastic_grad(w, 0, 2))
