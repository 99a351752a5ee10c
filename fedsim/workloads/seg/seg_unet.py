"""``seg-unet``: federated segmentation of generated cardiac-like short-axis slices with a U-Net.

UE n is one imaging site (``phantom.py``): its scanner's contrast exponent, bias field and noise
level are drawn once from ``numpy_generator(seed, "data", 0, n)``, and its ``slices_per_ue``
training slices (random geometry, texture, noise) from ``(seed, "data", 1, n)``. The federation is
therefore non-IID in intensity, not in labels. The pooled test set holds ``test_per_site`` fresh
slices (key ``(seed, "data", 2, site)``) from every training site, or, with ``heldout_sites = k``,
from k further sites that no UE trains on (site ids N..N+k-1). Each UE also holds ``val_per_ue``
validation slices of its own site (key ``(seed, "data", 3, n)``), never trained on.

Model: ``unet.py`` (per-level ``filters``, ``kernels``, ``pooling``), one flat float32 vector.
Local objective of UE n: pixel cross-entropy plus ``dice_weight`` times the soft Dice loss of the
foreground classes (``dice.py``), on a minibatch of ``batch_size`` slices drawn without
replacement from ``torch_generator(seed, "minibatch", step, n)``. Local rule: Adam by default, its
moments kept on the UE across rounds (then only ``transmit = "update"``/``"model"`` and no batched
engine path); ``optimizer = "sgd"`` is plain SGD on the same gradient. Metrics: ``dice.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch.func import grad, vmap

from channels.rng import numpy_generator, torch_generator
from fedsim.workloads.base import LrFn, Workload, WorkloadConfig
from fedsim.workloads.seg import dice, phantom, unet

_DT = torch.float32
_EVAL_CHUNK = 256  # slices per forward pass in evaluation
_VMAP_CHUNK = 32  # UEs per vmap call
_ADAM = (0.9, 0.999, 1e-8)  # beta1, beta2, eps
_KEY_SITE, _KEY_TRAIN, _KEY_TEST, _KEY_VAL = 0, 1, 2, 3  # round slot of the "data" stream


class SegUnetConfig(WorkloadConfig):
    """U-Net segmentation of generated cardiac-like slices, one imaging site per UE."""

    name: Literal["seg-unet"] = "seg-unet"
    num_ues: int = Field(10, ge=1, description="N, number of UEs (one imaging site each)")
    size: int = Field(32, ge=8, le=128, description="image side S in pixels (32 or 64; divisible by 2^(levels-1))")
    slices_per_ue: int = Field(32, ge=1, description="training slices per UE")
    val_per_ue: int = Field(8, ge=0, description="validation slices per UE (own site, never trained on)")
    test_per_site: int = Field(16, ge=1, description="slices per site in the pooled test set")
    heldout_sites: int = Field(0, ge=0, description="0: test on fresh slices of the training sites; "
                               "k > 0: test on k unseen sites instead")
    filters: list[int] = Field([8, 16, 32], min_length=1, max_length=5,
                               description="U-Net channels per level (its length L is the depth), each 1..512")
    kernels: int | list[int] = Field(3, description="odd convolution kernel side per level (length L), or one for all")
    pooling: Literal["max", "avg"] | list[Literal["max", "avg"]] = Field(
        "max", description="2x2 pooling into each lower level (length L-1), or one for all")
    dice_weight: float = Field(1.0, ge=0, description="weight of the soft Dice loss next to the cross-entropy")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="local rule; adam keeps its moments on the UE "
                                              "(plain SGD barely leaves the all-background start in 150 steps)")
    batch_size: int = Field(16, ge=0, description="slices per minibatch; 0 = the UE's whole set")
    gamma_range: tuple[float, float] = Field((0.6, 1.6), description="site contrast exponent, log-uniform in [lo, hi]")
    bias: float = Field(0.4, ge=0, le=3, description="bias-field strength s: b = exp(s (a1 u + a2 v + a3 u v))")
    noise_range: tuple[float, float] = Field((0.02, 0.10), description="site noise std, uniform in [lo, hi]")
    rv_missing: float = Field(0.1, ge=0, le=1, description="probability that a slice has no RV (apical)")

    @model_validator(mode="after")
    def _check(self) -> SegUnetConfig:
        self.arch()  # raises ValueError with what is wrong
        levels = len(self.filters)
        if self.size % 2 ** (levels - 1):
            raise ValueError(f"size = {self.size} is not divisible by 2^(levels-1) = {2 ** (levels - 1)}")
        if any(f > 512 for f in self.filters) or any(k > 15 for k in self._kernels()):
            raise ValueError("filters must be at most 512 and kernels at most 15")
        for key, lo_min in (("gamma_range", 1e-3), ("noise_range", 0.0)):
            lo, hi = getattr(self, key)
            if not lo_min <= lo <= hi:
                raise ValueError(f"{key} must be [lo, hi] with {lo_min} <= lo <= hi, got {[lo, hi]}")
        return self

    def _kernels(self) -> tuple[int, ...]:
        return (self.kernels,) * len(self.filters) if isinstance(self.kernels, int) else tuple(self.kernels)

    def arch(self) -> unet.UNetArch:
        """The U-Net these keys describe (scalars broadcast to every level)."""
        pool = self.pooling
        pooling = (pool,) * (len(self.filters) - 1) if isinstance(pool, str) else tuple(pool)
        return unet.UNetArch(tuple(self.filters), self._kernels(), pooling)

    def build(self, seed: int) -> SegUnet:
        return SegUnet(self, seed)


def _tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)


class SegUnet(Workload):
    """See the module docstring."""

    dtype = _DT
    batched_grad = True

    def __init__(self, cfg: SegUnetConfig, seed: int) -> None:
        self.cfg, self.seed, self.name, self.num_ues = cfg, seed, cfg.name, cfg.num_ues
        self.custom_local_train = cfg.optimizer == "adam"
        self.arch = cfg.arch()
        self.dim = unet.num_params(self.arch)
        n_sites = cfg.num_ues + cfg.heldout_sites
        #: the imaging site of every UE, then of the held-out sites
        self.sites = [phantom.draw_site(numpy_generator(seed, "data", _KEY_SITE, s), cfg.gamma_range, cfg.bias,
                                        cfg.noise_range) for s in range(n_sites)]
        self._ue = [self._slices(n, cfg.slices_per_ue, _KEY_TRAIN) for n in range(cfg.num_ues)]
        self._val = [self._slices(n, cfg.val_per_ue, _KEY_VAL) for n in range(cfg.num_ues)]
        test_sites = range(cfg.num_ues, n_sites) if cfg.heldout_sites else range(cfg.num_ues)
        tests = [self._slices(s, cfg.test_per_site, _KEY_TEST) for s in test_sites]
        self.x_test, self.y_test = (torch.cat(t) for t in zip(*tests, strict=True))
        self._x_train, self._y_train = (torch.cat(t) for t in zip(*self._ue, strict=True))

    def _slices(self, site: int, n: int, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = numpy_generator(self.seed, "data", key, site)
        x, y, _ = phantom.site_slices(self.sites[site], n, self.cfg.size, self.cfg.rv_missing, rng)
        return _tensors(x, y)

    # -- data ----------------------------------------------------------------------------
    def num_examples(self, ue: int) -> int:
        return self.cfg.slices_per_ue

    def ue_data(self, ue: int) -> tuple[torch.Tensor, torch.Tensor]:
        """UE ``ue``'s training slices ``(x [n, 1, S, S] float32, y [n, S, S] int64)``."""
        return self._ue[ue]

    def ue_validation_data(self, ue: int) -> tuple[torch.Tensor, torch.Tensor]:
        """UE ``ue``'s validation slices (``val_per_ue`` of its own site)."""
        return self._val[ue]

    def batch(self, ue: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """UE ``ue``'s minibatch for global ``step`` (rows without replacement)."""
        x, y = self._ue[ue]
        bs = self.cfg.batch_size
        if 0 < bs < len(y):
            rows = torch.randperm(len(y), generator=torch_generator(self.seed, "minibatch", step, ue))[:bs]
            return x[rows], y[rows]
        return x, y

    # -- model ---------------------------------------------------------------------------
    def init_params(self) -> torch.Tensor:
        return unet.init_flat(self.arch, torch_generator(self.seed, "init"), _DT)

    def logits(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``[B, 4, S, S]`` logits of model ``w [d]`` on ``x [B, 1, S, S]``."""
        return unet.forward(self.arch, unet.unflatten(self.arch, w), x.to(w.dtype))

    def loss(self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The local objective on ``(x, y)``: cross-entropy + dice_weight * soft Dice loss."""
        return dice.seg_loss(self.logits(w, x), y, self.cfg.dice_weight)

    def stochastic_grad(self, w: torch.Tensor, ue: int, step: int) -> torch.Tensor:
        return grad(self.loss)(w.detach().to(_DT), *self.batch(ue, step))

    def stochastic_grad_many(self, ws: torch.Tensor, ues: Sequence[int], step: int) -> torch.Tensor:
        """``stochastic_grad`` for every row of ``ws [M, d]``: ``vmap(grad)`` over the stacked models
        and minibatches (every UE's minibatch has the same size), ``_VMAP_CHUNK`` UEs at a time."""
        ues = [int(n) for n in ues]
        if ws.shape[0] != len(ues):
            raise ValueError(f"ws has {ws.shape[0]} rows but {len(ues)} UEs were given")
        xs, ys = zip(*(self.batch(n, step) for n in ues), strict=True)
        per_ue = vmap(grad(self.loss))
        ws = ws.detach().to(_DT)
        return torch.cat([per_ue(ws[a: a + _VMAP_CHUNK], torch.stack(xs[a: a + _VMAP_CHUNK]),
                                 torch.stack(ys[a: a + _VMAP_CHUNK])) for a in range(0, len(ues), _VMAP_CHUNK)])

    def local_train(self, w: torch.Tensor, ue: int, first_step: int, steps: int, lr: LrFn,
                    state: dict[str, torch.Tensor]) -> torch.Tensor:
        """SGD (``local_sgd``), or Adam (beta 0.9, 0.999, eps 1e-8) whose moments ``state["adam_m"]``,
        ``["adam_v"]`` and step count ``["adam_t"]`` stay on the UE across rounds."""
        if self.cfg.optimizer == "sgd":
            return self.local_sgd(w, ue, first_step, steps, lr)
        return self.local_adam(w.to(_DT), ue, first_step, steps, lr, state, _ADAM[:2], _ADAM[2])

    # -- evaluation ----------------------------------------------------------------------
    @torch.no_grad()
    def _measure(self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Loss (the local objective over the whole set: CE mean, soft Dice with set-wide sums),
        pixel accuracy and Dice (``dice.dice_dict``, counts over the whole set)."""
        w = w.detach().to(_DT)
        ce, soft, counts = 0.0, 0.0, 0.0
        for s in range(0, len(y), _EVAL_CHUNK):
            z, yy = self.logits(w, x[s: s + _EVAL_CHUNK]), y[s: s + _EVAL_CHUNK]
            ce += float(F.cross_entropy(z, yy, reduction="sum"))
            soft = soft + dice.soft_dice_sums(z, yy).double()
            counts = counts + dice.dice_counts(z.argmax(1), yy, z.shape[1])
        pixels = y.numel()
        loss = ce / pixels + self.cfg.dice_weight * float(dice.soft_dice_loss(soft))
        acc = float(counts[:, 0].sum()) / pixels
        return {"loss": loss, "accuracy": acc, **dice.dice_dict(counts)}

    def dice_scores(self, w: torch.Tensor, ue: int | None = None) -> dict[str, float]:
        """Per-class Dice of model ``w``: ``dice_lv``, ``dice_myo``, ``dice_rv`` and their mean ``dice``,
        on the pooled test set (``ue=None``) or on UE ``ue``'s own validation slices."""
        x, y = (self.x_test, self.y_test) if ue is None else self._val[ue]
        if len(y) == 0:
            raise ValueError("this workload has no validation slices; set workload.val_per_ue > 0")
        m = self._measure(w, x, y)
        return {k: v for k, v in m.items() if k.startswith("dice")}

    def evaluate(self, w: torch.Tensor) -> dict[str, float]:
        """``loss``, pixel ``accuracy``, ``dice`` (mean over LV, myocardium, RV) and ``dice_lv``,
        ``dice_myo``, ``dice_rv`` on the pooled test set; ``train_loss`` on every UE's slices."""
        out = self._measure(w, self.x_test, self.y_test)
        out["train_loss"] = self._measure(w, self._x_train, self._y_train)["loss"]
        return out

    def evaluate_validation(self, w: torch.Tensor, ue: int) -> dict[str, float]:
        """``val_loss``, ``val_accuracy``, ``val_dice``... of ``w`` on UE ``ue``'s validation slices."""
        x, y = self._val[ue]
        if len(y) == 0:
            raise ValueError("this workload has no validation slices; set workload.val_per_ue > 0")
        return {f"val_{k}": v for k, v in self._measure(w, x, y).items()}
