"""The Flower ServerApp: it runs one round loop (:class:`fedsim.runtime.loop.RoundLoop`).

A ServerApp is made per run, around that run's loop, so that nothing module-level carries a run.
Flower runs it in a thread of the process that started the run, on both engines."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsim.apps import flowerfast
from fedsim.runtime.loop import Outcome, RoundLoop

flowerfast.install()


class LoopApp:
    """A ServerApp around ``loop``; after the run, ``outcome`` says how it ended."""

    def __init__(self, loop: RoundLoop) -> None:
        self.loop = loop
        self.outcome: Outcome | None = None
        self.app = ServerApp()

        @self.app.main()
        def main(grid: Grid, context: Context) -> None:
            self.outcome = self.loop.run(grid)
