"""Stop a run in this process as Ctrl-C would, once it has written a chosen number of rows: the
one way the resume tests make a half-finished run directory without racing a subprocess."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsim.runner import run_experiment
from fedsim.runtime.recorder import Recorder


class Interrupt(KeyboardInterrupt):
    """Ctrl-C at a chosen row (raised from inside the ServerApp)."""


def interrupted_run(cfg, after_rows: int) -> Path:
    """Run ``cfg`` until ``after_rows`` rows are written, then stop it; its run directory (the one
    folder under ``cfg.output.dir``)."""
    original = Recorder.log

    def log(self, row):
        original(self, row)
        if len(self.rows) >= after_rows:
            raise Interrupt()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Recorder, "log", log)
        with pytest.raises(Interrupt):
            run_experiment(cfg, quiet=True)
    (run_dir,) = [p for p in Path(cfg.output.dir).iterdir() if p.is_dir()]
    return run_dir
