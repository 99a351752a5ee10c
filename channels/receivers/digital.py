"""The digital baseline: UEs take turns (TDMA) and the receiver averages exactly, optionally after
unbiased stochastic quantisation (``channel.quant_bits``)."""

from __future__ import annotations

import torch

from channels.quantize import stochastic_quantize
from channels.receivers.base import Parts, Receiver, payload_norm_sq
from channels.result import ChannelResult, empty_result
from channels.rng import torch_generator


class DigitalReceiver(Receiver):
    """Error-free ``Σ q_n v_n`` over the available UEs (quantisation noise only, stream
    "quantization"), ``[d]``."""

    analog = False

    def ignored(self) -> set[str]:
        """Everything analog: only quantisation, the link rate and the propagation matter."""
        c = self.config
        keep = {"quant_bits", "bits", "rate", "propagation"}
        return set(type(c).model_fields) - keep

    def receive(self, parts: Parts, V: torch.Tensor, q: torch.Tensor, available: torch.Tensor,
                seed: int, round: int) -> ChannelResult:
        qa = torch.where(available, q, torch.zeros_like(q))
        n_act = int(available.sum())
        if n_act == 0 or float(qa.sum()) <= 0.0:
            return empty_result(V, available.clone(), 0, self.per_ue)
        w = (qa / qa.sum()).to(V.device)
        exact = w @ V
        bits = self.config.quant_bits
        if bits is None:
            estimate, noise = exact, torch.zeros_like(exact)
        else:
            estimate = w @ stochastic_quantize(V, bits, torch_generator(seed, "quantization", round))
            noise = estimate - exact
        u_norm_sq = payload_norm_sq(V) * (n_act * w) ** 2
        return ChannelResult(estimate=estimate, active=available.clone(), dropouts=0, noise_scale=0.0,
                             tx_energy=float(u_norm_sq.sum()), noise=noise, rho=1.0, gain=float(n_act),
                             n_active=n_act)
