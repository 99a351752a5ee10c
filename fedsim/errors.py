"""Errors a user can cause. The CLI prints their message and exits with code 2."""


class FedsimError(Exception):
    """Base class: the message says what to change."""


class ConfigError(FedsimError):
    """An experiment file or override is invalid."""


class RunDirError(FedsimError):
    """A run directory is missing, incomplete or corrupt."""


class RunInterrupted(FedsimError):
    """The user stopped the run (Ctrl-C); completed rounds and the last checkpoint are kept."""
