"""Label-based partitioning of a training pool across UEs, via flwr-datasets partitioners.

The partitioners run on a tiny ``datasets.Dataset`` of ``{"idx", "label"}`` so that only index
lists come back; the images themselves never enter Arrow. Behaviour of the flwr-datasets
0.6 partitioners, read from their source:

- ``IidPartitioner``: contiguous equal shards of the dataset *in its given order*, no
  shuffling. We therefore hand it a seeded permutation of the pool.
- ``DirichletPartitioner``: per class, proportions ~ Dir(alpha * 1_N) split that class's
  indices; if any UE gets fewer than ``min_partition_size`` examples it redraws, and it raises
  after 10 redraws. ``self_balancing=False`` (the plain Dirichlet label split). Each UE's list
  is shuffled afterwards with the partitioner's seeded RNG.
- ``ShardPartitioner``: sorts by label, cuts ``N * shards_per_ue`` shards of
  ``floor(n / (N * shards_per_ue))`` consecutive examples and deals them out at random. The
  remainder ``n mod (N * shards_per_ue)`` examples (always fewer than ``N * shards_per_ue``)
  belong to no UE.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np

from channels.rng import numpy_generator, seed_int
from fedsim.errors import ConfigError

PartitionScheme = Literal["iid", "dirichlet", "shards"]


def partition_indices(
    labels: np.ndarray,
    num_ues: int,
    scheme: PartitionScheme,
    seed: int,
    dirichlet_alpha: float = 0.5,
    shards_per_ue: int = 2,
    min_partition_size: int = 1,
) -> list[np.ndarray]:
    """Split positions ``0..n-1`` of a training pool across ``num_ues`` UEs.

    Args:
        labels: ``[n]`` integer class labels of the pool (in pool order).
        num_ues: N.
        scheme: ``"iid"``, ``"dirichlet"`` (label proportions ~ Dir(alpha)) or ``"shards"``.
        seed: experiment seed; partitioners are seeded with ``seed_int(seed, "data", 1)``,
            the IID permutation with ``numpy_generator(seed, "data", 1)``.
        dirichlet_alpha: Dirichlet concentration (smaller = more label skew).
        shards_per_ue: label-sorted shards per UE for ``"shards"``.
        min_partition_size: smallest allowed UE partition for ``"dirichlet"`` (redrawn
            up to 10 times); for the other schemes a smaller partition is an error.

    Returns:
        N sorted ``int64`` arrays of pool positions, pairwise disjoint.

    Raises:
        ConfigError: when the split is impossible (too many UEs for the data, or Dirichlet
            redraws exhausted).
    """
    # Imported here: `datasets` is slow to import and only image workloads need it.
    import datasets

    labels = np.asarray(labels, dtype=np.int64)
    n = labels.shape[0]
    if num_ues > n:
        raise ConfigError(f"num_ues={num_ues} exceeds the {n} training examples; lower num_ues")
    partitioner = _partitioner(scheme, n, num_ues, seed_int(seed, "data", 1), dirichlet_alpha, shards_per_ue,
                               min_partition_size)
    # IidPartitioner cuts contiguous blocks in the given order, so hand it a shuffled order.
    order = numpy_generator(seed, "data", 1).permutation(n) if scheme == "iid" else np.arange(n)
    partitioner.dataset = datasets.Dataset.from_dict({"idx": order, "label": labels[order]})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the Dirichlet redraw warnings; we raise instead
            parts = [np.sort(np.asarray(partitioner.load_partition(k)["idx"], dtype=np.int64)) for k in range(num_ues)]
    except ValueError as exc:
        raise ConfigError(
            f"could not partition {n} examples into {num_ues} UEs with scheme {scheme!r}: "
            f"{exc} (raise dirichlet_alpha, lower min_partition_size or num_ues)"
        ) from exc
    small = [k for k, p in enumerate(parts) if len(p) < min_partition_size]
    if small:
        raise ConfigError(
            f"partition {scheme!r} left UE(s) {small[:5]} with fewer than {min_partition_size} examples; lower num_ues"
        )
    return parts


def _partitioner(scheme: str, n: int, num_ues: int, part_seed: int, dirichlet_alpha: float, shards_per_ue: int,
                 min_partition_size: int) -> object:
    """The flwr-datasets partitioner of ``scheme`` (ConfigError when it cannot split n examples)."""
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, ShardPartitioner

    if scheme == "iid":
        return IidPartitioner(num_partitions=num_ues)
    if scheme == "dirichlet":
        return DirichletPartitioner(num_partitions=num_ues, partition_by="label", alpha=float(dirichlet_alpha),
                                    min_partition_size=min_partition_size, self_balancing=False, shuffle=True,
                                    seed=part_seed)
    if scheme == "shards":
        if num_ues * shards_per_ue > n:
            raise ConfigError(f"shards: num_ues * shards_per_ue = {num_ues * shards_per_ue} exceeds the {n} "
                              "training examples; lower num_ues or shards_per_ue")
        return ShardPartitioner(num_partitions=num_ues, partition_by="label", num_shards_per_partition=shards_per_ue,
                                shuffle=True, seed=part_seed)
    raise ConfigError(f"unknown partition scheme {scheme!r}; use iid, dirichlet or shards")


def holdout_split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``0..n-1`` into (train pool, test set) positions.

    Uses ``numpy_generator(seed, "data", 0)``. The train pool comes back in shuffled order
    (``IidPartitioner`` relies on that); the test set is sorted. ``round(test_fraction * n)``
    examples, at least 1, go to the test set.
    """
    perm = numpy_generator(seed, "data", 0).permutation(n)
    n_test = min(max(1, round(test_fraction * n)), n - 1)
    return perm[n_test:], np.sort(perm[:n_test])


def validation_split(positions: np.ndarray, val_fraction: float, seed: int, ue: int) -> tuple[np.ndarray, np.ndarray]:
    """Split one UE's pool positions into (train, validation), seeded per UE.

    Uses ``numpy_generator(seed, "data", 2, ue)``. ``floor(val_fraction * n)`` examples go to
    validation, but at least one stays for training. Both outputs are sorted.
    """
    n = len(positions)
    n_val = min(int(val_fraction * n), n - 1) if val_fraction > 0 else 0
    if n_val <= 0:
        return np.sort(positions), np.empty(0, dtype=np.int64)
    perm = numpy_generator(seed, "data", 2, ue).permutation(n)
    return np.sort(positions[perm[n_val:]]), np.sort(positions[perm[:n_val]])


def label_entropy(labels: np.ndarray, num_classes: int) -> float:
    """Shannon entropy (nats) of the empirical label distribution of ``labels``."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())
