"""Schedules as data: one generator per schedule, plus lower() and validate().

    make_schedule("1f1b", num_ranks=4, num_microbatches=8)  -> compute actions per rank
    lower(schedule)                                          -> with SEND/RECV added
    validate(schedule)                                       -> lowered, proven to finish
    validated_schedule("1f1b", 4, 8)                         -> all three: what the engine runs
    read_schedule_file("x.csv").schedule                     -> a schedule from PyTorch's CSV
    write_schedule_file(schedule, "x.csv", comms=False)      -> ... and back

Each generator module has `build(num_ranks, num_microbatches, chunks)`; those
with several chunks per rank say how many by default in DEFAULT_CHUNKS.
"""

from mpipipe.errors import ConfigError
from . import (dualpipev, gpipe, interleaved, looped_bfs, naive, one_f_one_b, v_half, v_min, zb_h1,
               zb_h2, zbv)
from .actions import Action, Schedule
from .lower import lower
from .pytorch_csv import write_schedule_file
from .quiet_gc import without_gc
from .schedule_file import read_schedule_file, schedule_from_file
from .validate import validate

GENERATORS = {
    "naive": naive,
    "gpipe": gpipe,
    "1f1b": one_f_one_b,
    "interleaved": interleaved,
    "looped-bfs": looped_bfs,
    "zb-h1": zb_h1,
    "zb-h2": zb_h2,
    "zbv": zbv,
    "v-half": v_half,
    "v-min": v_min,
    "dualpipev": dualpipev,
}


def default_chunks(name):
    """Model chunks per rank a schedule uses unless told otherwise."""
    return getattr(GENERATORS[name], "DEFAULT_CHUNKS", 1)


def _one_f_one_b_like(P, m, V, c):
    return (P - 1) / (m + P - 1)


def _zb_h1(P, m, V, c):
    """Qi et al.: bubble per rank (P-1)(F+B-W) after m(F+B+W) of work (m >= P).

    The paper's figure holds while W <= min(F, B): then the W's each rank holds
    back fill the gaps. A W longer than that cannot shorten the two waits no
    schedule avoids: the last stage starts after (P-1) forwards, and the last
    micro-batch's input gradient still travels back through P-1 ranks after
    the last stage's final B. So the bubble is (P-1) max(F+B-W, F, B)."""
    bubble = (P - 1) * max(c.F + c.B - c.W, c.F, c.B)
    return bubble / (m * (c.F + c.B + c.W) + bubble) if m >= P else None


def dualpipev_bubble(P, c):
    """DualPipeV's idle time per rank in one flushed step (docs/schedules.md, "DualPipeV in detail"), a pair
    costing F + B. In chunk costs f, i, w (half a rank's F, B, W; i the input gradient):
    (P-1) max(0, i-w) + (P-2) f + max(P f, (P-1) i). With f = i >= w it is DeepSeek's
    (PP/2-1)(F&B + B - 3W) for PP = 2P stages, F&B = f + (i+w) and B = i + w."""
    f, i, w = c.F / 2, c.B / 2, c.W / 2
    return (P - 1) * max(0.0, i - w) + (P - 2) * f + max(P * f, (P - 1) * i)


def _dualpipev(P, m, V, c):
    if m < 2 * P or (c.BW is not None and c.BW != c.B + c.W):
        return None
    bubble = dualpipev_bubble(P, c)
    return bubble / (m * (c.F + c.B + c.W) + bubble)


def _v_shape(idle_in_chunk_passes):
    """A V schedule's bubble (v_min.py, v_half.py): with F = B = W and m >= P each rank
    idles for a number of chunk passes (half a rank's F each) in one flushed step."""
    def fraction(P, m, V, c):
        if m < P or not c.F == c.B == c.W or (c.BW is not None and c.BW != c.B + c.W):
            return None
        idle = idle_in_chunk_passes(P) * c.F / 2
        return idle / (m * (c.F + c.B + c.W) + idle)
    return fraction


# The bubble fraction of one flushed step the literature gives, for equal stage
# costs and free messages. Costs are a rank's share: a chunk costs 1/V of it.
BUBBLE_FORMULAS = {
    "naive": lambda P, m, V, c: (P - 1) / P,
    "gpipe": _one_f_one_b_like,
    "1f1b": _one_f_one_b_like,
    "interleaved": lambda P, m, V, c: (P - 1) / (V * m + P - 1),
    "looped-bfs": lambda P, m, V, c: (P - 1) / (V * m + P - 1),
    "zb-h1": _zb_h1,
    "dualpipev": _dualpipev,
    "v-min": _v_shape(lambda P: 4 * P - 5 + (2 if P % 3 == 0 else 0)),
    "v-half": _v_shape(lambda P: (7 * P - 7 + (3 if P % 2 == 0 else 0)) / 2),
}

# The most micro-batches' activations a rank holds at once, as the papers count
# them: a whole stage's worth each (a chunk-micro-batch of a V is half of one).
# Valid for m >= P, when the steady state is reached.
PEAK_MEMORY_FORMULAS = {
    "1f1b": lambda P: P,
    "zb-h1": lambda P: P,
    "zb-h2": lambda P: 2 * P - 1,
    "zbv": lambda P: P,
    "v-half": lambda P: (P + 2) // 2,
    "v-min": lambda P: (P + 4) // 3,
}


@without_gc      # a million actions at scale: see quiet_gc.py
def make_schedule(name, num_ranks, num_microbatches, chunks=None):
    """The compute actions of schedule `name` (not yet lowered)."""
    if name not in GENERATORS:
        raise ConfigError(f"unknown schedule {name!r}: choose from {', '.join(GENERATORS)}")
    if num_ranks < 1:
        raise ConfigError(f"need at least one pipeline rank, got {num_ranks}")
    if num_microbatches < 1:
        raise ConfigError(f"need at least one micro-batch, got {num_microbatches}")
    chunks = default_chunks(name) if chunks is None else chunks
    if default_chunks(name) == 1 and chunks != 1:
        several = [other for other in GENERATORS if default_chunks(other) > 1]
        raise ConfigError(f"schedule {name!r} has one stage per rank; --virtual-stages {chunks} "
                          f"needs {', '.join(several[:-1])} or {several[-1]}")
    return GENERATORS[name].build(num_ranks, num_microbatches, chunks)


def validated_schedule(name, num_ranks, num_microbatches, chunks=None):
    """make_schedule + validate: the lowered lists the engine runs."""
    return validate(make_schedule(name, num_ranks, num_microbatches, chunks))


__all__ = ["Action", "Schedule", "GENERATORS", "BUBBLE_FORMULAS", "PEAK_MEMORY_FORMULAS", "default_chunks",
           "make_schedule", "lower", "validate", "validated_schedule", "read_schedule_file",
           "schedule_from_file", "write_schedule_file"]
