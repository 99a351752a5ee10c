"""Graph data for ``graph-hgpsl``: TU-format sets shipped in the ``grakel`` wheel, a generated set,
stratified folds and padded dense batches.

MUTAG (188 molecules, 2 classes, 7 atom types) and Cuneiform (267 signs, 30 classes) ship as test
data inside ``grakel==0.1.11`` (``grakel/tests/data/<NAME>/``). They are read with numpy from the
installed package's folder, without importing grakel, and every file's sha256 is checked against
:data:`SHA256` first: test data may change between releases without notice, so the version is
pinned (the ``graph`` extra) and any other content is refused with a message naming the file.

Node features: MUTAG one-hot atom type (7); Cuneiform one-hot of its two node-label columns (4 + 3)
and its 3 node attributes standardised over the set (10). The ``synthetic`` set is generated
from the experiment seed (stream ``"data"``): preferential-attachment trees (Barabási–Albert,
m = 1), half of them with a planted 5-clique attached by one edge (label 1), features one-hot
degree capped at 7 (8).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from channels.rng import numpy_generator
from fedsim.errors import ConfigError

GRAKEL_VERSION = "0.1.11"

#: sha256 of every file read, as shipped in grakel 0.1.11.
SHA256 = {
    "MUTAG/MUTAG_A.txt": "d9656ca7493f3445d737c711710bb36fd432dddd1c0ea32e1d4713c86ebd28e2",
    "MUTAG/MUTAG_graph_indicator.txt": "7d520a4d6c7961c0cdeabe076d8fe27e795b6d373485c9a2b744987e560a2056",
    "MUTAG/MUTAG_graph_labels.txt": "a1518ea39ba3426bd42f57396b9c4baffe68e9adc718caeeab0119c6591a5f2c",
    "MUTAG/MUTAG_node_labels.txt": "678f429965490e84dd27713017538c995fc05d1621beac910848b600015ee863",
    "Cuneiform/Cuneiform_A.txt": "787ebbbaaef3725040c39b5432da29eb7b100db4d3a29254fb6423365407b593",
    "Cuneiform/Cuneiform_graph_indicator.txt": "3119ff5387eb48af911a9854b3f60303e17e5e788e5dce8f9ba9a97e4aea2575",
    "Cuneiform/Cuneiform_graph_labels.txt": "27b4b471cdc6aebe701d9ef50cd51a264b1d0c670844de678108408c226a1474",
    "Cuneiform/Cuneiform_node_labels.txt": "30525e5c8a82058e355a414f48a9fd3ff24cdadd4532ea5adf22cb09e606b30b",
    "Cuneiform/Cuneiform_node_attributes.txt": "552c8d8b3000788e51f42f892f2d3d74ddf0706639181a6887951b8245a6f88d",
}


@dataclass(frozen=True)
class GraphSet:
    """Graphs as lists: ``adj[g]`` ``[n_g, n_g]`` symmetric 0/1 float64 (no self-loops), ``x[g]``
    ``[n_g, F]`` float64 node features, ``y`` ``[G]`` int64 labels 0..C-1."""

    adj: list[np.ndarray]
    x: list[np.ndarray]
    y: np.ndarray
    num_classes: int


def tu_data_dir() -> Path:
    """The folder of grakel's TU test data (``grakel/tests/data``), found without importing grakel."""
    spec = importlib.util.find_spec("grakel")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the graph data sets ship in grakel=={GRAKEL_VERSION}, which is not installed: "
                          f"pip install 'grakel=={GRAKEL_VERSION}' (or fedsim[graph])")
    return Path(next(iter(spec.submodule_search_locations))) / "tests" / "data"


def _checked_text(root: Path, rel: str) -> str:
    """The text of ``root/rel`` after its sha256 check (ConfigError naming the file otherwise)."""
    path = root / rel
    if not path.is_file():
        raise ConfigError(f"{path} is missing; the graph data sets need grakel=={GRAKEL_VERSION}")
    blob = path.read_bytes()
    found = hashlib.sha256(blob).hexdigest()
    if found != SHA256[rel]:
        raise ConfigError(f"{path} differs from the file shipped in grakel=={GRAKEL_VERSION}: sha256 expected "
                          f"{SHA256[rel]}, found {found}; install grakel=={GRAKEL_VERSION}")
    return blob.decode("ascii")


def _table(root: Path, rel: str) -> np.ndarray:
    """A comma-separated numeric file as a 2-D float64 array."""
    rows = [line.split(",") for line in _checked_text(root, rel).splitlines() if line.strip()]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)


def _one_hot(col: np.ndarray) -> np.ndarray:
    values, inverse = np.unique(col.astype(np.int64), return_inverse=True)
    return np.eye(len(values))[inverse]


def read_tu(name: str, root: Path | None = None) -> GraphSet:
    """Read TU set ``name`` ("MUTAG" or "Cuneiform") from ``root`` (default: grakel's data folder)."""
    root = tu_data_dir() if root is None else root
    edges = _table(root, f"{name}/{name}_A.txt").astype(np.int64) - 1
    graph_of = _table(root, f"{name}/{name}_graph_indicator.txt")[:, 0].astype(np.int64) - 1
    raw_y = _table(root, f"{name}/{name}_graph_labels.txt")[:, 0].astype(np.int64)
    labels = _table(root, f"{name}/{name}_node_labels.txt")
    if name == "MUTAG":
        feats = _one_hot(labels[:, 0])
    else:
        attr = _table(root, f"{name}/{name}_node_attributes.txt")
        attr = (attr - attr.mean(0)) / attr.std(0)
        feats = np.concatenate([_one_hot(labels[:, 0]), _one_hot(labels[:, 1]), attr], axis=1)
    classes, y = np.unique(raw_y, return_inverse=True)
    num_graphs = len(raw_y)
    first = np.searchsorted(graph_of, np.arange(num_graphs))  # nodes are numbered graph by graph
    sizes = np.bincount(graph_of, minlength=num_graphs)
    adj = [np.zeros((s, s)) for s in sizes]
    for u, v in edges:
        g = graph_of[u]
        adj[g][u - first[g], v - first[g]] = adj[g][v - first[g], u - first[g]] = 1.0
    x = [feats[first[g]: first[g] + sizes[g]] for g in range(num_graphs)]
    return GraphSet(adj, x, y.astype(np.int64), len(classes))


def _ba_tree(n: int, rng: np.random.Generator) -> np.ndarray:
    """Preferential attachment with one edge per new node (a BA graph with m = 1, a tree)."""
    adj = np.zeros((n, n))
    adj[0, 1] = adj[1, 0] = 1.0
    for v in range(2, n):
        deg = adj[:v, :v].sum(1)
        u = rng.choice(v, p=deg / deg.sum())
        adj[u, v] = adj[v, u] = 1.0
    return adj


def synthetic_graphs(seed: int, num_graphs: int, min_nodes: int = 12, max_nodes: int = 25) -> GraphSet:
    """Seeded BA trees, every other one with a 5-clique attached by one edge (label 1)."""
    rng = numpy_generator(seed, "data", 5)
    adj, x, y = [], [], []
    for g in range(num_graphs):
        a = _ba_tree(int(rng.integers(min_nodes, max_nodes + 1)), rng)
        label = g % 2
        if label:
            n = len(a)
            big = np.zeros((n + 5, n + 5))
            big[:n, :n] = a
            big[n:, n:] = 1.0 - np.eye(5)
            u = int(rng.integers(n))
            big[u, n] = big[n, u] = 1.0
            a = big
        adj.append(a)
        x.append(np.eye(8)[np.minimum(a.sum(1).astype(np.int64), 7)])
        y.append(label)
    return GraphSet(adj, x, np.asarray(y, dtype=np.int64), 2)


@functools.cache
def load_graphs(dataset: str, seed: int, num_graphs: int) -> GraphSet:
    """The graph set ``dataset`` ("mutag", "cuneiform", "synthetic"), cached per process."""
    if dataset == "mutag":
        return read_tu("MUTAG")
    if dataset == "cuneiform":
        return read_tu("Cuneiform")
    if dataset == "synthetic":
        return synthetic_graphs(seed, num_graphs)
    raise ConfigError(f"unknown graph data set {dataset!r}; use mutag, cuneiform or synthetic")


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """``[G]`` fold ids 0..folds-1: each class's graphs in a seeded random order (stream ``"data"``,
    round 3) dealt round-robin, class after class, so every fold holds each class's share."""
    rng = numpy_generator(seed, "data", 3)
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)])
    fold = np.empty(len(y), dtype=np.int64)
    fold[order] = np.arange(len(y)) % folds
    return fold


def pad_batch(data: GraphSet, rows: np.ndarray, n_max: int, dtype: torch.dtype
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Graphs ``rows`` as ``(adj [B, n_max, n_max], x [B, n_max, F], mask [B, n_max])``, zero-padded."""
    feats = data.x[0].shape[1]
    adj = np.zeros((len(rows), n_max, n_max))
    x = np.zeros((len(rows), n_max, feats))
    mask = np.zeros((len(rows), n_max))
    for b, g in enumerate(rows):
        n = len(data.adj[g])
        adj[b, :n, :n], x[b, :n], mask[b, :n] = data.adj[g], data.x[g], 1.0
    return (torch.as_tensor(adj, dtype=dtype), torch.as_tensor(x, dtype=dtype), torch.as_tensor(mask, dtype=dtype))
