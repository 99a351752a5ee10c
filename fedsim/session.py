"""The experiment the ServerApp is serving right now.

Flower's ServerApp runs in a thread of the process that started the run (both engines), so
the engine hands it the validated config and the recorder through this module. ClientApps
never read it: they get the config inside every message, because on Ray they live in other
processes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsim.config import ExperimentConfig


@dataclass
class Session:
    config: ExperimentConfig
    recorder: Any  # fedsim.recorder.Recorder
    config_json: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None  # where checkpoints go
    resume: Any = None  # fedsim.checkpoint state to continue from, or None
    stop: threading.Event = field(default_factory=threading.Event)  # set by Ctrl-C: stop at a round boundary

    def __post_init__(self) -> None:
        self.config_json = self.config.model_dump_json()


_current: Session | None = None


def set_session(session: Session | None) -> None:
    global _current
    _current = session


def get_session() -> Session:
    if _current is None:
        raise RuntimeError("no fedsim experiment is active; start runs through fedsim.runner")
    return _current
