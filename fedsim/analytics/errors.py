"""The error analytics raises for bad user input: a FedsimError (the CLI prints it and exits
with code 2) that is also a ValueError (what numeric callers expect)."""

from fedsim.errors import FedsimError


class AnalyticsError(FedsimError, ValueError):
    """Invalid analytics input; the message names the violated condition and what to change."""
