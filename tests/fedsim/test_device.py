"""``engine.device``: every tensor path runs on the run's device.

Without a GPU the device is emulated (``fakedev``): tensors report a non-CPU device but hold
CPU data, and every op checks, as CUDA does, that its tensor operands share one device. A run
on the emulated device therefore fails wherever a tensor was left on (or created on) the CPU,
and, since the arithmetic is the CPU's, must give bit-identical metrics to the CPU run. On a
machine with CUDA the same runs go to the real GPU and must agree to float tolerance.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from fakedev import FAKE, emulated_device

import fedsim.device
import fedsim.workloads
from fedsim.apps import client
from fedsim.config import load_experiment
from fedsim.errors import ConfigError
from fedsim.results.rundir import load_run
from fedsim.runner import run_experiment
from fedsim.workloads import Workload

TIMING = {"wall_s"}


@pytest.fixture
def emulated(monkeypatch):
    """Runs with ``engine.device = 'cuda'`` land on the emulated device."""
    real = fedsim.device.resolve_device

    def resolve(spec: str) -> torch.device:
        return FAKE if spec.startswith("cuda") else real(spec)

    monkeypatch.setattr(fedsim.device, "resolve_device", resolve)
    moved: list[str] = []
    to_device = Workload.to_device

    def record(self, device):
        moved.append(self.name)
        return to_device(self, device)

    monkeypatch.setattr(Workload, "to_device", record)
    caches = (client.resolve_from_text,)
    for cache in caches:
        cache.cache_clear()
    emulated_device.moved = moved
    yield emulated_device
    for cache in caches:
        cache.cache_clear()


def _run(tmp_path: Path, overrides: list[str]) -> list[dict]:
    """The run's metric rows, then (architecture searches) the search and retraining outcome."""
    cfg = load_experiment(None, ["output.plot=false", "sweep={}", "engine.name='inline'",
                                 f"output.dir={str(tmp_path)!r}", *overrides])
    run_dir = run_experiment(cfg, quiet=True)
    rows = [{k: v for k, v in r.items() if k not in TIMING} for r in load_run(run_dir).metrics]
    search = json.loads((run_dir / "summary.json").read_text()).get("search")
    if search is not None:
        retrain = search.get("retrain", {}).pop("run_dir", None)  # named by the wall clock
        if retrain is not None:
            rows += [{k: v for k, v in r.items() if k not in TIMING} for r in load_run(run_dir / retrain).metrics]
        search.get("resources", {}).pop("latency_ms", None)
        rows.append(search)
    return rows


SMALL = ["rounds=3", "workload.num_ues=4", "train.local_steps=2", "train.lr.eta=0.2"]

CASES = {
    "server-ota-sas": [*SMALL, "strategy.name='server-ota'", "channel.interference='sas'",
                       "channel.fading='rayleigh'", "channel.power_control='inversion'"],
    "server-digital-quant": [*SMALL, "strategy.name='server-digital'", "channel.quant_bits=4",
                             "strategy.fraction=0.5"],
    "relay-gaussian": [*SMALL, "strategy.name='serverfree-relay'", "channel.interference='gaussian'",
                       "checkpoint.every=1", "faults.nan_at=[[2, 1]]", "faults.policy='zero'"],
    "d2d-sas-overlap": [*SMALL, "strategy.name='serverfree-d2d'", "channel.interference='sas'",
                        "strategy.overlap.enabled=true", "timing.latency_ratio=3",
                        "channel.power_control='phase'", "channel.fading='rayleigh'", "channel.csi_error=0.1"],
    "batched-logreg": [*SMALL, "strategy.name='server-ota'", "engine.batched=true", "workload.batch_size=8"],
    "population-d2d": [*SMALL, "strategy.name='serverfree-d2d'", "engine.population=true", "strategy.mode='reset'",
                       "strategy.fraction=0.5", "faults.slowdown=[[1, 50.0]]", "faults.deadline=0.01",
                       "faults.nan_at=[[2, 0], [3, 2]]", "faults.policy='zero'", "channel.fading='rayleigh'",
                       "channel.interference='gaussian'", "checkpoint.every=1"],
    "population-overlap-replace": [*SMALL, "strategy.name='serverfree-relay'", "engine.population=true",
                                   "strategy.overlap.enabled=true", "strategy.overlap.merge='replace'",
                                   "timing.latency_ratio=1", "faults.slowdown=[[1, 50.0]]", "faults.deadline=0.01",
                                   "faults.nan_at=[[2, 3]]", "faults.policy='zero'", "checkpoint.every=1"],
    "quadratic": [*SMALL, "workload={name='quadratic', num_ues=4, grad_noise=0.1}", "strategy.name='server-ota'",
                  "channel.interference='sas'", "train.local_steps=1"],
}
TINY = ["rounds=2", "train.local_steps=2", "train.lr.eta=0.05", "checkpoint.every=0", "strategy.transmit='update'"]
CASES.update({
    "digits-cnn-batched": [*TINY, "workload={name='digits-cnn', num_ues=3, batch_size=16}",
                           "strategy.name='server-ota'", "engine.batched=true"],
    "moe-lm-relay": [*TINY, "workload={name='moe-lm', num_ues=3, train_seqs_per_ue=32, total_steps=4}",
                     "strategy.name='serverfree-relay'"],
    "moe-switch-sgd": [*TINY, "workload={name='moe-lm', num_ues=3, train_seqs_per_ue=32, total_steps=4, "
                       "router='switch', optimizer='sgd'}", "strategy.name='server-ota'"],
    "dash-random": [*TINY, "workload={name='nas-dash', dataset='digits', channels=[4, 8], num_ues=3, "
                    "retrain_rounds=0, search_strategy='random'}", "strategy.name='server-digital'"],
    "gdas-random": [*TINY, "workload={name='nas-gdas', num_ues=3, cells=1, channels=4, retrain_rounds=0, "
                    "search_strategy='random', random_candidates=2}", "strategy.name='server-ota'"],
    "augsearch": [*TINY, "workload={name='digits-augsearch', num_ues=3, batch_size=16}",
                  "strategy.name='server-digital'"],
    "daas-relay": [*TINY, "workload={name='nas-gdas', num_ues=3, cells=1, channels=4, retrain_rounds=1, "
                   "augment={policy='search'}}", "strategy.name='serverfree-relay'"],
    "dash": [*TINY, "workload={name='nas-dash', dataset='digits', channels=[4, 8], num_ues=3, retrain_rounds=1}",
             "strategy.name='server-ota'"],
    "tabnas": [*TINY, "workload={name='nas-tabnas', num_ues=3, max_samples_per_ue=100, hidden_layers=2, "
               "retrain_rounds=1}", "strategy.name='server-digital'"],
})

ROUNDING = {"moe-lm-relay": 1e-3, "moe-switch-sgd": 1e-3}


@pytest.mark.parametrize("case", sorted(CASES))
def test_emulated_device_run_equals_cpu_run(case, tmp_path, emulated) -> None:
    cpu = _run(tmp_path / "cpu", CASES[case])
    with emulated():
        dev = _run(tmp_path / "dev", [*CASES[case], "engine.device='cuda'"])
    assert emulated.moved, "the run never moved its workload to the device"
    assert not [r["failure_reasons"] for r in cpu + dev if r.get("failures")], "a UE failed"
    # The emulated device computes with the CPU's kernels, so the numbers are the CPU's, except
    # where a composite op picks another kernel for another device (attention: the math path
    # instead of the fused CPU one); a transformer's training amplifies that rounding.
    assert _close(dev, cpu, rel=ROUNDING.get(case, 1e-12)), case


def _close(a, b, rel: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=rel, abs=1e-9) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b, strict=True))
    return a == b


def test_emulator_catches_a_tensor_left_on_the_cpu(emulated) -> None:
    with emulated():
        _catches()


def _catches() -> None:
    x = torch.ones(3, device=FAKE)
    with pytest.raises(RuntimeError, match="same device"):
        _ = x + torch.ones(3)
    with pytest.raises(TypeError, match="numpy"):
        x.numpy()
    assert float((x + torch.tensor(1.0)).sum()) == 6.0  # CPU scalars mix, as on CUDA


def test_device_values_are_validated(tmp_path) -> None:
    with pytest.raises(ConfigError, match="engine.device"):
        load_experiment(None, ["engine.device='gpu'"])
    if not torch.cuda.is_available():
        cfg = load_experiment(None, ["engine.device='cuda'", f"output.dir={str(tmp_path)!r}"])
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            run_experiment(cfg, quiet=True)
        assert not any(tmp_path.iterdir())  # refused before anything was written
        assert fedsim.device.resolve_device("auto") == torch.device("cpu")
    cfg = load_experiment(None, ["engine.device='auto'", "engine.name='inline'", "rounds=1", "sweep={}",
                                 "output.plot=false", f"output.dir={str(tmp_path / 'auto')!r}"])
    summary = json.loads((run_experiment(cfg, quiet=True) / "summary.json").read_text())
    assert summary["device"] == ("cuda" if torch.cuda.is_available() else "cpu")


def test_ray_gpu_share() -> None:
    from fedsim.config import EngineConfig
    from fedsim.engines.ray import gpus_per_ue

    assert gpus_per_ue(EngineConfig()) == 0.0
    with pytest.raises(ConfigError, match="resolves to the CPU"):
        gpus_per_ue(EngineConfig(device="cpu", gpus_per_ue=0.25))


def test_ray_gpu_share_on_cuda(monkeypatch) -> None:
    from fedsim.config import EngineConfig
    from fedsim.engines.ray import gpus_per_ue, ray_backend_config

    monkeypatch.setattr(fedsim.device, "resolve_device", lambda spec: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert gpus_per_ue(EngineConfig(device="cuda", gpus_per_ue=0.25)) == 0.25
    assert gpus_per_ue(EngineConfig(device="cuda", num_cpus=3)) == math.floor(1e4 / 3) / 1e4
    assert gpus_per_ue(EngineConfig(device="cuda", num_cpus=1)) == 1.0
    assert ray_backend_config(EngineConfig(device="cuda", gpus_per_ue=0.5), None)["client_resources"]["num_gpus"] == 0.5
    with pytest.raises(ConfigError, match="ask for none"):
        gpus_per_ue(EngineConfig(device="cuda", gpus_per_ue=0))
    with pytest.raises(ConfigError, match="only below 1"):
        gpus_per_ue(EngineConfig(device="cuda", gpus_per_ue=1.5))
    with pytest.raises(ConfigError, match="existing Ray cluster"):
        gpus_per_ue(EngineConfig(device="cuda", ray_address="127.0.0.1:6379"))


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("case", sorted(CASES))
def test_cuda_run_matches_cpu_run(case, tmp_path) -> None:
    cpu = _run(tmp_path / "cpu", CASES[case])
    gpu = _run(tmp_path / "gpu", [*CASES[case], "engine.device='cuda'"])
    assert [r["round"] for r in gpu] == [r["round"] for r in cpu]
    for a, b in zip(cpu, gpu, strict=True):
        for key in ("loss", "accuracy", "consensus"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (case, a["round"], key)


def test_ray_engine_runs_ue_actors_on_fractional_gpus(tmp_path, monkeypatch) -> None:
    """Flower's Ray backend schedules UE actors that each ask for half a GPU: Ray is told this
    machine has one (Ray does not check), so the two actors share it; the run's numbers are the
    inline engine's (the device itself stays the CPU here)."""
    import fedsim.engines.ray as engines

    real, calls = engines.ray_backend_config, []

    def with_gpu(engine, temp_dir):
        calls.append(engine.name)
        cfg = real(engine, temp_dir)
        cfg["client_resources"]["num_gpus"] = 0.5
        cfg["init_args"]["num_gpus"] = 1
        return cfg

    monkeypatch.setattr(engines, "ray_backend_config", with_gpu)
    small = [*SMALL, "rounds=2", "strategy.name='serverfree-relay'", "channel.interference='sas'"]
    inline = _run(tmp_path / "inline", [*small, "engine.population=false"])  # the per-UE path: bit-identical
    ray = _run(tmp_path / "ray", [*small, "engine.name='ray'", "engine.num_cpus=2"])
    assert calls == ["ray"] and ray == inline
