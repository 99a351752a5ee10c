"""The process environment Flower and Ray get while an engine runs, and only then.

:func:`engine_environment` sets, where you have not set them yourself: no telemetry or usage
stats, loopback-only Ray sockets, quiet Flower logs, and a per-user Flower home in the system
temp folder (``FLWR_HOME``), so that nothing is written to your home directory. On the way out
it puts ``os.environ`` back exactly as it found it, including what Flower itself writes there
(its Ray backend prepends ``sys.path`` to ``PYTHONPATH``).

Flower and Ray read some of these variables when they are imported, so the engines import
``ray`` and ``flwr.simulation`` only inside the context, where Ray's processes also inherit
them. A Flower imported earlier (``fedsim.runtime`` imports ``flwr.app``) has already cached two of
them, its telemetry switch and its console log level; the context applies those to the cached
values as well and puts them back afterwards. It also hides the one warning fedsim knows about
and cannot act on: Flower's "DEPRECATED FEATURE" notice for ``run_simulation`` (see the Ray
how-to for why the ray engine still uses it).

``import fedsim`` changes nothing in the process environment.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def flwr_home() -> str:
    """Flower's home for fedsim runs: a folder of this user's in the system temp folder."""
    user = str(os.getuid()) if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return os.path.join(tempfile.gettempdir(), f"fedsim-flwr-{user}")


def defaults() -> dict[str, str]:
    """The variables an engine sets where the caller has not set them."""
    return {
        "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keeps every Ray socket on 127.0.0.1
        "FLWR_LOG_LEVEL": "WARNING",
        "RAY_DEDUP_LOGS": "0",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
        "FLWR_HOME": flwr_home(),
    }


class HideRunSimulationDeprecation(logging.Filter):
    """Drops Flower's "DEPRECATED FEATURE" record about ``run_simulation`` (and only that one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "DEPRECATED FEATURE" not in str(record.msg):
            return True
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            return True
        return "run_simulation" not in text


@contextmanager
def engine_environment() -> Iterator[None]:
    """Set Flower's and Ray's variables (:func:`defaults`, yours win) for the duration of the
    block, and restore ``os.environ`` and Flower's cached settings afterwards, also on errors."""
    saved = dict(os.environ)
    for key, value in defaults().items():
        os.environ.setdefault(key, value)
    scratch = _private_home()
    try:
        with _flower_settings():
            yield
    finally:
        restore_environ(saved)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def restore_environ(saved: dict[str, str]) -> None:
    """Make ``os.environ`` equal to ``saved`` again (added keys removed, changed ones reset)."""
    for key in [k for k in os.environ if k not in saved]:
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _private_home() -> str | None:
    """Create ``FLWR_HOME`` as a folder only this user can read. A folder of that name that is a
    link or someone else's is not used: a fresh private temp folder is, and its path returned
    so that it can be removed afterwards."""
    home = os.environ["FLWR_HOME"]
    if home != flwr_home():
        return None  # the caller's own choice
    try:
        os.makedirs(home, mode=0o700, exist_ok=True)
        mine = not hasattr(os, "getuid") or os.lstat(home).st_uid == os.getuid()
        if mine and os.path.isdir(home) and not os.path.islink(home):
            return None
    except OSError:
        pass
    os.environ["FLWR_HOME"] = tempfile.mkdtemp(prefix="fedsim-flwr-")
    return os.environ["FLWR_HOME"]


@contextmanager
def _flower_settings() -> Iterator[None]:
    """Apply FLWR_TELEMETRY_ENABLED and FLWR_LOG_LEVEL to a Flower that cached them at import,
    plain (uncoloured) console logs when stderr is not a terminal, and the deprecation filter."""
    try:
        from flwr.supercore import logger as flower_log
        from flwr.supercore import telemetry
    except ImportError:  # another Flower layout: its import above read the variables already
        yield
        return
    handler: Any = flower_log.console_handler
    saved = (telemetry.FLWR_TELEMETRY_ENABLED, handler.level, getattr(handler, "colored", True))
    hide = HideRunSimulationDeprecation()
    telemetry.FLWR_TELEMETRY_ENABLED = os.environ["FLWR_TELEMETRY_ENABLED"]
    level = logging.getLevelName(os.environ["FLWR_LOG_LEVEL"].upper())
    if isinstance(level, int):
        handler.setLevel(level)
    handler.colored = bool(getattr(sys.stderr, "isatty", lambda: False)())
    flower_log.FLOWER_LOGGER.addFilter(hide)
    try:
        yield
    finally:
        flower_log.FLOWER_LOGGER.removeFilter(hide)
        telemetry.FLWR_TELEMETRY_ENABLED, level, handler.colored = saved
        handler.setLevel(level)
