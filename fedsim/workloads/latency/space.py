"""The latency search space and the device profiles it is measured on.

Space: 3-layer CNNs on ``1 x 28 x 28`` inputs. Layer l is a ``Conv2d(c_{l-1}, c_l, k_l,
padding=k_l // 2)`` followed by ReLU (``c_0 = 1``); then global average pooling and a
``Linear(c_3, 10)`` head. Per layer ``c ∈ CHANNELS`` and ``k ∈ KERNELS`` (16 choices), so the space
has ``16^3 = 4096`` architectures. Architecture index ``i`` in ``[0, 4096)`` encodes layer l's choice
``(i // 16^l) % 16 = 4 * channel index + kernel index`` (:func:`decode`).

A device profile is how a UE runs a network: torch thread count, batch size, dtype and optional
per-op slow-down factors. A slow-down ``{"k7": 2}`` runs every kernel-7 convolution twice (an
integer number of times, so the slower device is still *measured*, not scaled by a formula).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

CHANNELS = (4, 8, 16, 32)
KERNELS = (1, 3, 5, 7)
LAYERS = 3
CHOICES = len(CHANNELS) * len(KERNELS)
NUM_ARCHS = CHOICES**LAYERS
INPUT_HW = 28
NUM_CLASSES = 10


@dataclass(frozen=True)
class DeviceProfile:
    """One UE's device: ``threads`` (torch intra-op threads), ``batch`` (examples per forward),
    ``dtype`` (a torch dtype name) and ``slowdown`` (op name ``"k<kernel>"`` -> integer times the
    op runs)."""

    name: str
    threads: int = 1
    batch: int = 1
    dtype: str = "float32"
    slowdown: dict[str, int] = field(default_factory=dict)

    def repeats(self, kernel: int) -> int:
        return int(self.slowdown.get(f"k{kernel}", 1))

    def to_dict(self) -> dict:
        return {"name": self.name, "threads": self.threads, "batch": self.batch, "dtype": self.dtype,
                "slowdown": dict(self.slowdown)}


#: The profiles of the shipped table. All run one torch thread: on the 2-core development machine,
#: shared with other jobs at a load average near 10, two-thread forward passes measured 30-120 ms where
#: one thread took about 1 ms (the second thread waits for a core), i.e. they measured the load, not the
#: device. bfloat16 was left out too (its CPU convolutions were 10-40x slower than float32 here).
PROFILES = (
    DeviceProfile("t1-b1"),
    DeviceProfile("t1-b2", batch=2),
    DeviceProfile("t1-b4", batch=4),
    DeviceProfile("f64-b1", dtype="float64"),
    DeviceProfile("t1-b1-slowk57", slowdown={"k5": 2, "k7": 2}),
    DeviceProfile("t1-b1-slowk1", slowdown={"k1": 3}),
    DeviceProfile("t1-b2-slowk3", batch=2, slowdown={"k3": 2}),
    DeviceProfile("f64-b2", batch=2, dtype="float64"),
)


def decode(index: np.ndarray | int) -> np.ndarray:
    """Architecture indices ``[A]`` -> per-layer ``(channels, kernel)`` as ``[A, LAYERS, 2]`` ints."""
    idx = np.atleast_1d(np.asarray(index, dtype=np.int64))
    if idx.min() < 0 or idx.max() >= NUM_ARCHS:
        raise ValueError(f"architecture indices must lie in [0, {NUM_ARCHS}), got {idx.min()}..{idx.max()}")
    choice = (idx[:, None] // CHOICES ** np.arange(LAYERS)) % CHOICES  # [A, L]
    ch = np.asarray(CHANNELS)[choice // len(KERNELS)]
    k = np.asarray(KERNELS)[choice % len(KERNELS)]
    return np.stack([ch, k], axis=-1)


def encode(layers: list[tuple[int, int]]) -> int:
    """``[(channels, kernel)] * LAYERS`` -> the architecture index (inverse of :func:`decode`)."""
    if len(layers) != LAYERS:
        raise ValueError(f"an architecture has {LAYERS} layers, got {len(layers)}")
    return int(sum((CHANNELS.index(c) * len(KERNELS) + KERNELS.index(k)) * CHOICES**i
                   for i, (c, k) in enumerate(layers)))


def layer_features(index: np.ndarray | int) -> dict[str, np.ndarray]:
    """Per-layer ``c_in, c_out, kernel`` and FLOPs per example (2·MACs of the conv), each ``[A, L]``,
    plus ``flops`` (whole net per example, head included) ``[A]``."""
    arch = decode(index)
    c_out, k = arch[..., 0], arch[..., 1]
    c_in = np.concatenate([np.ones_like(c_out[:, :1]), c_out[:, :-1]], axis=1)
    conv = 2.0 * INPUT_HW**2 * c_in * c_out * k**2
    head = 2.0 * c_out[:, -1] * NUM_CLASSES
    return {"c_in": c_in, "c_out": c_out, "kernel": k, "layer_flops": conv, "flops": conv.sum(1) + head}


class Cnn3(nn.Module):
    """The network of one architecture under one profile's slow-down factors."""

    def __init__(self, layers: list[tuple[int, int]], profile: DeviceProfile | None = None) -> None:
        super().__init__()
        cin, convs, reps = 1, [], []
        for c, k in layers:
            convs.append(nn.Conv2d(cin, c, k, padding=k // 2))
            reps.append(1 if profile is None else profile.repeats(k))
            cin = c
        self.convs, self.reps, self.head = nn.ModuleList(convs), reps, nn.Linear(cin, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, rep in zip(self.convs, self.reps, strict=True):
            for _ in range(rep):
                y = conv(x)
            x = torch.relu(y)
        return self.head(x.mean(dim=(2, 3)))
