"""The ``latency-predictor`` workload: its flat-vector layout, its prediction against a forward pass
written out here (ReLU and tanh), its gradient against finite differences, the device embedding
staying in the UE's state (never in the vector), the held-out device's shots (one per FLOPs quartile
when it measures 4) and its final scale: the log fit's
offset zeroes the mean log residual, the ``mape`` scale beats every breakpoint of the shots' MAPE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsim.workloads import build_workload, parse_workload_config
from fedsim.workloads.latency.predictor import adapt_split
from fedsim.workloads.latency.space import NUM_ARCHS, decode, layer_features
from fedsim.workloads.latency.table import shipped_table

CFG = {"name": "latency-predictor", "num_ues": 3, "hidden": 8, "embed_dim": 3, "measurements": 20,
       "adapt_steps": 20}


@pytest.fixture(scope="module")
def wl():
    return build_workload(parse_workload_config(CFG), 0)


def test_layout_and_data(wl) -> None:
    h, e, f = 8, 3, wl.features.shape[-1]
    assert f == 10 and wl.dim == h * (f + e) + h + h * h + h + h + 1 + e + 1
    w = torch.arange(wl.dim, dtype=torch.float32)
    v = wl.views(w)
    assert list(v) == ["w1", "b1", "w2", "b2", "w3", "b3", "u", "b0"]
    assert torch.equal(torch.cat([t.reshape(-1) for t in v.values()]), w)  # views in order, no gaps
    assert v["w1"].shape == (h, f + e) and v["w1"][0, 1] == 1 and v["b0"].item() == wl.dim - 1
    table = shipped_table()
    for n in range(3):  # UE n holds its own profile's measurements of distinct architectures
        assert wl.ue_profile[n] == wl.train_profiles[n] and len(set(wl.ue_archs[n].tolist())) == 20
        assert torch.equal(wl.ue_ms[n], torch.as_tensor(table.row(wl.ue_profile[n])[wl.ue_archs[n].numpy()],
                                                        dtype=torch.float32))
    assert set(wl.adapt_archs.tolist()).isdisjoint(wl.test_archs.tolist())
    assert len(wl.adapt_archs) + len(wl.test_archs) == NUM_ARCHS


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_prediction_is_the_additive_forward_written_out(activation: str) -> None:
    wl = build_workload(parse_workload_config({**CFG, "activation": activation}), 0)
    act = {"relu": torch.relu, "tanh": torch.tanh}[activation]
    w, embed = wl.init_params(), torch.tensor([0.3, -0.2, 0.1])
    v = {k: t.double() for k, t in wl.views(w).items()}
    archs = torch.tensor([0, 5, 4095])
    got = wl.predict_log_ms(w, embed, archs).double()
    for a, g in zip(archs.tolist(), got, strict=True):
        total = float(torch.exp(embed.double() @ v["u"] + v["b0"]))
        for layer, (c, k) in enumerate(decode(a)[0]):
            c_in = 1 if layer == 0 else decode(a)[0][layer - 1][0]
            flops = 2 * 28 * 28 * c_in * c * k * k
            phi = [np.log2(c_in) / 5, np.log2(c) / 5, (np.log10(flops) - 6) / 2,
                   *[float(k == kk) for kk in (1, 3, 5, 7)], *[float(layer == i) for i in range(3)]]
            x = torch.tensor([*phi, *embed.tolist()], dtype=torch.float64)
            hid = act(act(v["w1"] @ x + v["b1"]) @ v["w2"].T + v["b2"])
            total += float(torch.exp(v["w3"] @ hid + v["b3"]))
        assert float(g) == pytest.approx(np.log(total), rel=1e-5)


def test_gradient_matches_finite_differences(wl) -> None:
    w = wl.init_params().double()
    wl64 = wl
    g = wl64.stochastic_grad(w.float(), 1, 0).double()
    embed = wl.initial_embedding(1)
    archs, ms = wl.ue_archs[1], wl.ue_ms[1]

    def loss(v: torch.Tensor) -> float:
        return float((wl.predict_log_ms(v.float(), embed, archs).double() - ms.double().log()).pow(2).mean())

    coords = torch.randperm(wl.dim, generator=torch.Generator().manual_seed(0))[:12]
    for i in coords.tolist():
        d = torch.zeros_like(w)
        d[i] = 1e-2
        fd = (loss(w + d) - loss(w - d)) / 2e-2
        assert float(g[i]) == pytest.approx(fd, rel=0.05, abs=2e-4)


def test_embedding_is_local_and_trained(wl) -> None:
    w = wl.init_params()
    state: dict[str, torch.Tensor] = {}
    w1 = wl.local_train(w, 0, 0, 3, lambda s: 0.05, state)
    assert w1.shape == (wl.dim,) and set(state) == {"latency.embed"} and state["latency.embed"].shape == (3,)
    assert not torch.equal(state["latency.embed"], wl.initial_embedding(0))
    # the shared step depends on the UE-local embedding: two UEs differ only through their data/embedding
    again = wl.local_train(w, 0, 0, 3, lambda s: 0.05, {})
    assert torch.equal(again, w1)  # deterministic for the same state
    other = wl.local_train(w, 0, 0, 3, lambda s: 0.05, {"latency.embed": torch.zeros(3)})
    assert not torch.equal(other, w1)
    ev = wl.evaluate(w1)
    assert set(ev) == {"loss", "kendall", "spearman", "mape"} and -1 <= ev["kendall"] <= 1


def test_adapted_scale_log_fit_and_mape_optimal() -> None:
    """Shared weights from a few FedAvg rounds; the held-out device adapts on its 10 shots twice."""
    log_wl = build_workload(parse_workload_config({**CFG, "adapt_scale": "log", "adapt_steps": 400}), 0)
    mape_wl = build_workload(parse_workload_config({**CFG, "adapt_scale": "mape", "adapt_steps": 400}), 0)
    w, states = log_wl.init_params(), [{} for _ in range(3)]
    for r in range(20):
        w = torch.stack([log_wl.local_train(w, n, 5 * r, 5, lambda s: 0.2, states[n]) for n in range(3)]).mean(0)
    archs, ms = log_wl.adapt_archs, log_wl.holdout_ms[log_wl.adapt_archs]
    e_log, c_log = log_wl.adapt_embedding(w, archs, ms)
    e_mape, c_mape = mape_wl.adapt_embedding(w, archs, ms)
    assert torch.equal(e_log, e_mape)  # the calibration moves the scale only
    with torch.no_grad():
        base = log_wl.predict_log_ms(w, e_log, archs).double()
    # log fit: d/dc mean (base + c - log ms)^2 = 0  <=>  the mean log residual is zero
    # (to within the jitter of Adam, whose steps at lr 0.05 do not shrink to zero near the optimum)
    assert float((base + c_log - ms.double().log()).mean()) == pytest.approx(0.0, abs=5e-3)
    # mape: the MAPE of the shots, piecewise linear in the scale, is no lower at any of its kinks
    pred, true = (base + c_mape).exp().numpy(), ms.double().numpy()

    def shot_mape(s: float) -> float:
        return float(np.mean(np.abs(s * pred / true - 1)))

    assert shot_mape(1.0) <= min(shot_mape(r) for r in true / pred) + 1e-6  # float32 prediction
    assert shot_mape(1.0) < shot_mape(float(np.exp(c_log - c_mape)))  # and below the log fit's scale


@pytest.mark.parametrize("seed", [0, 1])
def test_flops_strata_shots(seed: int) -> None:
    flops = np.sort(layer_features(np.arange(NUM_ARCHS))["flops"])
    adapt, test = adapt_split(seed, 4, "flops-strata")
    assert sorted([*adapt.tolist(), *test.tolist()]) == list(range(NUM_ARCHS))  # a split of the space
    got = np.sort(layer_features(adapt.numpy())["flops"])
    for q in range(4):  # the q-th smallest shot lies in the q-th quarter of the sorted FLOPs (1 024 each)
        assert flops[1024 * q] <= got[q] <= flops[1024 * q + 1023]
    rand, _ = adapt_split(seed, 4, "random")
    assert torch.equal(adapt_split(seed, 4, "flops-strata")[0], adapt) and not torch.equal(rand, adapt)


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")  # every prediction is inf
def test_overflowing_prediction_is_reported_not_raised(wl) -> None:
    # a weight vector that an impulsive channel draw could produce: every layer predicts e^200 ms, which
    # overflows float32 (log T, from a logsumexp, stays finite); the MAPE calibration must step aside so
    # the evaluation reports it instead of raising
    w = wl.init_params().clone()
    wl.views(w)["b3"].fill_(200.0)
    out = wl.evaluate(w)
    assert out["loss"] > 1e4 and not np.isfinite(out["mape"])
