"""Errors a user can hit.

Every error that bad input, a missing prerequisite or an exhausted resource can cause
is a :class:`PlainnetError`. Its message is one line that says what is wrong and, where
there is one, how to fix it; the CLI prints exactly that line and exits non-zero, with
no traceback. Anything else escaping is a bug and keeps its traceback.
"""


class PlainnetError(Exception):
    """A user-facing failure whose ``str()`` is the complete, one-line explanation."""


class ConfigError(PlainnetError):
    """A configuration value is invalid."""
