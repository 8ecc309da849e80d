"""Errors a user can act on, as opposed to bugs.

A ConfigError is raised by checks that every rank runs on the same input, so
every rank raises the same one before any message is sent; rank 0 prints it
once and all ranks exit with status 2. Nothing waits for a peer that gave up.
"""


class ConfigError(ValueError):
    """The run cannot work as asked; the message says what to change."""


class ScheduleError(ValueError):
    """A schedule's action lists are inconsistent or would deadlock.

    `rank` and `action`, where given, say which action of which rank the message
    is about, so that a reader of a schedule file can point at its cell."""

    def __init__(self, message, rank=None, action=None):
        super().__init__(message)
        self.rank, self.action = rank, action


class NonFiniteError(ArithmeticError):
    """NaN or Inf appeared in training; every rank raises it with the same message."""
