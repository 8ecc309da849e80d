"""Checks of exercises 1 to 5: schedules as data, the bubble, Comm.Split colours, a partition."""

import itertools
import math
import numbers

from mpipipe.comm.topology import world_rank_of
from mpipipe.errors import ConfigError, ScheduleError
from mpipipe.plan.partition import explicit
from mpipipe.plan.simulate import peak_stash, simulate
from mpipipe.schedules import make_schedule, validate
from mpipipe.schedules.actions import Action, Schedule

from .base import Wrong, call, call_text, short

# -- ex1 and ex2: schedules as data ---------------------------------------------------------

# (num_ranks, num_microbatches): the common cases first, so the first failure
# the student reads is a typical one; the corners (one rank, m < P) last.
SCHEDULE_SIZES = [(4, 8), (2, 2), (3, 5), (8, 8), (5, 12), (1, 1), (1, 4), (4, 2), (8, 3)]


def student_schedule(module, function_name, P, m):
    """The student's action lists as a Schedule, or Wrong if they are not lists of Actions."""
    text = call_text(function_name, (P, m))
    programs = call(module, function_name, P, m)
    if not isinstance(programs, (list, tuple)) or len(programs) != P:
        raise Wrong(f"{text} returned {short(programs)}: expected a list of {P} lists, "
                    f"one per rank")
    for rank, program in enumerate(programs):
        if not isinstance(program, (list, tuple)):
            raise Wrong(f"{text}: the entry for rank {rank} is {short(program)}, "
                        f"not a list of Actions")
        for index, action in enumerate(program):
            if not isinstance(action, Action):
                raise Wrong(f"{text}: action #{index} of rank {rank} is {short(action)}, not an "
                            f"Action: write Action(\"F\", 0) or Action(\"BW\", 0)")
            if not all(isinstance(n, numbers.Integral) for n in (action.microbatch, action.chunk)):
                raise Wrong(f"{text}: action #{index} of rank {rank} is {action!r}: its "
                            f"micro-batch must be a whole number")
    return Schedule(function_name, P, m, [list(program) for program in programs])


def runs_without_deadlock(function_name):
    """validate(): every F and BW once per micro-batch, and no rank waits forever for a message."""
    def check(module):
        for P, m in SCHEDULE_SIZES:
            schedule = student_schedule(module, function_name, P, m)
            try:
                validate(schedule)
            except ScheduleError as error:
                raise Wrong(f"{call_text(function_name, (P, m))}: {error}") from None
    return check


def gpipe_runs_all_forwards_first(module):
    for P, m in SCHEDULE_SIZES:
        schedule = student_schedule(module, "gpipe_actions", P, m)
        for rank, program in enumerate(schedule.programs):
            last_forward = max(i for i, action in enumerate(program) if action.kind == "F")
            first_backward = min(i for i, action in enumerate(program) if action.kind != "F")
            if first_backward < last_forward:
                raise Wrong(f"gpipe_actions({P}, {m}): rank {rank} runs "
                            f"{program[first_backward]} (action #{first_backward}) before "
                            f"{program[last_forward]}; GPipe runs all {m} forwards first, "
                            f"then the backwards")


def one_f_one_b_memory(module):
    """1F1B's point: rank r holds at most min(P - r, m) micro-batches' activations."""
    for P, m in SCHEDULE_SIZES:
        schedule = student_schedule(module, "one_f_one_b_actions", P, m)
        for rank, peak in enumerate(peak_stash(schedule)):
            allowed = min(P - rank, m)
            if peak > allowed:
                raise Wrong(f"one_f_one_b_actions({P}, {m}): your 1F1B keeps {peak} activations "
                            f"on stage {rank}, at most {allowed} allowed (min(P - rank, m)): start "
                            f"the backwards after P - 1 - rank warm-up forwards")


def idles_like_the_textbook(function_name):
    """Simulated with unit costs, the step idles (P-1)/(m+P-1) of the time, GPipe's bubble."""
    def check(module):
        for P, m in SCHEDULE_SIZES:
            schedule = student_schedule(module, function_name, P, m)
            idle = simulate(schedule).bubble_fraction
            expected = (P - 1) / (m + P - 1)
            if not math.isclose(idle, expected, rel_tol=1e-9, abs_tol=1e-12):
                raise Wrong(f"{call_text(function_name, (P, m))}: the ranks idle {idle:.4f} of "
                            f"the step; the textbook's (P-1)/(m+P-1) is {expected:.4f}: some rank "
                            f"waits longer than it must (run the actions in the order their "
                            f"inputs arrive)")
    return check


# -- ex3: the bubble --------------------------------------------------------------------------

BUBBLE_SIZES = [(4, 8), (2, 2), (1, 1), (1, 8), (8, 1), (3, 5), (8, 32), (16, 4)]


def bubble_matches_the_simulator(module):
    """The reference is measured, not a formula: mpipipe's GPipe schedule, simulated."""
    for P, m in BUBBLE_SIZES:
        got = call(module, "bubble_fraction", P, m)
        expected = simulate(make_schedule("gpipe", P, m)).bubble_fraction
        if not isinstance(got, numbers.Real) or isinstance(got, bool):
            raise Wrong(f"bubble_fraction({P}, {m}) returned {short(got)}, expected a number "
                        f"like {expected:.4g}")
        if not math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12):
            raise Wrong(f"bubble_fraction({P}, {m}) returned {got:.4g}, expected {expected:.4g}")


# -- ex4: the Comm.Split colours --------------------------------------------------------------

GRIDS = [(4, 2), (2, 2), (2, 3), (3, 4), (1, 4), (4, 1), (1, 1)]   # (pp, dp)


def colours_group(function_name, communicator):
    """Ranks with equal colours share a communicator; check who ends up with whom.

    communicator: "pipeline" (the stages of one replica) or "data" (one stage
    of every replica). Any colour numbers will do, only the grouping counts.
    """
    def check(module):
        for pp, dp in GRIDS:
            place = {world_rank_of(s, d, pp): (s, d) for s in range(pp) for d in range(dp)}
            colour = {}
            for rank in range(pp * dp):
                value = call(module, function_name, rank, pp, dp)
                if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
                    raise Wrong(f"{call_text(function_name, (rank, pp, dp))} returned "
                                f"{short(value)}: a colour must be a whole number >= 0")
                colour[rank] = value
            for a, b in itertools.combinations(range(pp * dp), 2):
                problem = grouping_problem(communicator, a, b, place, colour)
                if problem:
                    raise Wrong(f"{function_name}(world_rank, pp={pp}, dp={dp}) gives {problem}")
    return check


def grouping_problem(communicator, a, b, place, colour):
    (stage_a, replica_a), (stage_b, replica_b) = place[a], place[b]
    if communicator == "pipeline":
        together = replica_a == replica_b
        why = f"both are stages of replica {replica_a}: they must share a pipeline communicator"
        why_not = (f"rank {a} is in replica {replica_a} and rank {b} in replica {replica_b}: a "
                   f"pipeline communicator holds the stages of one replica only")
    else:
        together = stage_a == stage_b
        why = (f"both hold stage {stage_a}: they must share a data-parallel communicator "
               f"(to average that stage's gradients)")
        why_not = (f"rank {a} holds stage {stage_a} and rank {b} stage {stage_b}: a data-parallel "
                   f"communicator holds one stage of every replica")
    if together and colour[a] != colour[b]:
        return f"world ranks {a} and {b} different colours ({colour[a]} and {colour[b]}), but {why}"
    if not together and colour[a] == colour[b]:
        return f"world ranks {a} and {b} the same colour {colour[a]}, but {why_not}"
    return None


# -- ex5: balanced partition ------------------------------------------------------------------

PARTITION_CASES = [
    ([10, 1, 1, 1, 1, 10], 3),
    ([4, 4, 4, 4, 4, 4, 4, 4], 4),
    ([1, 2, 3, 4, 5, 6, 7, 8], 3),
    ([1, 1, 1, 100, 1, 1], 3),
    ([5, 1, 1, 1, 1, 1, 1, 1, 1, 9], 4),
    ([2, 9, 2, 9, 2, 9, 2, 9, 2, 9, 2, 9], 5),
    ([5, 2, 6, 9], 2),                  # these three defeat "fill each stage to the average"
    ([7, 4, 2, 8, 1, 7, 7], 4),
    ([9, 6, 6, 8, 5], 3),
    ([3, 3, 3], 3),
    ([7], 1),
]


def student_partition(module, counts, num_stages):
    sizes = call(module, "balanced_partition", list(counts), num_stages)
    text = call_text("balanced_partition", (counts, num_stages))
    if not isinstance(sizes, (list, tuple)) or not all(
            isinstance(size, numbers.Integral) and not isinstance(size, bool) for size in sizes):
        raise Wrong(f"{text} returned {short(sizes)}: expected a list of whole numbers, the "
                    f"number of blocks of each stage")
    try:
        explicit(sizes, len(counts), num_stages)
    except ConfigError as error:
        raise Wrong(f"{text} returned {list(sizes)}: {error}") from None
    return list(sizes)


def partition_is_a_split(module):
    for counts, num_stages in PARTITION_CASES:
        student_partition(module, counts, num_stages)


def partition_is_balanced(module):
    for counts, num_stages in PARTITION_CASES:
        sizes = student_partition(module, counts, num_stages)
        best, best_sizes = lightest_split(counts, num_stages)
        got = max(stage_loads(counts, sizes))
        if got > best:
            text = call_text("balanced_partition", (counts, num_stages))
            raise Wrong(f"{text} returned {sizes}, whose heaviest stage has {got} parameters; "
                        f"{best_sizes} gets it down to {best}")


def stage_loads(counts, sizes):
    """[1, 2, 3, 4], [1, 3] -> [1, 9]: the parameters of each stage."""
    loads, start = [], 0
    for size in sizes:
        loads.append(sum(counts[start:start + size]))
        start += size
    return loads


def lightest_split(counts, num_stages):
    """(heaviest stage, sizes) of the best split, by trying every set of cut points."""
    best = None
    for cuts in itertools.combinations(range(1, len(counts)), num_stages - 1):
        edges = (0,) + cuts + (len(counts),)
        sizes = [end - start for start, end in zip(edges, edges[1:])]
        heaviest = max(stage_loads(counts, sizes))
        if best is None or heaviest < best[0]:
            best = (heaviest, sizes)
    return best
