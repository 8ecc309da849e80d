"""Schedules as data: one generator per schedule, plus lower() and validate().

    make_schedule("1f1b", num_ranks=4, num_microbatches=8)  -> compute actions per rank
    lower(schedule)                                          -> with SEND/RECV added
    validate(schedule)                                       -> lowered, proven to finish
"""

from ..errors import ConfigError
from . import gpipe, naive, one_f_one_b
from .actions import Action, Schedule
from .lower import lower
from .validate import validate

GENERATORS = {
    "naive": naive.build,
    "gpipe": gpipe.build,
    "1f1b": one_f_one_b.build,
}


# The bubble fraction the textbooks give, for equal stage costs and free messages.
BUBBLE_FORMULAS = {
    "naive": lambda P, m: (P - 1) / P,
    "gpipe": lambda P, m: (P - 1) / (m + P - 1),
    "1f1b": lambda P, m: (P - 1) / (m + P - 1),
}


def make_schedule(name, num_ranks, num_microbatches, chunks=1):
    """The compute actions of schedule `name` (not yet lowered)."""
    if name not in GENERATORS:
        raise ConfigError(f"unknown schedule {name!r}: choose from {', '.join(GENERATORS)}")
    if num_ranks < 1:
        raise ConfigError(f"need at least one pipeline rank, got {num_ranks}")
    if num_microbatches < 1:
        raise ConfigError(f"need at least one micro-batch, got {num_microbatches}")
    if chunks != 1:
        raise ConfigError(f"schedule {name!r} has one stage per rank; chunks={chunks} is not supported")
    return GENERATORS[name](num_ranks, num_microbatches)


def plan(name, num_ranks, num_microbatches, chunks=1):
    """make_schedule + validate: the lowered lists the engine runs."""
    return validate(make_schedule(name, num_ranks, num_microbatches, chunks))


__all__ = ["Action", "Schedule", "GENERATORS", "BUBBLE_FORMULAS", "make_schedule", "lower", "validate", "plan"]
