"""``engine.device``: every tensor path runs on the run's device.

Without a GPU the device is emulated (``fakedev``): tensors report a non-CPU device but hold
CPU data, and every op checks, as CUDA does, that its tensor operands share one device. A run
on the emulated device therefore fails wherever a tensor was left on (or created on) the CPU,
and, since the arithmetic is the CPU's, must give bit-identical metrics to the CPU run. On a
machine with CUDA the same runs go to the real GPU and must agree to float tolerance.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import fedsim.device
from fedsim import client
from fedsim.config import load_experiment
from fedsim.errors import ConfigError
from fedsim.rundir import load_run
from fedsim.runner import run_experiment

from fakedev import FAKE, emulated_device

TIMING = {"wall_s"}


@pytest.fixture
def emulated(monkeypatch):
    """Runs with ``engine.device = 'cuda'`` land on the emulated device."""
    real = fedsim.device.resolve_device

    def resolve(spec: str) -> torch.device:
        return FAKE if spec.startswith("cuda") else real(spec)

    monkeypatch.setattr(fedsim.device, "resolve_device", resolve)
    client.workload_from_json.cache_clear()
    with emulated_device():
        yield
    client.workload_from_json.cache_clear()


def _run(tmp_path: Path, overrides: list[str]) -> list[dict]:
    cfg = load_experiment(None, ["output.plot=false", "sweep={}", "engine.name='inline'",
                                 f"output.dir={str(tmp_path)!r}", *overrides])
    run_dir = run_experiment(cfg, quiet=True)
    return [{k: v for k, v in r.items() if k not in TIMING} for r in load_run(run_dir).metrics]


SMALL = ["rounds=3", "workload.num_ues=4", "train.local_steps=2", "train.lr.eta=0.2"]

CASES = {
    "server-ota-sas": [*SMALL, "strategy.name='server-ota'", "channel.interference='sas'",
                       "channel.fading='rayleigh'", "channel.power_control='inversion'"],
    "server-digital-quant": [*SMALL, "strategy.name='server-digital'", "channel.quant_bits=4",
                             "strategy.fraction=0.5"],
    "relay-gaussian": [*SMALL, "strategy.name='serverfree-relay'", "channel.interference='gaussian'"],
    "d2d-sas-overlap": [*SMALL, "strategy.name='serverfree-d2d'", "channel.interference='sas'",
                        "strategy.overlap.enabled=true", "timing.latency_ratio=3",
                        "channel.power_control='phase'", "channel.fading='rayleigh'", "channel.csi_error=0.1"],
    "batched-logreg": [*SMALL, "strategy.name='server-ota'", "engine.batched=true", "workload.batch_size=8"],
    "quadratic": [*SMALL, "workload={name='quadratic', num_ues=4, grad_noise=0.1}", "strategy.name='server-ota'", "channel.interference='sas'",
                  "train.local_steps=1"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_emulated_device_run_equals_cpu_run(case, tmp_path, emulated) -> None:
    cpu = _run(tmp_path / "cpu", CASES[case])
    dev = _run(tmp_path / "dev", [*CASES[case], "engine.device='cuda'"])
    assert dev == cpu


def test_emulator_catches_a_tensor_left_on_the_cpu(emulated) -> None:
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


def test_ray_gpu_share() -> None:
    from fedsim.config import EngineConfig
    from fedsim.engines import gpus_per_ue

    assert gpus_per_ue(EngineConfig()) == 0.0
    with pytest.raises(ConfigError, match="resolves to the CPU"):
        gpus_per_ue(EngineConfig(device="cpu", gpus_per_ue=0.25))


def test_ray_gpu_share_on_cuda(monkeypatch) -> None:
    from fedsim.config import EngineConfig
    from fedsim.engines import gpus_per_ue, ray_backend_config

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
