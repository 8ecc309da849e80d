"""Pause Python's cyclic garbage collector while a plan is built or walked.

A plan at P=64, m=1024 is about a million small objects (actions, events,
message keys). Each allocation counts towards the collector's next pass, and
as they pile up the collector rescans all of them again and again, which can
take longer than the work itself. None of these objects can form a reference
cycle, so nothing is lost by pausing it; reference counting still frees them.

Switched back on, the collector would at once scan everything made meanwhile as
young objects (about 0.07 s a million, once for every plan step that paused it).
They are long-lived, so they go straight to the oldest generation instead
(gc.freeze, then gc.unfreeze: two list splices), where the collector looks only
in its rare full passes, as it would have after promoting them itself.
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
            gc.freeze()        # everything tracked -> a generation no pass scans ...
            gc.enable()
            gc.unfreeze()      # ... and from there into the oldest one, unscanned


def without_gc(function):
    """`function`, run with the collector paused."""
    @wraps(function)
    def wrapper(*args, **kwargs):
        with paused():
            return function(*args, **kwargs)
    return wrapper
