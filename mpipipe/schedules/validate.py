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

from mpipipe.errors import ScheduleError
from .actions import BW, COMPUTE, MARKERS, MESSAGES, REDUCE_GRAD, STASH_RELEASE, B, F, W
from .lower import lower
from .quiet_gc import without_gc
from .walk import walk


def validate(schedule):
    """Return the lowered schedule if it is sound; raise ScheduleError if not."""
    lowered = checked_and_lowered(schedule)
    walk(lowered, keep_events=False)
    return lowered


def checked_and_lowered(schedule):
    """Check 1 (bookkeeping), then lower: what is left to prove is check 2, the walk.
    (plan.simulate.validated_plan makes the walk that times a schedule prove it too.)"""
    _check_bookkeeping(schedule)
    return lower(schedule)


# How often a micro-batch's (F, BW, B, W) may run on its stage: F once, and BW once or
# B and W once each (the order of actions.COMPUTE).
_COMPLETE = {(1, 1, 0, 0), (1, 0, 1, 1)}


@without_gc
def _check_bookkeeping(schedule):
    P, m, V = schedule.num_ranks, schedule.num_microbatches, schedule.chunks
    if len(schedule.programs) != P:
        raise ScheduleError(f"{len(schedule.programs)} action lists for {P} ranks")
    allowed = set(COMPUTE) | set(MARKERS) | (set(MESSAGES) if schedule.lowered else set())
    markers = set(MARKERS)
    for rank, program in enumerate(schedule.programs):
        # where each compute action first appears, and how often: [kind][chunk][micro-batch]
        first_at = {kind: [[None] * m for _ in range(V)] for kind in COMPUTE}
        count = {kind: [[0] * m for _ in range(V)] for kind in COMPUTE}
        for index, action in enumerate(program):
            kind, mb, chunk = action.kind, action.microbatch, action.chunk
            if (kind not in allowed or (kind not in markers and not 0 <= mb < m)
                    or not 0 <= chunk < V or action.pairs_with_next):
                _check_action(rank, program, index, allowed, markers, m, V)
            counts = count.get(kind)
            if counts is not None:
                if not counts[chunk][mb]:
                    first_at[kind][chunk][mb] = index
                counts[chunk][mb] += 1
        _check_order(rank, program, first_at, m, V)
        complete = all(counts in _COMPLETE for chunk in range(V)
                       for counts in zip(*(count[kind][chunk] for kind in COMPUTE)))
        if not complete:        # find the first micro-batch that is not, and say why
            for mb in range(m):
                for chunk in range(V):
                    _check_one(rank, mb, chunk, {kind: count[kind][chunk][mb] for kind in COMPUTE})
        _check_reductions(rank, program)


def _check_action(rank, program, index, allowed, markers, m, V):
    """The checks of one action that looks wrong (or is a pair), with the message."""
    action = program[index]
    where = f"rank {rank}, action #{index} {action}"
    if action.kind not in allowed:
        raise ScheduleError(f"{where}: unknown action kind {action.kind!r}", rank, action)
    if action.kind not in markers and not 0 <= action.microbatch < m:
        raise ScheduleError(f"{where}: micro-batch outside 0..{m - 1}", rank, action)
    if not 0 <= action.chunk < V:
        raise ScheduleError(f"{where}: chunk outside 0..{V - 1}", rank, action)
    if action.pairs_with_next and not (action.kind in COMPUTE and index + 1 < len(program)
                                       and program[index + 1].kind in COMPUTE):
        raise ScheduleError(f"{where}: an overlapped pair is two compute actions, one "
                            f"right after the other", rank, action)


def _check_order(rank, program, first_at, m, V):
    """On one rank: F before its backward, B before its W (the earliest offender is named)."""
    wrong = []
    for kind, needs in ((BW, F), (B, F), (W, B)):
        for chunk in range(V):
            mine, theirs = first_at[kind][chunk], first_at[needs][chunk]
            wrong += [(mine[mb], theirs[mb]) for mb in range(m) if mine[mb] is not None
                      and theirs[mb] is not None and theirs[mb] > mine[mb]]
    if wrong:
        index, later = min(wrong)
        raise ScheduleError(f"rank {rank} runs {program[index]} (action #{index}) before "
                            f"{program[later]} (action #{later}), which it needs",
                            rank, program[index])


def _check_one(rank, mb, chunk, count):
    if count[F] == 1 and (count[BW], count[B], count[W]) in ((1, 0, 0), (0, 1, 1)):
        return      # F once, and BW once or B and W once each: nothing to say
    label = f"{mb}:{chunk}" if chunk else f"{mb}"
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
