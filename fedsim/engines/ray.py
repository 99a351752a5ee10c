"""The ``ray`` engine: Flower's simulation runtime (``run_simulation``) on its Ray backend, one CPU
per client actor, no dashboard, loopback only, quiet, bounded object store, and a private temp
dir that is removed afterwards. With ``ray_address`` it joins an existing cluster instead."""

from __future__ import annotations

import math
import os
import shutil
import socket
import tempfile
import time
from typing import TYPE_CHECKING, Any

import torch

from fedsim import device as devices
from fedsim.config import EngineConfig
from fedsim.engines.env import engine_environment
from fedsim.errors import ConfigError, FedsimError

if TYPE_CHECKING:
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp


def gpus_per_ue(engine: EngineConfig) -> float:
    """The GPU share each UE actor asks Ray for. Ray hides GPUs from actors that ask for none,
    so a CUDA run needs a share: ``engine.gpus_per_ue`` when set, else an even split of this
    machine's GPUs over the actors that fit its CPUs (rounded down to Ray's 1e-4 granularity).
    Raises ConfigError for a share that cannot work."""
    on_cuda = devices.resolve_device(engine.device).type != "cpu"
    share = engine.gpus_per_ue
    if share is not None and share > 0 and not on_cuda:
        raise ConfigError(f"engine.gpus_per_ue = {share:g} but engine.device = {engine.device!r} resolves to the "
                          "CPU: UE actors would wait for GPUs they never use; set engine.device = 'cuda' or drop "
                          "gpus_per_ue")
    if not on_cuda:
        return 0.0
    if share is None:
        if engine.ray_address or os.environ.get("RAY_ADDRESS"):
            raise ConfigError("engine.device is CUDA on an existing Ray cluster: set engine.gpus_per_ue (the GPU "
                              "share of one UE actor, for example 0.25) to match the cluster's GPUs")
        actors = max(1.0, (engine.num_cpus or os.cpu_count() or 1) / engine.cpus_per_ue)
        share = math.floor(1e4 * min(1.0, torch.cuda.device_count() / actors)) / 1e4
    if share <= 0:
        raise ConfigError("engine.device is CUDA but engine.gpus_per_ue = 0: Ray hides the GPUs from UE actors "
                          "that ask for none; give each a share such as 0.25")
    if share > 1 and share != int(share):
        raise ConfigError(f"engine.gpus_per_ue = {share:g}: Ray accepts fractions only below 1 (or whole GPUs)")
    return float(share)


def cluster_address(engine: EngineConfig) -> str | None:
    """The Ray cluster to join (``engine.ray_address``, else ``RAY_ADDRESS``), or None."""
    return engine.ray_address or os.environ.get("RAY_ADDRESS") or None


def ray_init_args(engine: EngineConfig, temp_dir: str | None) -> dict[str, Any]:
    """``ray.init`` arguments: quiet, no dashboard; a cluster's address, or a local Ray on loopback
    with the configured CPUs, a bounded object store and a short private temp dir."""
    args: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False, "include_dashboard": False}
    address = cluster_address(engine)
    if address:
        args["address"] = address
    else:
        args.update(num_cpus=engine.num_cpus or os.cpu_count() or 1,
                    object_store_memory=engine.object_store_mb * 1024 * 1024, _temp_dir=temp_dir,
                    _node_ip_address="127.0.0.1")
    return args


def ray_backend_config(engine: EngineConfig, temp_dir: str | None) -> dict[str, Any]:
    """Flower's backend_config for Ray, tuned for a small machine."""
    return {
        "client_resources": {"num_cpus": engine.cpus_per_ue, "num_gpus": gpus_per_ue(engine)},
        "init_args": ray_init_args(engine, temp_dir),
    }


RAY_CONNECT_TIMEOUT_S = 3.0


def check_ray_address(engine: EngineConfig, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Fail fast (FedsimError) when ``--ray-address`` names a host:port nobody listens on;
    ``ray.init`` itself would retry for a long time."""
    address = cluster_address(engine)
    if not address or address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise FedsimError(f"--ray-address {address!r}: expected HOST:PORT, for example 127.0.0.1:6379")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise FedsimError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc} within {timeout:g} s); "
                          "start one with `ray start --head` or drop --ray-address") from None


def _replace_dead_actors() -> None:
    """Make Flower's actor pool replace an actor whose process died instead of re-queueing it.

    Flower 1.42 puts the actor of a failed job back into its pool even when the actor process is
    gone (killed, OOM), so every later message routed to it fails too. fedsim's ServerApp
    retries such messages; with this patch the retry lands on a fresh actor.
    """
    import ray
    from flwr.simulation.ray_transport.ray_actor import BasicActorPool

    if getattr(BasicActorPool.add_actor_back_to_pool, "_fedsim", False):
        return

    def add_actor_back_to_pool(self: BasicActorPool, future: Any) -> None:
        actor = self._future_to_actor.pop(future)
        try:
            ray.get(future, timeout=0)
        except ray.exceptions.RayActorError:
            actor = self.create_actor_fn()
        except Exception:  # noqa: BLE001 - any other outcome leaves the (live) actor as it is
            pass
        self.pool.append(actor)

    add_actor_back_to_pool._fedsim = True  # type: ignore[attr-defined]
    BasicActorPool.add_actor_back_to_pool = add_actor_back_to_pool  # type: ignore[method-assign]


def run_ray(server_app: ServerApp, client_app: ClientApp, num_ues: int, engine: EngineConfig) -> None:
    """Run the apps on Flower's simulation runtime with the Ray backend.

    Flower 1.42 deprecates ``run_simulation`` in favour of ``flwr run`` on its deployment runtime
    (a SuperLink), which would cost fedsim its in-process ServerApp object; its deprecation notice
    is hidden (docs/howto/ray-cluster.md). Ray and ``flwr.simulation`` are imported inside
    :func:`engine_environment`, which sets the variables they read at import and leaves
    ``os.environ`` as it was."""
    with engine_environment():
        import ray
        from flwr.simulation import run_simulation

        if ray.is_initialized():
            raise RuntimeError("Ray is already initialised in this process; fedsim starts and stops its own")
        address = cluster_address(engine)
        # AF_UNIX socket paths are limited to 107 bytes: keep the temp dir short.
        temp_dir = None if address else tempfile.mkdtemp(prefix="fsr", dir="/tmp")
        _replace_dead_actors()
        try:
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=num_ues,
                backend_name="ray",
                backend_config=ray_backend_config(engine, temp_dir),
            )
        finally:
            if ray.is_initialized():
                ray.shutdown()
            if temp_dir:
                remove_when_released(temp_dir)


def remove_when_released(path: str, attempts: int = 20) -> None:
    # Ray's processes may take a moment to release files after shutdown.
    for _ in range(attempts):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            return
        time.sleep(0.1)
