"""The pieces of the ``moe-lm`` model as pure functions: its parameter layout, the Switch and
StableMoE balance losses, the distillation loss, the sigmoid gate, capacity dropping and the expert
feed-forward (see :mod:`fedsim.workloads.moe` for the model they make up)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def stablemoe_balance_loss(s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """L_bal = (1/n) Σ_i ((|A_i| - n̄)/n̄) Σ_{t∈A_i} σ(s_{t,i}) for scores ``s [n, N]``, experts ``a [n]``.

    The load ratio is a constant (counts carry no gradient); gradients reach s only at (t, a_t).
    """
    n, N = s.shape
    counts = torch.bincount(a, minlength=N).to(s.dtype)
    nbar = n / N
    ratio = (counts - nbar) / nbar
    return (ratio[a] * torch.sigmoid(s.gather(1, a[:, None]).squeeze(1))).sum() / n


def switch_balance_loss(probs: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Switch Transformer's N Σ_i f_i P_i for router probabilities ``probs [n, N]`` and ``a [n]``."""
    n, N = probs.shape
    f = torch.bincount(a, minlength=N).to(probs.dtype) / n
    return N * (f * probs.mean(0)).sum()


def distill_loss(s_hat: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """L_dis = (1/n) Σ_t -log softmax(ŝ_t)[a_t] for distilled scores ``s_hat [n, N]``, targets ``a [n]``."""
    return F.cross_entropy(s_hat, a)


def sigmoid_gate(s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """StableMoE's gate σ(s_{t,a_t}), ``[n]``."""
    return torch.sigmoid(s.gather(1, a[:, None]).squeeze(1))


def capacity_keep(a: torch.Tensor, num_experts: int, capacity_factor: float) -> torch.Tensor:
    """``[n]`` 0/1 mask: a token is kept if fewer than ceil(cf n / N) earlier tokens chose its expert."""
    if capacity_factor <= 0:
        return torch.ones(a.shape, dtype=torch.bool)
    cap = math.ceil(capacity_factor * a.numel() / num_experts)
    onehot = F.one_hot(a, num_experts)
    pos = (onehot.cumsum(0) * onehot).sum(1)  # 1-based rank of the token within its expert
    return pos <= cap


def expert_ffn(z: torch.Tensor, a: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
               b2: torch.Tensor) -> torch.Tensor:
    """FFN_{a_t}(z_t) for ``z [n, d]``, ``a [n]``, experts ``w1 [N, d, f]``, ``b1 [N, f]``, ``w2 [N, f, d]``,
    ``b2 [N, d]``. Gathers each token's expert weights (small N, d: simpler than dispatch)."""
    hid = F.gelu(torch.einsum("nd,ndf->nf", z, w1[a]) + b1[a])
    return torch.einsum("nf,nfd->nd", hid, w2[a]) + b2[a]


def coefficient_of_variation(counts: torch.Tensor) -> float:
    """std/mean (population std) of load ``counts [N]``."""
    c = counts.to(torch.float64)
    return float(c.std(unbiased=False) / c.mean()) if float(c.mean()) > 0 else 0.0


# ------------------------------------------------------------------------------ workload


def param_spec(c: Any, V: int) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, init) of every parameter of the flat vector, in order, for config ``c``
    (a ``MoeLmConfig``) and vocabulary size ``V``."""
    d, N, f = c.d_model, c.num_experts, c.d_ff
    spec: list[tuple[str, tuple[int, ...], str]] = [
        ("tok_emb", (V, d), "normal"), ("pos_emb", (c.seq_len, d), "normal")]
    for i in range(c.num_layers):
        p = f"l{i}."
        spec += [(p + "ln1.w", (d,), "ones"), (p + "ln1.b", (d,), "zeros"),
                 (p + "qkv", (d, 3 * d), "normal"), (p + "qkv_b", (3 * d,), "zeros"),
                 (p + "proj", (d, d), "normal"), (p + "proj_b", (d,), "zeros"),
                 (p + "ln2.w", (d,), "ones"), (p + "ln2.b", (d,), "zeros")]
        if i in c.moe_layers:
            spec += [(p + "w1", (N, d, f), "normal"), (p + "b1", (N, f), "zeros"),
                     (p + "w2", (N, f, d), "zeros"), (p + "b2", (N, d), "zeros")]
            if c.router == "switch":
                spec.append((p + "router", (N, d), "normal"))
            else:
                spec += [(p + "centroids", (N, d), "orthogonal"),
                         (p + "dr.emb", (V, c.router_dim), "embedding"),
                         (p + "dr.centroids", (N, c.router_dim), "orthogonal")]
        else:
            spec += [(p + "ff1", (d, f), "normal"), (p + "ff1_b", (f,), "zeros"),
                     (p + "ff2", (f, d), "normal"), (p + "ff2_b", (d,), "zeros")]
    return spec + [("lnf.w", (d,), "ones"), ("lnf.b", (d,), "zeros"), ("head_b", (V,), "zeros")]


def routing_metrics(ce: float, routes: torch.Tensor, owner: torch.Tensor, num_ues: int, num_experts: int,
                    tokens_per_seq: int) -> dict[str, float | list]:
    """Test metrics from the CE and the probe routes ``[n_probe, n_moe]``: perplexity, expert-load
    coefficient of variation (mean over MoE layers), probe-token loads by owning UE and their CV.
    ``owner [n_seq]`` is the UE each probe sequence came from."""
    N = num_experts
    loads = torch.stack([torch.bincount(routes[:, j], minlength=N) for j in range(routes.shape[1])])
    owner = owner.repeat_interleave(tokens_per_seq)
    ue_load = torch.zeros(num_ues, N, dtype=torch.int64)
    ue_load.index_put_((owner[:, None].expand_as(routes).reshape(-1), routes.reshape(-1)),
                       torch.ones(routes.numel(), dtype=torch.int64), accumulate=True)
    return {
        "loss": ce,
        "perplexity": math.exp(ce),
        "expert_load_cv": float(np.mean([coefficient_of_variation(lo) for lo in loads])),
        "ue_load_cv_mean": float(np.mean([coefficient_of_variation(lo) for lo in ue_load])),
        "ue_expert_load": ue_load.tolist(),
    }
