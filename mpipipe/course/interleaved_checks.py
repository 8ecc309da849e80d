"""Checks of exercise 8: the interleaved schedule's placement and warm-up.

The references: the placement every mpipipe Schedule uses (actions.py: stage
chunk * P + rank on (rank, chunk)); the forward order of mpipipe's interleaved
schedule; its bubble (P-1)/(V m + P-1) by the simulator; and, with messages
that take time, its step time and its peak stash.
"""

import math
import numbers

from mpipipe.errors import ScheduleError
from mpipipe.plan.simulate import Costs, simulate
from mpipipe.schedules import make_schedule, validate
from mpipipe.schedules.actions import BW, F, Action, Schedule

from .base import Wrong, call, call_text, short

PLACEMENTS = [(4, 2), (2, 2), (3, 3), (1, 2), (8, 2), (2, 4), (4, 1)]   # (P, V)
# (P, m, V), m a multiple of P as the interleaved schedule needs
INTERLEAVED_SIZES = [(4, 8, 2), (2, 4, 2), (3, 6, 3), (2, 8, 4), (4, 4, 2), (8, 16, 2),
                     (1, 3, 2), (4, 12, 3)]
SLOW_MESSAGES = Costs(comm=0.25)   # a message takes a quarter of a forward


def is_whole(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def holds_the_right_stages(module):
    for P, V in PLACEMENTS:
        reference = Schedule("placement", P, P, [[] for _ in range(P)], chunks=V)
        for stage in range(P * V):
            got = call(module, "rank_and_chunk", stage, P)
            text = call_text("rank_and_chunk", (stage, P))
            if not (isinstance(got, (tuple, list)) and len(got) == 2 and all(map(is_whole, got))):
                raise Wrong(f"{text} returned {short(got)}: expected a pair of whole numbers, "
                            f"(rank, chunk)")
            rank, chunk = reference.place(stage)
            if tuple(got) != (rank, chunk):
                raise Wrong(f"{text} returned {tuple(got)}; with {P} ranks stage {stage} lives on "
                            f"rank {rank} as its chunk {chunk}: a micro-batch goes through the "
                            f"chunks 0 of ranks 0..{P - 1}, then their chunks 1, and so on")


def reference_orders(P, m, V):
    """(forwards, backwards) of mpipipe's interleaved schedule as (micro-batch, chunk) pairs,
    in the order every rank runs them."""
    program = make_schedule("interleaved", P, m, V).programs[0]
    return ([(a.microbatch, a.chunk) for a in program if a.kind == F],
            [(a.microbatch, a.chunk) for a in program if a.kind == BW])


def student_warmup(module, rank, P, m, V):
    text = call_text("warmup", (rank, P, m, V))
    got = call(module, "warmup", rank, P, m, V)
    if not isinstance(got, (list, tuple)) or not all(
            isinstance(pair, (list, tuple)) and len(pair) == 2 and all(map(is_whole, pair))
            for pair in got):
        raise Wrong(f"{text} returned {short(got)}: expected a list of (micro-batch, chunk) "
                    f"pairs")
    return [tuple(pair) for pair in got]


def warmup_in_order(module):
    for P, m, V in INTERLEAVED_SIZES:
        forwards, _ = reference_orders(P, m, V)
        for rank in range(P):
            got = student_warmup(module, rank, P, m, V)
            text = call_text("warmup", (rank, P, m, V))
            if len(got) > len(forwards):
                raise Wrong(f"{text} has {len(got)} forwards; the rank runs only m x V = "
                            f"{len(forwards)} in the whole step")
            for i, (pair, expected) in enumerate(zip(got, forwards)):
                if pair != expected:
                    raise Wrong(f"{text}: forward #{i} is micro-batch {pair[0]} on chunk "
                                f"{pair[1]}, expected micro-batch {expected[0]} on chunk "
                                f"{expected[1]}: the micro-batches go in groups of P = {P}, "
                                f"the group through chunk 0, the same group through chunk 1, "
                                f"..., then the next group")


def interleaved_with(warmups, P, m, V):
    """mpipipe's interleaved schedule, but with the given warm-ups: rank r runs
    len(warmups[r]) forwards, then one forward one backward, then the backwards left."""
    forwards, backwards = reference_orders(P, m, V)
    programs = []
    for rank in range(P):
        w = len(warmups[rank])
        program = [Action(F, mb, c) for mb, c in forwards[:w]]
        for (f_mb, f_c), (b_mb, b_c) in zip(forwards[w:], backwards):
            program += [Action(F, f_mb, f_c), Action(BW, b_mb, b_c)]
        program += [Action(BW, mb, c) for mb, c in backwards[len(forwards) - w:]]
        programs.append(program)
    return Schedule("interleaved", P, m, programs, chunks=V)


def textbook_warmup(rank, P, m, V):
    return min(m * V, 2 * (P - 1 - rank) + (V - 1) * P)


def warmup_length(module):
    """The whole schedule built on the student's warm-ups: it runs, idles as the formula
    says, holds no more than it needs, and keeps pace when messages take time."""
    for P, m, V in INTERLEAVED_SIZES:
        warmups = [student_warmup(module, rank, P, m, V) for rank in range(P)]
        lengths = [len(w) for w in warmups]
        text = f"interleaved({P}, {m}, {V}) with your warm-ups, {lengths} forwards"
        schedule = interleaved_with(warmups, P, m, V)
        try:
            validate(schedule)
        except ScheduleError as error:
            raise Wrong(f"{text}: {error}") from None
        bubble = simulate(schedule).bubble_fraction
        formula = (P - 1) / (V * m + P - 1)
        if not math.isclose(bubble, formula, rel_tol=1e-9, abs_tol=1e-12):
            raise Wrong(f"{text}: the ranks idle {bubble:.4f} of the step, the formula "
                        f"(P-1)/(V m + P-1) gives {formula:.4f}")
        reference = make_schedule("interleaved", P, m, V)
        for rank, (held, needed) in enumerate(zip(simulate(schedule).peak_stash,
                                                  simulate(reference).peak_stash)):
            if held > needed:
                raise Wrong(f"{text}: rank {rank} holds the activations of {held} forwards at "
                            f"once, {needed} are enough for the same step time: its warm-up is "
                            f"longer than it needs to be")
        yours, best = (simulate(s, SLOW_MESSAGES).makespan for s in (schedule, reference))
        if yours > best + 1e-9:
            short_rank = next((r for r in range(P) if lengths[r] < textbook_warmup(r, P, m, V)),
                              None)
            who = "some rank" if short_rank is None else f"rank {short_rank}"
            raise Wrong(f"{text}: when a message takes a quarter of a forward, the step takes "
                        f"{yours:g} instead of {best:g}: {who}'s first backward waits for its "
                        f"gradient's round trip; a longer warm-up keeps it busy meanwhile")
