"""validate(): prove a schedule runs before any MPI call is made.

Two kinds of check, each failing with a message that names the rank and action:
  1. bookkeeping: every stage runs F and a backward (BW, or B then W) exactly
     once for every micro-batch, on the rank that holds it; an overlapped pair
     is two compute actions; a REDUCE_GRAD marker comes after the last backward
     of its chunk;
  2. progress: the lowered lists are walked as the engine would run them
     (see walk.py); every send must meet its receive and every rank must
     reach the end of its list. A rank that would wait forever is named with
     the message it waits for and what its peer is doing instead.
"""

from collections import Counter

from ..errors import ScheduleError
from .actions import BW, COMPUTE, MARKERS, MESSAGES, REDUCE_GRAD, STASH_RELEASE, B, F, W
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
            known = action.kind in COMPUTE or action.kind in MARKERS or (
                schedule.lowered and action.kind in MESSAGES)
            if not known:
                raise ScheduleError(f"{where}: unknown action kind {action.kind!r}", rank, action)
            if action.kind not in MARKERS and not 0 <= action.microbatch < m:
                raise ScheduleError(f"{where}: micro-batch outside 0..{m - 1}", rank, action)
            if not 0 <= action.chunk < V:
                raise ScheduleError(f"{where}: chunk outside 0..{V - 1}", rank, action)
            if action.pairs_with_next and not (action.kind in COMPUTE and index + 1 < len(program)
                                               and program[index + 1].kind in COMPUTE):
                raise ScheduleError(f"{where}: an overlapped pair is two compute actions, one "
                                    f"right after the other", rank, action)
            if action.kind in COMPUTE:
                seen[action.kind, action.microbatch, action.chunk] += 1
                first_at.setdefault((action.kind, action.microbatch, action.chunk), index)
        _check_order(rank, program, first_at)
        for mb in range(m):
            for chunk in range(V):
                _check_one(rank, mb, chunk, seen)
        _check_reductions(rank, program)


def _check_order(rank, program, first_at):
    """On one rank: F before its backward, B before its W."""
    for (kind, mb, chunk), index in first_at.items():
        needs = {BW: F, B: F, W: B}.get(kind)
        if needs and first_at.get((needs, mb, chunk), -1) > index:
            later = first_at[needs, mb, chunk]
            raise ScheduleError(f"rank {rank} runs {program[index]} (action #{index}) before "
                                f"{program[later]} (action #{later}), which it needs",
                                rank, program[index])


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
        raise ScheduleError(f"rank {rank} {problem}", rank)


def _check_reductions(rank, program):
    """A chunk's REDUCE_GRAD (at most one) comes after every BW or W of that chunk."""
    reduced = {}
    for index, action in enumerate(program):
        if action.kind == REDUCE_GRAD:
            if action.chunk in reduced:
                raise ScheduleError(f"rank {rank}, action #{index}: a second {action} (the first "
                                    f"is action #{reduced[action.chunk]})", rank, action)
            reduced[action.chunk] = index
        elif action.kind in STASH_RELEASE and action.chunk in reduced:
            raise ScheduleError(f"rank {rank}: {program[reduced[action.chunk]]} (action "
                                f"#{reduced[action.chunk]}) comes before {action} (action "
                                f"#{index}): the reduction would miss its gradient",
                                rank, program[reduced[action.chunk]])
