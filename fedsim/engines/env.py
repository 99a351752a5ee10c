"""Process environment that must be set before flwr or ray are imported.

Flower and Ray read these variables at import time, so setting them later has no effect:
no telemetry or usage stats, loopback-only Ray sockets, quiet Flower logs, and a private
FLWR_HOME so that nothing is written to the user's home directory.
"""

import os
import tempfile

_DEFAULTS = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keeps every Ray socket on 127.0.0.1
    "FLWR_LOG_LEVEL": "WARNING",
    "RAY_DEDUP_LOGS": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "FLWR_HOME": os.path.join(tempfile.gettempdir(), "fedsim-flwr-home"),
}

for _key, _value in _DEFAULTS.items():
    os.environ.setdefault(_key, _value)
