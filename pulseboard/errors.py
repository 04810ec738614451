"""The one exception family of Pulseboard.

Adapters translate driver errors at their edge and re-raise one of these ``from`` the original.
"""

from __future__ import annotations


class PulseboardError(Exception):
    """Root of every error Pulseboard raises on purpose."""


class ConfigError(PulseboardError):
    """A configuration file is invalid; ``problems`` lists every problem with its location."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in self.problems))


class ExprError(PulseboardError):
    """A ``where`` expression does not parse; ``column`` is 1-based in the expression text."""

    def __init__(self, message: str, column: int) -> None:
        self.message = message
        self.column = column
        super().__init__(f"{message} at column {column}")


class DecodeError(PulseboardError):
    """A request body is not a JSON array of event objects (or NDJSON); says where it broke."""


class StateError(PulseboardError):
    """A serialised aggregate state or engine snapshot cannot be read (wrong version, corrupt)."""
