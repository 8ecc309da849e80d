"""Pause Python's cyclic garbage collector while a plan is built or walked.

A plan at P=64, m=1024 is about a million small objects (actions, events,
message keys). Each allocation counts towards the collector's next pass, and
as they pile up the collector rescans all of them again and again, which can
take longer than the work itself. None of these objects can form a reference
cycle, so nothing is lost by pausing it; reference counting still frees them.
"""

import gc
from contextlib import contextmanager
from functools import wraps


@contextmanager
def paused():
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def without_gc(function):
    """`function`, run with the collector paused."""
    @wraps(function)
    def wrapper(*args, **kwargs):
        with paused():
            return function(*args, **kwargs)
    return wrapper
