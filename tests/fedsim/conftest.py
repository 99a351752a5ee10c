"""Fixtures shared by the fedsim tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """Single-threaded torch, as in the ClientApp: with tiny tensors intra-op threads only add
    overhead, and on a busy 2-core machine their barriers cost 10-40x (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
