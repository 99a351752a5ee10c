"""The search space of ``nas-dash``: one (kernel size, dilation) pair per convolution, the discrete
child network of an architecture, and its He-normal initialisation. ``cfg`` below is a
``DashConfig``."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from channels.rng import torch_generator
from fedsim.workloads.images import NUM_CLASSES
from fedsim.workloads.nas.resources import Resources, measure
from fedsim.workloads.nas.taxonomy import Architecture, Decision, SearchSpace

POOL = {1: 4, 2: 2}  # max-pool width after each conv, by the input's dimensionality


def validate_arch(arch: dict[str, Any], layers: int, K: tuple[int, ...], D: tuple[int, ...]) -> None:
    """Raise ValueError naming the key and the allowed values unless ``arch`` picks a (k, d) ∈ K × D
    for each of conv0 .. conv{layers-1}."""
    names = [f"conv{i}" for i in range(layers)]
    unknown = [k for k in arch if k not in names]
    if unknown:
        raise ValueError(f"arch: unknown decision {unknown[0]!r}; the decisions are {names}")
    for n in names:
        v = arch.get(n)
        if not isinstance(v, dict) or set(v) != {"kernel", "dilation"}:
            raise ValueError(f"arch[{n!r}] must be {{'kernel': k, 'dilation': d}}, got {v!r}")
        if v["kernel"] not in K:
            raise ValueError(f"arch[{n!r}]['kernel'] = {v['kernel']!r} is not one of the allowed kernels {list(K)}")
        if v["dilation"] not in D:
            raise ValueError(f"arch[{n!r}]['dilation'] = {v['dilation']!r} is not one of the allowed dilations "
                             f"{list(D)}")


def kaiming(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """He-normal conv init, std sqrt(2 / fan_in) (our backbone has no BatchNorm, so DASH's N(0, 0.01)
    would shrink the signal by ~10x per layer)."""
    return torch.randn(shape, generator=g) * math.sqrt(2.0 / math.prod(shape[1:]))


class DashSpace(SearchSpace):
    """L decisions ``conv{l}`` over the labels ``{"kernel": k, "dilation": d}``, (k, d) ∈ K × D."""

    def __init__(self, cfg: Any, in_size: tuple[int, ...]) -> None:
        self.cfg, self.dims, self.in_size = cfg, cfg.dims, in_size
        self.pairs = [(k, d) for k in cfg.kernel_set for d in cfg.dilation_set]
        self.decisions = tuple(Decision(f"conv{i}", tuple({"kernel": k, "dilation": d} for k, d in self.pairs))
                               for i in range(len(cfg.channels)))
        out = in_size
        for _ in cfg.channels:
            out = tuple(n // POOL[self.dims] for n in out)
        if min(out) < 1:
            raise ValueError(f"{len(cfg.channels)} conv+pool layers shrink the {in_size} input to nothing")
        self.out_size = out

    def architecture(self, indices) -> Architecture:
        return {k: dict(v) for k, v in super().architecture(indices).items()}  # copies, not the choices

    def kd(self, arch: Architecture) -> list[tuple[int, int]]:
        return [(arch[d.name]["kernel"], arch[d.name]["dilation"]) for d in self.decisions]

    def meta_child(self, arch: Architecture) -> nn.Sequential:
        """The discrete network of ``arch`` on the meta device (shapes only, no RNG)."""
        conv, pool = (nn.Conv1d, nn.MaxPool1d) if self.dims == 1 else (nn.Conv2d, nn.MaxPool2d)
        layers: list[nn.Module] = []
        c_in = 1
        with torch.device("meta"):
            for c_out, (k, d) in zip(self.cfg.channels, self.kd(arch), strict=True):
                layers += [conv(c_in, c_out, k, dilation=d, padding=d * (k - 1) // 2), nn.ReLU(), pool(POOL[self.dims])]
                c_in = c_out
            layers += [nn.Flatten(), nn.Linear(c_in * math.prod(self.out_size), NUM_CLASSES)]
            return nn.Sequential(*layers)

    def init_child(self, net: nn.Module, g: torch.Generator) -> torch.Tensor:
        """Flat init of ``net``'s parameters: He-normal conv weights, U(±1/sqrt(fan_in)) head, zero biases."""
        out = []
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                out.append(torch.zeros(p.numel()))
            elif p.dim() > 2:
                out.append(kaiming(tuple(p.shape), g).flatten())
            else:
                out.append((2 * torch.rand(p.numel(), generator=g) - 1) / math.sqrt(p.shape[1]))
        return torch.cat(out)

    def child(self, arch: Architecture) -> nn.Module:
        net = self.meta_child(arch).to_empty(device="cpu")
        nn.utils.vector_to_parameters(self.init_child(net, torch_generator(0, "resources")), net.parameters())
        return net

    def example_input(self) -> torch.Tensor:
        return torch.zeros(1, 1, *self.in_size)

    def resources(self, arch: Architecture, *, latency: bool = True) -> Resources:
        return measure(self.child(arch), self.example_input(), latency=latency)  # child() uses no global RNG
