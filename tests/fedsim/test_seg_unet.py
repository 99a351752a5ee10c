"""The seg-unet U-Net and workload: parameter count by hand, the flat vector round trip, the
functional forward against the same network built from torch.nn modules, config validation, the
batched gradient against the per-UE loop, and the pooled test set against its documented keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from channels.rng import numpy_generator
from fedsim.workloads import build_workload, parse_workload_config
from fedsim.workloads.seg import phantom, unet

pytestmark = pytest.mark.usefixtures("one_thread")
ARCH = unet.UNetArch(filters=(8, 16, 32), kernels=(3, 5, 3), pooling=("avg", "max"))


def test_parameter_count_by_hand() -> None:
    # (c_in * c_out * k^2 + c_out) per conv: enc0 1->8->8 (k 3), enc1 8->16->16 (k 5), enc2 16->32->32 (k 3),
    # dec1 (32+16)->16->16 (k 5), dec0 (16+8)->8->8 (k 3), head 8->4 (k 1)
    hand = (1 * 8 * 9 + 8) + (8 * 8 * 9 + 8) + (8 * 16 * 25 + 16) + (16 * 16 * 25 + 16) + (16 * 32 * 9 + 32) \
        + (32 * 32 * 9 + 32) + (48 * 16 * 25 + 16) + (16 * 16 * 25 + 16) + (24 * 8 * 9 + 8) + (8 * 8 * 9 + 8) \
        + (8 * 4 + 4)
    assert unet.num_params(ARCH) == hand == 52_172


class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int) -> None:
        dt = torch.float64
        super().__init__(nn.Conv2d(cin, cout, k, padding=k // 2, dtype=dt), nn.ReLU(),
                         nn.Conv2d(cout, cout, k, padding=k // 2, dtype=dt), nn.ReLU())


def _reference(arch: unet.UNetArch, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The U-Net of unet.py's docstring from nn modules, loaded with the named parameters."""
    f, k = arch.filters, arch.kernels
    enc = [_Block(1 if i == 0 else f[i - 1], f[i], k[i]) for i in range(3)]
    dec = {i: _Block(f[i + 1] + f[i], f[i], k[i]) for i in (1, 0)}
    head = nn.Conv2d(f[0], 4, 1, dtype=torch.float64)
    with torch.no_grad():
        for i, b in enumerate(enc):
            for conv, name in ((b[0], "conv1"), (b[2], "conv2")):
                conv.weight.copy_(p[f"enc{i}.{name}.weight"])
                conv.bias.copy_(p[f"enc{i}.{name}.bias"])
        for i, b in dec.items():
            for conv, name in ((b[0], "conv1"), (b[2], "conv2")):
                conv.weight.copy_(p[f"dec{i}.{name}.weight"])
                conv.bias.copy_(p[f"dec{i}.{name}.bias"])
        head.weight.copy_(p["head.weight"])
        head.bias.copy_(p["head.bias"])
        pools = [nn.AvgPool2d(2), nn.MaxPool2d(2)]
        s0 = enc[0](x)
        s1 = enc[1](pools[0](s0))
        h = enc[2](pools[1](s1))
        up = nn.Upsample(scale_factor=2, mode="nearest")
        h = dec[1](torch.cat([up(h), s1], 1))
        h = dec[0](torch.cat([up(h), s0], 1))
        return head(h)


def test_flat_vector_round_trip_and_forward_against_nn_modules() -> None:
    g = torch.Generator().manual_seed(0)
    w = unet.init_flat(ARCH, g, torch.float64)
    w = w + 0.1 * torch.randn(w.shape, generator=g, dtype=torch.float64)  # nonzero biases too
    p = unet.unflatten(ARCH, w)
    assert [(n, tuple(t.shape)) for n, t in p.items()] == unet.layout(ARCH)
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in p.values()]), w, rtol=0, atol=0)
    assert all(t.data_ptr() >= w.data_ptr() for t in p.values())  # views into w, no copies
    w2 = w.clone()
    unet.unflatten(ARCH, w2)["head.bias"].fill_(7.0)
    assert (w2[-4:] == 7.0).all()  # the head's bias is the vector's tail
    x = torch.rand(3, 1, 16, 16, generator=g, dtype=torch.float64)
    torch.testing.assert_close(unet.forward(ARCH, p, x), _reference(ARCH, p, x))


@pytest.mark.parametrize("bad", [
    {"pooling": ["max"]},  # three levels need two poolings
    {"kernels": [3, 4, 3]},  # even kernel
    {"kernels": [3, 3]},  # wrong length
    {"filters": []},
    {"filters": [8, 0, 16]},
    {"size": 36, "filters": [4, 8, 16, 32]},  # 36 is not divisible by 8
    {"pooling": "min"},
    {"gamma_range": [2.0, 1.0]},
])
def test_bad_unet_keys_are_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        parse_workload_config({"name": "seg-unet", **bad})


def test_scalar_keys_broadcast_to_every_level() -> None:
    a = parse_workload_config({"name": "seg-unet", "filters": [4, 8, 16], "kernels": 5, "pooling": "avg"}).arch()
    b = parse_workload_config({"name": "seg-unet", "filters": [4, 8, 16], "kernels": [5, 5, 5],
                               "pooling": ["avg", "avg"]}).arch()
    assert a == b == unet.UNetArch((4, 8, 16), (5, 5, 5), ("avg", "avg"))


def _tiny(**kw) -> dict:
    return {"name": "seg-unet", "num_ues": 3, "slices_per_ue": 8, "val_per_ue": 4, "test_per_site": 4,
            "filters": [4, 8], "batch_size": 4, **kw}


def test_batched_gradient_equals_the_per_ue_loop_and_data_are_keyed_by_seed() -> None:
    wl = build_workload(parse_workload_config(_tiny()), seed=5)
    w = wl.init_params()
    ws = torch.stack([w, w * 0.5, w * 1.5])
    many = wl.stochastic_grad_many(ws, [2, 0, 1], step=7)
    loop = torch.stack([wl.stochastic_grad(ws[0], 2, 7), wl.stochastic_grad(ws[1], 0, 7),
                        wl.stochastic_grad(ws[2], 1, 7)])
    torch.testing.assert_close(many, loop, rtol=1e-4, atol=1e-6)
    again = build_workload(parse_workload_config(_tiny(num_ues=4)), seed=5)  # one more UE: sites 0-2 unchanged
    torch.testing.assert_close(again.ue_data(1)[0], wl.ue_data(1)[0], rtol=0, atol=0)
    other = build_workload(parse_workload_config(_tiny()), seed=6)
    assert not torch.equal(other.ue_data(1)[0], wl.ue_data(1)[0])


@pytest.mark.parametrize("heldout", [0, 2])
def test_pooled_test_set_comes_from_the_training_sites_or_from_heldout_sites(heldout: int) -> None:
    cfg = parse_workload_config(_tiny(heldout_sites=heldout, size=16))
    wl = build_workload(cfg, seed=8)
    sites = range(3, 3 + heldout) if heldout else range(3)
    assert len(wl.sites) == 3 + heldout and len(wl.y_test) == len(sites) * cfg.test_per_site
    for i, s in enumerate(sites):  # regenerated from the documented key (seed, "data", 2, site)
        x, y, _ = phantom.site_slices(wl.sites[s], cfg.test_per_site, 16, cfg.rv_missing,
                                      numpy_generator(8, "data", 2, s))
        rows = slice(i * cfg.test_per_site, (i + 1) * cfg.test_per_site)
        np.testing.assert_array_equal(wl.x_test[rows, 0].numpy(), x)
        np.testing.assert_array_equal(wl.y_test[rows].numpy(), y)
