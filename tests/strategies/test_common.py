"""strategies.common helpers that every strategy's aggregation relies on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from strategies.common import Reply, split_finite


def _reply(ue: int, *vectors: list[float]) -> Reply:
    return Reply(ue, [torch.tensor(v, dtype=torch.float64) for v in vectors], {})


@pytest.mark.parametrize("second_len", [2, 3])  # stacked (one shape) and per-vector (mixed shapes)
def test_split_finite_keeps_order_and_flags_any_bad_vector(second_len: int) -> None:
    replies = [_reply(0, [1.0, 2.0]), _reply(1, [math.nan, 0.0]), _reply(2, [0.0, 1.0], [math.inf] * second_len),
               _reply(3, [0.0, -1.0], [0.0] * second_len), _reply(4)]
    finite, bad = split_finite(replies)
    assert [r.ue for r in finite] == [0, 3, 4] and [r.ue for r in bad] == [1, 2]
    finite, bad = split_finite(replies, first_only=True)  # the server-free report vector is not checked
    assert [r.ue for r in finite] == [0, 2, 3, 4] and [r.ue for r in bad] == [1]
    assert split_finite([]) == ([], [])


def test_split_finite_does_not_flag_finite_vectors_whose_sum_overflows() -> None:
    big = torch.finfo(torch.float64).max
    finite, bad = split_finite([_reply(0, [big, big]), _reply(1, [1.0, math.inf]), _reply(2, [math.inf, -math.inf])])
    assert [r.ue for r in finite] == [0] and [r.ue for r in bad] == [1, 2]


def test_raw_array_is_the_array_flower_builds() -> None:
    from flwr.app import Array

    from strategies.common import RAW_STYPE, raw_array

    data = np.arange(6, dtype="<f8").tobytes()
    fast = raw_array("<f8", (2, 3), data)
    slow = Array(dtype="<f8", shape=(2, 3), stype=RAW_STYPE, data=data)
    assert type(fast) is Array and fast.__dict__ == slow.__dict__ and fast.object_id == slow.object_id
