"""nas-dash (DASH: Shen et al., NeurIPS 2022): the Fourier-domain (k, d) mixture and the federated DASH workload."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from fedsim.config import apply_overrides, validate
from fedsim.results.rundir import load_run
from fedsim.runner import run_experiment
from fedsim.workloads import build_workload, parse_workload_config
from fedsim.workloads.nas.dash import DashConfig
from fedsim.workloads.nas.fourier import aggregate_kernel, center_pad, dilate, fast_length, fourier_conv

CONV = {1: F.conv1d, 2: F.conv2d}


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _lr(s: int) -> float:
    return 0.1


# ----------------------------------------------------------------------------- kernels


def test_dilate_inserts_zeros_and_trims() -> None:
    w = torch.tensor([1.0, 2.0, 3.0])
    assert torch.equal(dilate(w, 3, dims=1), torch.tensor([1.0, 0, 0, 2, 0, 0, 3]))
    assert dilate(w, 1, dims=1) is w
    k = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    d = dilate(k, 2)
    assert d.shape == (1, 1, 5, 5)
    assert torch.equal(d[0, 0, ::2, ::2], k[0, 0])
    mask = torch.ones(5, 5, dtype=torch.bool)
    mask[::2, ::2] = False
    assert float(d[0, 0][mask].abs().sum()) == 0.0
    assert dilate(torch.ones(4, 2, 7), 4).shape == (4, 2, 25)  # d(k-1)+1, leading axes untouched


def test_center_pad_centres_and_rejects_parity() -> None:
    w = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    p = center_pad(w, 7)
    assert p.shape == (1, 1, 7, 7) and torch.equal(p[0, 0, 2:5, 2:5], w[0, 0])
    assert float(p.sum()) == float(w.sum())
    with pytest.raises(ValueError):
        center_pad(w, 6)
    assert all(fast_length(n) >= n for n in range(1, 200)) and fast_length(97) == 100


def _explicit(x, weights, c, dils, groups):
    """Σ_j c_j F.conv(x, w_j, dilation=d_j, padding=d_j(k_j−1)/2): written out independently of fourier.py."""
    conv = CONV[x.dim() - 2]
    out = 0
    for cj, w, d in zip(c, weights, dils, strict=True):
        out = out + cj * conv(x, w, dilation=d, padding=d * (w.shape[-1] - 1) // 2, groups=groups)
    return out


@pytest.mark.parametrize("dims,size", [(1, (61,)), (2, (13, 10)), (2, (5, 5))])
@pytest.mark.parametrize("groups", [1, 4])
def test_fourier_mixture_equals_explicit_sum_with_gradients(dims, size, groups) -> None:
    g = _gen(1)
    c_in, c_out = 4, 8
    pairs = [(k, d) for k in (3, 5, 7) for d in (1, 2, 3)]  # S = 19 > 5: the kernel outgrows the input
    x = torch.randn(3, c_in, *size, generator=g, dtype=torch.float64)
    ws = [torch.randn(c_out, c_in // groups, *(k,) * dims, generator=g, dtype=torch.float64).requires_grad_()
          for k, _ in pairs]
    c = torch.softmax(torch.randn(len(pairs), generator=g, dtype=torch.float64), 0).requires_grad_()
    dils = [d for _, d in pairs]
    kern = aggregate_kernel(ws, c, dils)
    assert kern.shape == (c_out, c_in // groups, *(19,) * dims)
    y_f = fourier_conv(x, kern, groups)
    y_e = _explicit(x, ws, c, dils, groups)
    assert y_f.shape == y_e.shape == (3, c_out, *size)
    torch.testing.assert_close(y_f, y_e, rtol=1e-10, atol=1e-10)
    up = torch.randn(y_e.shape, generator=g, dtype=torch.float64)
    grads_f = torch.autograd.grad((y_f * up).sum(), [c, *ws])
    grads_e = torch.autograd.grad((y_e * up).sum(), [c, *ws])
    for a, b in zip(grads_f, grads_e, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    assert float(grads_f[0].abs().min()) > 0  # every coefficient gets a gradient


@pytest.mark.parametrize("dims", [1, 2])
def test_fourier_conv_matches_same_padded_conv_in_float32(dims) -> None:
    g = _gen(2)
    x = torch.randn(2, 3, *(28,) * dims, generator=g)
    k = torch.randn(5, 3, *(25,) * dims, generator=g) / 25
    torch.testing.assert_close(fourier_conv(x, k), CONV[dims](x, k, padding=12), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError):
        fourier_conv(x, torch.randn(5, 3, *(4,) * dims))


# ----------------------------------------------------------------------------- workload


def _wl(**kw):
    base = {"dataset": "digits", "channels": (4, 8), "total_steps": 20}
    return build_workload(DashConfig(**{**base, **kw}), seed=0)


def test_search_step_moves_weights_and_alpha_deterministically() -> None:
    wl = _wl()
    w0 = wl.init_params()
    assert wl.dim == wl.theta_dim + wl.alpha_dim and wl.alpha_dim == 2 * 9 and wl.custom_local_train
    alpha0 = wl.split(w0)[1]
    assert 0 < float(alpha0.abs().max()) < 1e-2  # 1e-3 N(0, 1)
    s1: dict = {}
    w1 = wl.local_train(w0, 0, 0, 3, _lr, s1)
    th0, a0 = wl.split(w0)
    th1, a1 = wl.split(w1)
    assert not torch.equal(th0, th1) and not torch.equal(a0, a1)
    assert float((a1 - a0).abs().max()) < 3 * 0.05 * (1 + 0.9) ** 2 / 100 + 1e-3  # normalised α steps
    w1b = wl.local_train(w0, 0, 0, 3, _lr, {})
    assert torch.equal(w1, w1b)
    assert not torch.equal(w1, wl.local_train(w0, 1, 0, 3, _lr, {}))  # other UE: other batch and noise
    assert s1["dash.alpha_momentum"].shape == (wl.alpha_dim,)
    assert not torch.equal(wl.local_train(w1, 0, 3, 1, _lr, s1), wl.local_train(w1, 0, 3, 1, _lr, {}))


def test_arch_grad_normalises_per_layer_and_pushes_to_small_fields() -> None:
    wl = _wl(grad_scale=10.0)
    g = torch.randn(wl.alpha_dim, generator=_gen(3))
    out = (wl.arch_grad(g) - 1e-5 * wl._rf.repeat(2)).view(2, 9)
    torch.testing.assert_close(out.norm(dim=1), torch.full((2,), 0.1))
    bias = wl.arch_grad(torch.zeros(wl.alpha_dim)).view(2, 9)[0]
    assert int(bias.argmax()) == wl.space.pairs.index((7, 4)) and int(bias.argmin()) == wl.space.pairs.index((3, 1))


def test_fourier_and_explicit_evaluation_agree() -> None:
    wf, we = _wl(), _wl(evaluation="explicit")
    w = wf.local_train(wf.init_params(), 0, 0, 2, _lr, {})
    ef, ee = wf.evaluate(w), we.evaluate(w)
    assert abs(ef["loss"] - ee["loss"]) < 1e-5 and abs(ef["accuracy"] - ee["accuracy"]) < 2e-3
    torch.testing.assert_close(wf.local_train(w, 1, 2, 2, _lr, {}), we.local_train(w, 1, 2, 2, _lr, {}),
                               rtol=1e-4, atol=1e-5)


def test_random_strategy_keeps_alpha() -> None:
    wl = _wl(search_strategy="random")
    w0 = wl.init_params()
    w1 = wl.local_train(w0, 0, 0, 3, _lr, {})
    assert torch.equal(wl.split(w0)[1], wl.split(w1)[1]) and not torch.equal(w0, w1)


def test_derive_result_and_retrain_config() -> None:
    wl = _wl(dims=1, permute=True)
    w = wl.init_params()
    alpha = wl.split(w)[1].view(2, 9)
    alpha[0, wl.space.pairs.index((7, 3))] = 5.0  # force the choice
    alpha[1, wl.space.pairs.index((3, 1))] = 5.0
    res = wl.search_result(w)
    assert res["architecture"] == {"conv0": {"kernel": 7, "dilation": 3}, "conv1": {"kernel": 3, "dilation": 1}}
    assert json.loads(json.dumps(res)) == res
    assert set(res["resources"]) == {"params", "flops", "latency_ms"} and res["resources"]["flops"] > 0
    ev = wl.evaluate(w)
    assert ev["conv0_kernel"] == 7.0 and ev["conv0_dilation"] == 3.0 and ev["arch_params"] == res["resources"]["params"]
    assert 0 < ev["alpha_entropy"] < 2.2
    rc = wl.retrain_config(res["architecture"])
    assert "total_steps" not in rc and rc["retrain_rounds"] == 0 and rc["arch"] == res["architecture"]
    assert rc["permute"] and rc["dims"] == 1 and rc["channels"] == [4, 8]
    child = build_workload(DashConfig(**rc), seed=0)
    assert child.dim == res["resources"]["params"] and child.alpha_dim == 0 and not child.custom_local_train


def test_fixed_architecture_trains_with_plain_sgd() -> None:
    wl = _wl(arch={"conv0": {"kernel": 5, "dilation": 2}, "conv1": {"kernel": 3, "dilation": 1}})
    w0 = wl.init_params()
    w1 = wl.local_train(w0, 0, 0, 30, _lr, {})
    torch.testing.assert_close(w1, wl.local_sgd(w0, 0, 0, 30, _lr))
    before, after = wl.evaluate(w0), wl.evaluate(w1)
    assert after["train_loss"] < before["train_loss"] - 0.15 and after["accuracy"] > before["accuracy"] + 0.1
    assert wl.search_result(w1)["architecture"] == wl.cfg.arch


@pytest.mark.parametrize("arch,msg", [
    ({"conv0": {"kernel": 3, "dilation": 1}, "conv9": {"kernel": 3, "dilation": 1}}, "conv9"),
    ({"conv0": {"kernel": 4, "dilation": 1}, "conv1": {"kernel": 3, "dilation": 1}}, "[3, 5, 7]"),
    ({"conv0": {"kernel": 3, "dilation": 3}, "conv1": {"kernel": 3, "dilation": 1}}, "[1, 2, 4]"),
    ({"conv0": {"kernel": 3, "dilation": 1}}, "conv1"),
])
def test_arch_is_validated(arch, msg) -> None:
    with pytest.raises(ValueError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        DashConfig(dataset="digits", channels=(4, 8), arch=arch)


def test_config_rejects_bad_sets() -> None:
    for kw in ({"kernels": (3, 4)}, {"dilations": (0, 1)}, {"permute": True}, {"channels": (4, 4, 4, 4)}):
        with pytest.raises(ValueError):
            build_workload(DashConfig(dataset="digits", **kw), seed=0)


def test_mnist_1d_defaults_build_and_agree() -> None:
    wl = build_workload(DashConfig(dims=1), seed=0)
    assert wl.space.pairs[-1] == (11, 7) and wl.x_test.shape[1:] == (1, 784)
    w = wl.init_params()
    theta, alpha = wl.split(w)
    coeffs = [torch.softmax(a, 0) for a in wl.space.split(alpha)]
    x = wl.x_test[:64]
    with torch.no_grad():
        torch.testing.assert_close(wl.supernet_logits(theta, x, coeffs, evaluation="fourier"),
                                   wl.supernet_logits(theta, x, coeffs, evaluation="explicit"), rtol=1e-4, atol=1e-5)


def _params_2d(arch: dict, channels=(4, 8), side: int = 8) -> int:
    """dash.py's 2-D child by hand: conv l has c_l·c_{l−1}·k_l² weights + c_l biases and a 2x2 max-pool;
    the head maps the flattened c_L·(side / 2^L)² features to 10 classes (+ 10 biases)."""
    total, c_in = 0, 1
    for layer, c in enumerate(channels):
        total += c * c_in * arch[f"conv{layer}"]["kernel"] ** 2 + c
        c_in, side = c, side // 2
    return total + c_in * side * side * 10 + 10


def _rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _search(tmp_path, *extra: str):
    cfg = validate(apply_overrides({}, [
        "engine.name='inline'", "output.plot=false", f"output.dir='{tmp_path}'", "checkpoint.every=0", "rounds=2",
        "workload={name='nas-dash', dataset='digits', channels=[4, 8], num_ues=4, retrain_rounds=1}",
        "train.local_steps=2", *extra]))
    run_dir = run_experiment(cfg, quiet=True)
    return cfg, run_dir, json.loads((run_dir / "summary.json").read_text())


def test_end_to_end_search_and_retrain(tmp_path) -> None:
    cfg, run_dir, summary = _search(tmp_path, "strategy.name='serverfree-relay'", "strategy.transmit='update'")
    rows = _rows(run_dir)
    assert [r["round"] for r in rows] == [0, 1, 2]
    wl = build_workload(cfg.workload, cfg.seed)
    assert rows[0]["loss"] == pytest.approx(wl.evaluate(wl.init_params())["loss"], rel=1e-6)  # round 0 = init
    for r in rows[1:]:  # softmax over the 9 (k, d) pairs of each layer: entropy ≤ ln 9
        assert 0.0 < r["alpha_entropy"] <= math.log(9) + 1e-6
    found = json.loads((run_dir / "architecture.json").read_text())
    arch = found["architecture"]
    assert set(arch) == {"conv0", "conv1"}
    assert all(c["kernel"] in (3, 5, 7) and c["dilation"] in (1, 2, 4) for c in arch.values())
    assert found["resources"]["params"] == _params_2d(arch)
    assert summary["status"] == "completed"
    re = summary["search"]["retrain"]
    assert re["status"] == "completed" and re["rounds"] == 1
    retrain = load_run(run_dir / re["run_dir"])
    assert retrain.metrics[-1]["accuracy"] == re["final"]["accuracy"]
    child = build_workload(parse_workload_config(retrain.config["workload"]), cfg.seed)
    assert child.dim == _params_2d(arch)  # the retrained network has exactly the found child's weights


def test_a_budget_admitting_one_architecture_returns_exactly_it(tmp_path) -> None:
    """K = (3, 5), D = (1,): 4 architectures; the smallest, k = 3 in both layers, has by hand
    4·9 + 4 + 8·4·9 + 8 + 8·4·10 + 10 = 666 weights, and a budget of 666 admits only it."""
    arch3 = {"conv0": {"kernel": 3, "dilation": 1}, "conv1": {"kernel": 3, "dilation": 1}}
    assert _params_2d(arch3) == 666
    _, run_dir, summary = _search(tmp_path, "workload.kernels=[3, 5]", "workload.dilations=[1]",
                                  "workload.max_params=666")
    found = json.loads((run_dir / "architecture.json").read_text())
    assert found["architecture"] == arch3 and found["resources"]["params"] == 666
    assert summary["search"]["retrain"]["status"] == "completed"
