"""DASH's aggregated kernel and its Fourier-domain evaluation (Shen et al., NeurIPS 2022), pure torch, 1-D and 2-D.

A searched conv is the mixture ``Σ_{k,d} c_{k,d} · conv(x, w_{k,d}, dilation d)`` over kernel sizes ×
dilations. Convolution is linear in the kernel, so the mixture equals one conv with the aggregated kernel

    w̄ = Σ_{k,d} c_{k,d} · centerpad_S(dil_d(w_{k,d})),   S = max_{k,d} d(k−1)+1,

and that conv is evaluated as a product in the frequency domain (``torch.fft.rfftn``): its cost is
O(n log n) per channel pair whatever S is, against O(|K||D|·n·S) for the explicit mixture. Gradients
reach both the candidate weights and the coefficients c (``∂L/∂c_{k,d} = ⟨∂L/∂w̄, centerpad(dil_d(w_{k,d}))⟩``).

Layouts follow ``torch.nn.functional.conv{1,2}d``: inputs ``[B, C_in, *N]``, kernels
``[C_out, C_in / groups, *k]``, odd kernel sizes, stride 1, 'same' zero padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

_CONV = {1: F.conv1d, 2: F.conv2d}


def receptive_field(k: int, d: int) -> int:
    """Size ``d(k−1)+1`` of a k-tap kernel at dilation d (per spatial dim)."""
    return d * (k - 1) + 1


def dilate(w: torch.Tensor, d: int, dims: int | None = None) -> torch.Tensor:
    """``w ⊗ e_1^{(d)}`` along each of the last ``dims`` axes (default: all but the first two, the
    conv-weight layout): every tap followed by d−1 zeros, the trailing d−1 zeros trimmed, so an
    axis of size k becomes d(k−1)+1. Differentiable; ``d = 1`` returns ``w`` itself."""
    dims = w.dim() - 2 if dims is None else dims
    if d < 1:
        raise ValueError(f"dilation must be >= 1, got {d}")
    if d == 1:
        return w
    one_hot = torch.zeros(d, dtype=w.dtype, device=w.device)
    one_hot[0] = 1.0
    for ax in range(w.dim() - dims, w.dim()):
        k = w.shape[ax]
        v = w.movedim(ax, -1)
        v = (v.unsqueeze(-1) * one_hot).flatten(-2)[..., : receptive_field(k, d)]  # Kronecker, trimmed
        w = v.movedim(-1, ax)
    return w


def center_pad(w: torch.Tensor, size: int, dims: int | None = None) -> torch.Tensor:
    """Zero-pad each of the last ``dims`` axes (default: all but the first two) symmetrically to ``size``."""
    dims = w.dim() - 2 if dims is None else dims
    pad: list[int] = []
    for n in reversed(w.shape[w.dim() - dims :]):  # F.pad lists the last axis first
        if size < n or (size - n) % 2:
            raise ValueError(f"cannot center-pad an axis of size {n} to {size}")
        pad += [(size - n) // 2] * 2
    return F.pad(w, pad)


def aggregate_kernel(weights: Sequence[torch.Tensor], c: torch.Tensor, dilations: Sequence[int],
                     size: int | None = None) -> torch.Tensor:
    """``w̄ = Σ_j c_j · centerpad_S(dil_{d_j}(weights[j]))``: one ``[C_out, C_in/g, S, ...]`` kernel.

    ``weights[j]`` is candidate j's conv weight, ``dilations[j]`` its dilation, ``c [n]`` the mixture
    coefficients; ``S`` defaults to the largest receptive field of the candidates."""
    if not len(weights) == len(dilations) == c.numel():
        raise ValueError(f"{len(weights)} kernels, {len(dilations)} dilations, {c.numel()} coefficients")
    if size is None:
        size = max(receptive_field(w.shape[-1], d) for w, d in zip(weights, dilations, strict=True))
    stacked = torch.stack([center_pad(dilate(w, d), size) for w, d in zip(weights, dilations, strict=True)])
    return torch.tensordot(c.to(stacked.dtype), stacked, dims=1)


def fast_length(n: int) -> int:
    """The smallest m >= n whose only prime factors are 2, 3 and 5 (fast FFT sizes)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def fourier_conv(x: torch.Tensor, kernel: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """'Same'-padded cross-correlation of ``x [B, C_in, *N]`` with ``kernel [C_out, C_in/groups, *S]``
    (odd S) — what ``F.conv{1,2}d(x, kernel, padding=S // 2, groups=groups)`` computes — through the FFT.

    Both are zero-padded to L >= N + S//2 per axis and the kernel is rolled so that its centre tap sits at
    index 0 (tap j at (j − S//2) mod L); then ``irfft(X · conj(W))[n] = Σ_j x[n + j − S//2] w[j]``, the
    circular cross-correlation, which has no wrap-around for n < N: crop to N. The sum over input channels
    is one einsum in the frequency domain. (Rolling the small kernel, not the output, saves a copy.)"""
    dims = x.dim() - 2
    if kernel.dim() != x.dim():
        raise ValueError(f"input {tuple(x.shape)} and kernel {tuple(kernel.shape)} differ in rank")
    n, s = list(x.shape[2:]), list(kernel.shape[2:])
    if any(k % 2 == 0 for k in s):
        raise ValueError(f"'same' Fourier conv needs odd kernel sizes, got {s}")
    half = [k // 2 for k in s]
    lengths = [fast_length(a + h) for a, h in zip(n, half, strict=True)]
    axes = tuple(range(2, 2 + dims))
    b, c_in, c_out = x.shape[0], x.shape[1], kernel.shape[0]
    if c_in % groups or c_out % groups or kernel.shape[1] * groups != c_in:
        raise ValueError(f"channels {c_in} -> {c_out} do not fit groups={groups} and kernel {tuple(kernel.shape)}")
    X = torch.fft.rfftn(x, s=lengths, dim=axes)
    # pad (or, if S > L, crop: taps past L never meet the input) to L, then centre tap -> index 0
    k_pad = F.pad(kernel, [p for a, k in zip(reversed(lengths), reversed(s), strict=True) for p in (0, a - k)])
    W = torch.fft.rfftn(torch.roll(k_pad, shifts=[-h for h in half], dims=axes), dim=axes)
    freq = X.shape[2:]
    X = X.reshape(b, groups, c_in // groups, -1)
    W = W.reshape(groups, c_out // groups, c_in // groups, -1)
    Y = torch.einsum("bgif,goif->bgof", X, W.conj()).reshape(b, c_out, *freq)
    y = torch.fft.irfftn(Y, s=lengths, dim=axes)
    return y[(..., *(slice(0, a) for a in n))]


def direct_conv(x: torch.Tensor, kernel: torch.Tensor, dilation: int = 1, groups: int = 1) -> torch.Tensor:
    """``F.conv{1,2}d`` with 'same' padding d(k−1)/2 (odd k), stride 1."""
    pad = dilation * (kernel.shape[-1] - 1) // 2
    return _CONV[x.dim() - 2](x, kernel, padding=pad, dilation=dilation, groups=groups)


def explicit_mixture(x: torch.Tensor, weights: Sequence[torch.Tensor], c: torch.Tensor, dilations: Sequence[int],
                     groups: int = 1) -> torch.Tensor:
    """The naive mixture ``Σ_j c_j · conv(x, weights[j], dilation d_j)`` ('same' padding): one conv per
    candidate. Equal to ``fourier_conv(x, aggregate_kernel(weights, c, dilations))`` up to rounding."""
    out = [cj * direct_conv(x, w, d, groups) for cj, w, d in zip(c.to(x.dtype), weights, dilations, strict=True)]
    return torch.stack(out).sum(0)
