"""graph-hgpsl against independent references: sparsemax against a bisection for the Euclidean
projection onto the simplex, the information score against a hand-computed path graph, the whole
model against its own node permutations, the TU reader against the data sets' published counts,
the vectorised gradient against the per-UE one and against finite differences, the hash check
against a modified copy of a file, and the generated set against its construction."""

from __future__ import annotations

import math
import shutil

import networkx as nx
import numpy as np
import pytest
import torch

from fedsim.errors import ConfigError
from fedsim.workloads import build_workload, parse_workload_config
from fedsim.workloads import graph_data as gd
from fedsim.workloads.graph_model import Arch, forward, info_score, init_flat, readout, sparsemax, unflatten

pytestmark = pytest.mark.usefixtures("one_thread")


def _simplex_projection(z: np.ndarray) -> np.ndarray:
    """argmin_p ||p - z||^2 over the simplex, via bisection on tau in sum(max(z - tau, 0)) = 1."""
    lo, hi = z.min() - 1.0, z.max()
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if np.maximum(z - mid, 0).sum() > 1 else (lo, mid)
    return np.maximum(z - 0.5 * (lo + hi), 0)


def test_sparsemax_is_the_projection_onto_the_simplex() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 7)) * rng.choice([0.1, 1.0, 5.0], size=(50, 1))
    valid = rng.random((50, 7)) < 0.7
    valid[:, 0] = True
    got = sparsemax(torch.tensor(z), torch.tensor(valid)).numpy()
    for row, ok, out in zip(z, valid, got, strict=True):
        np.testing.assert_allclose(out[ok], _simplex_projection(row[ok]), atol=1e-12)
        assert np.all(out[~ok] == 0)


def test_information_score_on_a_hand_computed_path() -> None:
    # path 0-1-2, degrees 1, 2, 1: D^-1/2 A D^-1/2 has 1/sqrt(2) on both edges.
    a = torch.tensor([[0.0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=torch.float64)
    h = torch.tensor([[1.0, -1.0], [2.0, 0.0], [4.0, 3.0]], dtype=torch.float64)
    r = 1 / math.sqrt(2)
    want = [abs(1 - 2 * r) + abs(-1 - 0), abs(2 - 5 * r) + abs(0 - 2 * r), abs(4 - 2 * r) + abs(3 - 0)]
    np.testing.assert_allclose(info_score(a, h).numpy(), want, rtol=1e-14)
    # an isolated node scores ||h_i||_1; padding (a zero row and column) changes nothing else
    a4 = torch.zeros(4, 4, dtype=torch.float64)
    a4[:3, :3] = a
    h4 = torch.cat([h, torch.tensor([[-2.0, 5.0]], dtype=torch.float64)])
    np.testing.assert_allclose(info_score(a4, h4).numpy(), [*want, 7.0], rtol=1e-14)


def _random_batch(rng: np.random.Generator, sizes: list[int], feats: int, n_max: int):
    a = torch.zeros(len(sizes), n_max, n_max, dtype=torch.float64)
    x = torch.zeros(len(sizes), n_max, feats, dtype=torch.float64)
    m = torch.zeros(len(sizes), n_max, dtype=torch.float64)
    for b, n in enumerate(sizes):
        g = nx.connected_watts_strogatz_graph(n, 4, 0.3, seed=int(rng.integers(1 << 30)))
        a[b, :n, :n] = torch.tensor(nx.to_numpy_array(g))
        x[b, :n] = torch.tensor(rng.normal(size=(n, feats)))
        m[b, :n] = 1.0
    return a, x, m


@pytest.mark.parametrize(("sl", "attention", "hops", "ro"), [(True, "sparsemax", 3, "max-mean"),
                                                              (True, "softmax", 0, "max-mean"),
                                                              (False, "sparsemax", 3, "max-mean"),
                                                              (True, "sparsemax", 3, "max-sum")])
def test_logits_are_invariant_to_node_permutations(sl: bool, attention: str, hops: int, ro: str) -> None:
    rng = np.random.default_rng(1)
    arch = Arch(5, 3, hidden=16, ratio=0.6, structure_learning=sl, attention=attention, lam=1.0, hops=hops,
                readout=ro)
    p = unflatten(arch, init_flat(arch, torch.Generator().manual_seed(0), torch.float64))
    a, x, m = _random_batch(rng, [9, 13, 7], 5, 14)
    z = forward(arch, p, a, x, m)[0]
    perm_a, perm_x = a.clone(), x.clone()
    for b, n in enumerate([9, 13, 7]):
        pi = torch.tensor(rng.permutation(n))
        perm_a[b, :n, :n] = a[b, :n, :n][pi][:, pi]
        perm_x[b, :n] = x[b, :n][pi]
    zp = forward(arch, p, perm_a, perm_x, m)[0]
    assert torch.allclose(z, zp, rtol=1e-10, atol=1e-12)
    assert (z[0] - z[1]).abs().max() > 1e-6  # the graphs are told apart


def test_readouts_on_a_hand_computed_batch() -> None:
    h = torch.tensor([[[1.0, -2.0], [3.0, 4.0], [9.0, 9.0]], [[-1.0, 5.0], [0.0, 0.0], [0.0, 0.0]]])
    m = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # the 9s and zeros are padding
    assert readout(h, m, "max-mean").tolist() == [[3.0, 4.0, 2.0, 1.0], [-1.0, 5.0, -1.0, 5.0]]
    assert readout(h, m, "max-sum").tolist() == [[3.0, 4.0, 4.0, 2.0], [-1.0, 5.0, -1.0, 5.0]]


@pytest.mark.parametrize("sl", [True, False])
def test_only_the_sum_readout_sees_a_graph_twice(sl: bool, monkeypatch) -> None:
    """A graph and two disjoint copies of it: every GCN feature, score and learned edge repeats, so
    max and mean (the published readout) cannot tell them apart, while the sum doubles. Every level's
    readout is the configured one."""
    from fedsim.workloads import graph_model

    kinds: list[str] = []
    monkeypatch.setattr(graph_model, "readout", lambda h, m, kind="max-mean": kinds.append(kind) or readout(h, m, kind))
    rng = np.random.default_rng(3)
    a, x, _ = _random_batch(rng, [8], 4, 8)
    twice_a = torch.zeros(1, 16, 16, dtype=torch.float64)
    twice_a[0, :8, :8] = twice_a[0, 8:, 8:] = a[0]
    batch = (torch.cat([torch.nn.functional.pad(a, (0, 8, 0, 8)), twice_a]),
             torch.cat([torch.nn.functional.pad(x, (0, 0, 0, 8)), x.repeat(1, 2, 1)]),
             torch.tensor([[1.0] * 8 + [0.0] * 8, [1.0] * 16], dtype=torch.float64))
    logits = {}
    for ro in ("max-mean", "max-sum"):
        arch = Arch(4, 2, hidden=8, ratio=0.5, structure_learning=sl, hops=3, readout=ro)
        p = unflatten(arch, init_flat(arch, torch.Generator().manual_seed(1), torch.float64))
        logits[ro] = forward(arch, p, *batch)[0]
    torch.testing.assert_close(logits["max-mean"][0], logits["max-mean"][1], rtol=1e-12, atol=1e-12)
    assert (logits["max-sum"][0] - logits["max-sum"][1]).abs().max() > 1e-3
    assert kinds == ["max-mean"] * 3 + ["max-sum"] * 3


def test_tu_reader_counts() -> None:
    mutag = gd.read_tu("MUTAG")
    assert len(mutag.adj) == 188 and np.bincount(mutag.y).tolist() == [63, 125] and mutag.num_classes == 2
    assert sum(len(a) for a in mutag.adj) == 3371 and sum(int(a.sum()) for a in mutag.adj) == 7442
    assert mutag.x[0].shape[1] == 7 and all(np.all(x.sum(1) == 1) for x in mutag.x)
    assert all(np.array_equal(a, a.T) and np.all(np.diag(a) == 0) for a in mutag.adj)
    cune = gd.read_tu("Cuneiform")
    assert len(cune.adj) == 267 and cune.num_classes == 30 and len(np.unique(cune.y)) == 30
    assert sum(len(a) for a in cune.adj) == 5680 and cune.x[0].shape[1] == 10


def test_a_modified_or_missing_data_file_is_refused(tmp_path, monkeypatch) -> None:
    shutil.copytree(gd.tu_data_dir() / "MUTAG", tmp_path / "MUTAG")
    target = tmp_path / "MUTAG" / "MUTAG_graph_labels.txt"
    target.write_text(target.read_text().replace("-1", "1", 1))
    monkeypatch.setattr(gd, "tu_data_dir", lambda: tmp_path)
    with pytest.raises(ConfigError, match=r"MUTAG_graph_labels\.txt.*expected a1518ea3.*found .*grakel==0\.1\.11"):
        gd.read_tu("MUTAG")
    monkeypatch.undo()  # the real data folder again, now with the package missing
    monkeypatch.setattr(gd.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install 'grakel==0\.1\.11'"):
        gd.read_tu("MUTAG")


def test_synthetic_set_and_folds() -> None:
    data = gd.synthetic_graphs(3, 24)
    for a, y in zip(data.adj, data.y, strict=True):
        g = nx.from_numpy_array(a)
        assert nx.is_connected(g)
        assert nx.is_tree(g) == (y == 0) and (max(len(c) for c in nx.find_cliques(g)) == 5) == (y == 1)
    y = np.repeat([0, 1, 2], [25, 13, 7])
    fold = gd.stratified_folds(y, 5, seed=4)
    for c in range(3):
        counts = np.bincount(fold[y == c], minlength=5)
        assert counts.max() - counts.min() <= 1
    assert np.array_equal(fold, gd.stratified_folds(y, 5, seed=4))
    with pytest.raises(ValueError, match="only 5 folds"):
        parse_workload_config({"name": "graph-hgpsl", "num_ues": 2, "folds": 5, "fold": 5})


@pytest.fixture(scope="module", params=["max-mean", "max-sum"])
def small(request):
    """MUTAG in float64 over 6 UEs of unequal size (full local batches), hidden 8, dropout 0.3; both
    readouts."""
    cfg = {"name": "graph-hgpsl", "num_ues": 6, "hidden": 8, "precision": "float64", "dropout": 0.3,
           "readout": request.param}
    workload = build_workload(parse_workload_config(cfg), seed=2)
    assert workload.arch.readout == request.param
    return workload


def test_batched_gradient_equals_the_per_ue_gradient(small) -> None:
    assert len({small.num_examples(n) for n in range(6)}) > 1  # the zero-weight padding is exercised
    ws = small.init_params() + 0.05 * torch.randn(6, small.dim, generator=torch.Generator().manual_seed(0),
                                                  dtype=torch.float64)
    ues = [3, 0, 5, 2, 4, 1]
    many = small.stochastic_grad_many(ws, ues, step=5)
    loop = torch.stack([small.stochastic_grad(w, n, 5) for w, n in zip(ws, ues, strict=True)])
    assert torch.linalg.norm(many - loop) <= 1e-9 * torch.linalg.norm(loop)


def test_gradient_matches_finite_differences(small) -> None:
    w = small.init_params()
    g = small.stochastic_grad(w, 1, 7)
    v = torch.randn(small.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    b = small.batch(1, 7)
    ones = torch.ones(len(b[3]), dtype=torch.float64)
    eps = 1e-6
    fd = (small.loss(w + eps * v, *b, ones) - small.loss(w - eps * v, *b, ones)) / (2 * eps)
    assert float(fd) == pytest.approx(float(g @ v), rel=1e-6)
