"""Typed experiment configuration: TOML files validated by pydantic, with ``--set`` overrides.

:mod:`.experiment` holds the schema, :mod:`.loading` reads files and overrides, :mod:`.messages`
turns validation errors into lines a user can act on.
"""

from fedsim.config.experiment import (
    CheckpointConfig,
    DivergenceConfig,
    EngineConfig,
    ExperimentConfig,
    FaultsConfig,
    LrConfig,
    OutputConfig,
    TimingConfig,
    TrainConfig,
)
from fedsim.config.loading import (
    EXPERIMENTS_DIR,
    QUICKSTART,
    apply_overrides,
    load_experiment,
    parse_override,
    read_toml,
    resolve_experiment_path,
    shorthand_overrides,
    to_toml_dict,
    validate,
)
from fedsim.errors import ConfigError

__all__ = [
    "EXPERIMENTS_DIR",
    "QUICKSTART",
    "CheckpointConfig",
    "ConfigError",
    "DivergenceConfig",
    "EngineConfig",
    "ExperimentConfig",
    "FaultsConfig",
    "LrConfig",
    "OutputConfig",
    "TimingConfig",
    "TrainConfig",
    "apply_overrides",
    "load_experiment",
    "parse_override",
    "read_toml",
    "resolve_experiment_path",
    "shorthand_overrides",
    "to_toml_dict",
    "validate",
]
