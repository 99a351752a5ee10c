"""The full-batch minibatches that ``SyntheticLogreg.stochastic_grad_many`` keeps between rounds:
gradients stay those of autograd on each UE's own data, whatever is cached, for which UEs and in
which order, and the cache stays within its byte budget."""

import pytest
import torch
import torch.nn.functional as F

from fedsim.workloads import synthetic
from fedsim.workloads.synthetic import NUM_CLASSES, NUM_FEATURES, SyntheticLogreg, SyntheticLogregConfig

D64 = torch.float64


def _autograd(wl: SyntheticLogreg, w: torch.Tensor, ue: int, rows: torch.Tensor | None) -> torch.Tensor:
    """Independent reference: d/dw of mean CE + (l2/2)||w||^2 on the UE's (mini)batch."""
    x, y = wl.ue_data(ue)
    if rows is not None:
        x, y = x[rows], y[rows]
    w = w.clone().requires_grad_(True)
    loss = F.cross_entropy(x @ w.view(NUM_FEATURES + 1, NUM_CLASSES), y) + 0.5 * wl.l2 * w.dot(w)
    (g,) = torch.autograd.grad(loss, w)
    return g


def _check(wl: SyntheticLogreg, ues: list[int], step: int, seed: int) -> None:
    ws = torch.randn(len(ues), wl.dim, generator=torch.Generator().manual_seed(seed), dtype=D64) * 0.3
    got = wl.stochastic_grad_many(ws, ues, step)
    for i, ue in enumerate(ues):
        ref = _autograd(wl, ws[i], ue, wl.batch_rows(ue, step))
        torch.testing.assert_close(got[i], ref, rtol=1e-10, atol=1e-12)


def test_full_batches_kept_and_reused_correctly():
    wl = SyntheticLogreg(SyntheticLogregConfig(num_ues=9, batch_size=0), seed=2)
    everyone, some = list(range(9)), [7, 2, 2, 5]
    for step, ues in enumerate([everyone, everyone, some, everyone[::-1], some, everyone]):
        _check(wl, ues, step, seed=step)
    assert set(wl._padded) == {(tuple(u), "cpu") for u in (everyone, some, everyone[::-1])}
    assert next(reversed(wl._padded)) == (tuple(everyone), "cpu")  # most recently used last


def test_minibatches_are_not_kept():
    wl = SyntheticLogreg(SyntheticLogregConfig(num_ues=6, batch_size=8), seed=3)
    for step in range(3):
        _check(wl, list(range(6)), step, seed=step)
    assert wl._padded == {}


def _bytes(batches) -> int:
    return sum(t.numel() * t.element_size() for batch in batches for t in batch)


def test_cache_stays_within_its_budget(monkeypatch):
    wl = SyntheticLogreg(SyntheticLogregConfig(num_ues=8, batch_size=0), seed=4)
    subsets = [[0, 1, 2], [3, 4, 5], [0, 1, 2], [5, 6, 7], [2, 3, 4]]
    sizes = {tuple(u): _bytes(wl._padded_batches(u, 0)) for u in subsets}
    budget = sum(sizes.values()) - 1  # each fits, not all four together
    assert budget >= max(sizes.values())
    wl._padded.clear()
    monkeypatch.setattr(synthetic, "_PADDED_CACHE_BYTES", budget)
    for step, ues in enumerate(subsets):
        _check(wl, ues, step, seed=10 + step)
        assert sum(_bytes(v) for v in wl._padded.values()) <= budget
        assert next(reversed(wl._padded)) == (tuple(ues), "cpu")
    assert len(wl._padded) < 4  # four distinct subsets were used: something was dropped
    everyone = list(range(8))
    held = dict(list(wl._padded.items())[-1:])  # the most recent subset only
    too_large = _bytes(wl._padded_batches(everyone, 0)) - 1
    wl._padded = dict(held)
    monkeypatch.setattr(synthetic, "_PADDED_CACHE_BYTES", too_large)
    assert sum(_bytes(v) for v in held.values()) <= synthetic._PADDED_CACHE_BYTES
    _check(wl, everyone, 8, seed=30)  # too large to keep: computed, and what is kept stays
    assert wl._padded == held
    monkeypatch.setattr(synthetic, "_PADDED_CACHE_BYTES", 10)  # nothing fits: computed, not kept
    wl._padded.clear()
    _check(wl, [0, 1], 9, seed=20)
    assert wl._padded == {}


@pytest.mark.parametrize("ues", [[0], [4, 4, 1]])
def test_repeated_and_single_ues(ues):
    wl = SyntheticLogreg(SyntheticLogregConfig(num_ues=5, batch_size=0), seed=5)
    _check(wl, ues, 0, seed=1)
    _check(wl, ues, 1, seed=2)  # served from the cache
