"""validate(): prove a schedule runs before any MPI call is made.

Two kinds of check, each failing with a message that names the rank and action:
  1. bookkeeping: every stage runs F and a backward (BW, or B then W) exactly
     once for every micro-batch, on the rank that holds it;
  2. progress: the lowered lists are walked as the engine would run them
     (see walk.py); every send must meet its receive and every rank must
     reach the end of its list. A rank that would wait forever is named with
     the message it waits for and what its peer is doing instead.
"""

from collections import Counter

from ..errors import ScheduleError
from .actions import BW, COMPUTE, MESSAGES, B, F, W
from .lower import lower
from .walk import walk


def validate(schedule):
    """Return the lowered schedule if it is sound; raise ScheduleError if not."""
    _check_bookkeeping(schedule)
    lowered = lower(schedule)
    walk(lowered)
    return lowered


def _check_bookkeeping(schedule):
    P, m, V = schedule.num_ranks, schedule.num_microbatches, schedule.chunks
    if len(schedule.programs) != P:
        raise ScheduleError(f"{len(schedule.programs)} action lists for {P} ranks")
    for rank, program in enumerate(schedule.programs):
        seen, first_at = Counter(), {}
        for index, action in enumerate(program):
            where = f"rank {rank}, action #{index} {action}"
            if action.kind not in COMPUTE and not (schedule.lowered and action.kind in MESSAGES):
                raise ScheduleError(f"{where}: unknown action kind {action.kind!r}")
            if not 0 <= action.microbatch < m:
                raise ScheduleError(f"{where}: micro-batch outside 0..{m - 1}")
            if not 0 <= action.chunk < V:
                raise ScheduleError(f"{where}: chunk outside 0..{V - 1}")
            if action.kind in COMPUTE:
                seen[action.kind, action.microbatch, action.chunk] += 1
                first_at.setdefault((action.kind, action.microbatch, action.chunk), index)
        _check_order(rank, program, first_at)
        for mb in range(m):
            for chunk in range(V):
                _check_one(rank, mb, chunk, seen)


def _check_order(rank, program, first_at):
    """On one rank: F before its backward, B before its W."""
    for (kind, mb, chunk), index in first_at.items():
        needs = {BW: F, B: F, W: B}.get(kind)
        if needs and first_at.get((needs, mb, chunk), -1) > index:
            later = first_at[needs, mb, chunk]
            raise ScheduleError(f"rank {rank} runs {program[index]} (action #{index}) before "
                                f"{program[later]} (action #{later}), which it needs")


def _check_one(rank, mb, chunk, seen):
    label = f"{mb}:{chunk}" if chunk else f"{mb}"
    count = {kind: seen[kind, mb, chunk] for kind in (F, BW, B, W)}
    problem = None
    if count[F] != 1:
        problem = f"runs F{label} {count[F]} times (must be once)"
    elif count[BW] and (count[B] or count[W]):
        problem = f"mixes BW{label} with split B/W for the same micro-batch"
    elif count[BW] == 0 and not (count[B] == 1 and count[W] == 1):
        problem = f"has no complete backward of micro-batch {label} (BW{label}, or B{label} and W{label})"
    elif count[BW] > 1:
        problem = f"runs BW{label} {count[BW]} times (must be once)"
    if problem:
        raise ScheduleError(f"rank {rank} {problem}")
