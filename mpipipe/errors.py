"""Errors a user can act on, as opposed to bugs.

A ConfigError is raised by checks that every rank runs on the same input, so
every rank raises the same one before any message is sent; rank 0 prints it
once and all ranks exit with status 2. Nothing waits for a peer that gave up.
"""


class ConfigError(ValueError):
    """The run cannot work as asked; the message says what to change."""


class ScheduleError(ValueError):
    """A schedule's action lists are inconsistent or would deadlock."""


class NonFiniteError(ArithmeticError):
    """NaN or Inf appeared in training; every rank raises it with the same message."""
