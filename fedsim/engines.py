"""Two engines over the same Flower ServerApp and ClientApp.

``inline``: :class:`InlineGrid`, a synchronous in-process ``Grid`` that calls the ClientApp
directly, keeping one ``Context`` (and so one ``context.state``) per node. No Ray.

``ray``: Flower's simulation runtime (``run_simulation``) on its Ray backend, one CPU per
client actor, no dashboard, loopback only, quiet, bounded object store, private temp dir
that is removed afterwards. With ``ray_address`` it joins an existing cluster instead.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Iterable
from typing import Any

import torch
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedsim import batched
from fedsim.config import EngineConfig

SERVER_NODE_ID = 0
CLIENT_EXCEPTION_CODE = 2  # Flower's ErrorCode.CLIENT_APP_RAISED_EXCEPTION


class InlineGrid(Grid):
    """A Grid whose nodes are ClientApp calls in this process, answered immediately.

    Node ids are 1..N and node ``i`` serves partition ``i - 1``. A ClientApp exception becomes
    an error reply, as on Flower's runtime, so the ServerApp sees the same thing on both engines.
    """

    def __init__(self, client_app: ClientApp, num_nodes: int, run_id: int = 1):
        self.client_app = client_app
        self._run = Run.create_empty(run_id)
        self._contexts = {
            node: Context(
                run_id=run_id,
                node_id=node,
                node_config={"partition-id": node - 1, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config={},
            )
            for node in range(1, num_nodes + 1)
        }
        self._partition_of_node = {node: node - 1 for node in self._contexts}
        self._ids = itertools.count(1)
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def context(self, node_id: int) -> Context:
        return self._contexts[node_id]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        batched.prefetch(messages, self._partition_of_node)  # engine.batched: train all UEs at once
        ids = []
        for msg in messages:
            msg_id = f"inline-{next(self._ids)}"
            msg.metadata.__dict__["_message_id"] = msg_id
            node = msg.metadata.dst_node_id
            if node not in self._contexts:
                raise ValueError(f"unknown node id {node}")
            try:
                reply = self.client_app(message=msg, context=self._contexts[node])
            except Exception as exc:  # noqa: BLE001 - a failing UE is data, not a crash
                reason = "".join(traceback.format_exception(exc))
                reply = Message(Error(CLIENT_EXCEPTION_CODE, reason), reply_to=msg)
            self._replies[msg_id] = reply
            ids.append(msg_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def run_inline(server_app: ServerApp, client_app: ClientApp, num_ues: int) -> None:
    """Run the apps synchronously in this process."""
    run_id = 1
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SERVER_NODE_ID
    grid = InlineGrid(client_app, num_ues, run_id)
    context = Context(run_id=run_id, node_id=SERVER_NODE_ID, node_config={}, state=RecordDict(), run_config={})
    server_app(grid, context)


def gpus_per_ue(engine: EngineConfig) -> float:
    """The GPU share each UE actor asks Ray for. Ray hides GPUs from actors that ask for none,
    so a CUDA run needs a share: ``engine.gpus_per_ue`` when set, else an even split of this
    machine's GPUs over the actors that fit its CPUs (rounded down to Ray's 1e-4 granularity).
    Raises ConfigError for a share that cannot work."""
    from fedsim.device import resolve_device
    from fedsim.errors import ConfigError

    on_cuda = resolve_device(engine.device).type != "cpu"
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


def ray_backend_config(engine: EngineConfig, temp_dir: str | None) -> dict[str, Any]:
    """Flower's backend_config for Ray, tuned for a small machine."""
    init_args: dict[str, Any] = {
        "logging_level": "ERROR",
        "log_to_driver": False,
        "include_dashboard": False,
    }
    address = engine.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        init_args["address"] = address
    else:
        init_args.update(
            num_cpus=engine.num_cpus or os.cpu_count() or 1,
            object_store_memory=engine.object_store_mb * 1024 * 1024,
            _temp_dir=temp_dir,
            _node_ip_address="127.0.0.1",
        )
    return {
        "client_resources": {"num_cpus": engine.cpus_per_ue, "num_gpus": gpus_per_ue(engine)},
        "init_args": init_args,
    }


RAY_CONNECT_TIMEOUT_S = 3.0


def check_ray_address(engine: EngineConfig, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Fail fast (FedsimError) when ``--ray-address`` names a host:port nobody listens on;
    ``ray.init`` itself would retry for a long time."""
    import socket

    from fedsim.errors import FedsimError

    address = engine.ray_address or os.environ.get("RAY_ADDRESS")
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
    """Run the apps on Flower's simulation runtime with the Ray backend."""
    import ray
    from flwr.simulation import run_simulation

    if ray.is_initialized():
        raise RuntimeError("Ray is already initialised in this process; fedsim starts and stops its own")
    address = engine.ray_address or os.environ.get("RAY_ADDRESS")
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
