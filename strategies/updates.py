"""The update rules UEs and receivers apply, as pure tensor functions: local SGD, what a UE
transmits, how an estimate of the aggregate updates a model, and the channel call with a
noise factor."""

from __future__ import annotations

from collections.abc import Callable

import torch

from channels import Channel, ChannelResult
from strategies.base import GradFn, LrFn, NoiseFactor, TrainFn

TRANSMITS = ("gradient", "update", "model")


def local_sgd(w: torch.Tensor, grad: GradFn, first_step: int, steps: int, lr: LrFn) -> torch.Tensor:
    """w <- w - eta_s g(w, s) for s = first_step .. first_step + steps - 1. Returns a copy."""
    w = w.clone()
    for s in range(first_step, first_step + steps):
        w.sub_(grad(w, s), alpha=lr(s))
    return w


def ue_transmit(w: torch.Tensor, grad: GradFn, first_step: int, steps: int, lr: LrFn, transmit: str,
                train: TrainFn | None = None) -> torch.Tensor:
    """The vector v_n a UE puts on the air, ``[d]``: its gradient at ``w``, its model update after
    K local steps, or its model. ``train`` replaces plain local SGD (workloads with their own
    local training)."""
    if transmit == "gradient":
        return grad(w, first_step)
    x = train(w, first_step, steps) if train is not None else local_sgd(w, grad, first_step, steps, lr)
    return x - w if transmit == "update" else x


def ue_transmit_many(ws: torch.Tensor, grad_many: Callable[[torch.Tensor, int], torch.Tensor],
                     train_many: Callable[[torch.Tensor, int, int], torch.Tensor], first_step: int, steps: int,
                     transmit: str) -> torch.Tensor:
    """:func:`ue_transmit` for the rows of ``ws [M, d]`` at once: ``grad_many(ws, s)`` gives every
    row's gradient, ``train_many(ws, first, steps)`` every row's model after its local steps."""
    if transmit == "gradient":
        return grad_many(ws, first_step)
    x = train_many(ws, first_step, steps)
    return x - ws if transmit == "update" else x


def apply_estimate(w: torch.Tensor, v_hat: torch.Tensor, transmit: str, eta: float) -> torch.Tensor:
    """Receiver-side update with the estimate v_hat of sum_n q_n v_n."""
    if transmit == "gradient":
        return w - eta * v_hat
    if transmit == "update":
        return w + v_hat
    return v_hat.clone()


def stack_rows(rows: dict[int, torch.Tensor], num_ues: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, d]`` matrix on ``like``'s device with the given rows (zeros elsewhere), and the CPU bool
    mask of present rows."""
    V = torch.zeros(num_ues, like.numel(), dtype=like.dtype, device=like.device)
    mask = torch.zeros(num_ues, dtype=torch.bool)
    if rows:
        idx = torch.tensor(sorted(rows))
        V[idx] = torch.stack([rows[i] for i in sorted(rows)]).to(like.device)
        mask[idx] = True
    return V, mask


def transmit_scaled(channel: Channel, V: torch.Tensor, q: torch.Tensor, seed: int, round: int,
                    available: torch.Tensor, factor: float) -> ChannelResult:
    """Run the channel with power scaling rho_t grown by 1/factor^2: UEs send V/factor and the
    receiver rescales by factor, so the signal is unchanged and the noise is scaled by factor."""
    if factor == 1.0:
        return channel.transmit(V, q, seed=seed, round=round, available=available)
    res = channel.transmit(V / factor, q, seed=seed, round=round, available=available)
    res.estimate = res.estimate * factor
    res.noise_scale *= factor
    res.noise_scale_common *= factor
    res.noise_scale_per_ue *= factor
    return res


def noise_factor_of(factor: NoiseFactor | None, server_round: int) -> float:
    return factor(server_round) if factor is not None else 1.0


def to_update_units(estimate: torch.Tensor, transmit: str, eta_of_block: float) -> torch.Tensor:
    """An estimate of sum q g (gradient) becomes the update -eta g; updates pass through."""
    return -eta_of_block * estimate if transmit == "gradient" else estimate
