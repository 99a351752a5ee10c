"""The ``inline`` engine: :class:`InlineGrid`, a synchronous in-process ``Grid`` that calls the
ClientApp directly, keeping one ``Context`` (and so one ``context.state``) per node. No Ray."""

from __future__ import annotations

import itertools
import traceback
from collections.abc import Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedsim.engines.batched import BatchTrainer
from fedsim.engines.env import engine_environment

SERVER_NODE_ID = 0
CLIENT_EXCEPTION_CODE = 2  # Flower's ErrorCode.CLIENT_APP_RAISED_EXCEPTION


class InlineGrid(Grid):
    """A Grid whose nodes are ClientApp calls in this process, answered immediately.

    Node ids are 1..N and node ``i`` serves partition ``i - 1``. A ClientApp exception becomes
    an error reply, as on Flower's runtime, so the ServerApp sees the same thing on both engines.
    """

    def __init__(self, client_app: ClientApp, num_nodes: int, run_id: int = 1,
                 batch_trainer: BatchTrainer | None = None):
        self.client_app = client_app
        self.batch_trainer = batch_trainer
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
        if self.batch_trainer is not None:  # engine.batched: train all UEs at once
            self.batch_trainer.attach(messages, self._partition_of_node, self._contexts)
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


def run_inline(server_app: ServerApp, client_app: ClientApp, num_ues: int,
               batch_trainer: BatchTrainer | None = None) -> None:
    """Run the apps synchronously in this process (inside :func:`engine_environment`: Flower
    quiet and without telemetry; ``os.environ`` is left as it was)."""
    run_id = 1
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SERVER_NODE_ID
    grid = InlineGrid(client_app, num_ues, run_id, batch_trainer)
    context = Context(run_id=run_id, node_id=SERVER_NODE_ID, node_config={}, state=RecordDict(), run_config={})
    with engine_environment():
        server_app(grid, context)
