"""The size buckets of synthetic-logreg's batched gradient: a partition of the UEs in which padding
wastes at most 25 % and no bucket's padded features exceed the chunk limit."""

import numpy as np

from fedsim.workloads import synthetic
from fedsim.workloads.synthetic import NUM_FEATURES, _size_buckets


def test_buckets_partition_the_ues_with_bounded_padding(monkeypatch) -> None:
    monkeypatch.setattr(synthetic, "CHUNK_LOGITS", 61 * 4000)  # small, so the limit binds too
    rng = np.random.default_rng(0)
    for _ in range(20):
        sizes = [int(s) for s in rng.lognormal(4.0, 1.0, size=int(rng.integers(1, 300))) + 1]
        buckets = [b.tolist() for b in _size_buckets(sizes)]
        flat = sorted(i for b in buckets for i in b)
        assert flat == list(range(len(sizes)))  # every UE exactly once
        for b in buckets:
            lens = [sizes[i] for i in b]
            assert max(lens) <= 1.25 * min(lens)
            assert len(b) == 1 or len(b) * max(lens) * (NUM_FEATURES + 1) <= 61 * 4000
        # not over-split: two neighbouring buckets could not have been one
        for a, c in zip(buckets, buckets[1:], strict=False):
            merged = [sizes[i] for i in a + c]
            joinable = max(merged) <= 1.25 * min(merged) and len(merged) * max(merged) * 61 <= 61 * 4000
            assert not joinable
