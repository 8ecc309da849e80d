"""Checks of exercise 9: ZB-H1, where each rank puts its W's.

The references: validate() (the lists run, every backward split in B and W),
1F1B's peak memory min(P, m), and the bubble the zero-bubble paper gives ZB-H1,
(P-1)(F+B-W) per rank, against the simulator playing out the student's lists
under several costs.
"""

from mpipipe.errors import ScheduleError
from mpipipe.plan.simulate import Costs, peak_stash, simulate
from mpipipe.schedules import validate
from mpipipe.schedules.actions import BW

from .base import Wrong
from .schedule_checks import SCHEDULE_SIZES, student_schedule

# ZB-H1's bubble is (P-1)(F+B-W) where a W is no dearer than an F or a B
COSTS = [Costs(F=1, B=1, W=1), Costs(F=1, B=1, W=0.5), Costs(F=1, B=2, W=1),
         Costs(F=2, B=1, W=1)]


def zb_schedule(module, P, m):
    return student_schedule(module, "zb_h1_actions", P, m)


def splits_and_runs(module):
    for P, m in SCHEDULE_SIZES:
        schedule = zb_schedule(module, P, m)
        for rank, program in enumerate(schedule.programs):
            fused = next((a for a in program if a.kind == BW), None)
            if fused:
                raise Wrong(f"zb_h1_actions({P}, {m}): rank {rank} runs {fused}; zero bubble "
                            f"splits every backward in two: Action(\"B\", {fused.microbatch}) "
                            f"(the input gradient) and Action(\"W\", {fused.microbatch}) (the "
                            f"weight gradient)")
        try:
            validate(schedule)
        except ScheduleError as error:
            raise Wrong(f"zb_h1_actions({P}, {m}): {error}") from None


def keeps_1f1b_memory(module):
    """A micro-batch is held from its F to its W; ZB-H1 holds no more than 1F1B's rank 0."""
    for P, m in SCHEDULE_SIZES:
        for rank, held in enumerate(peak_stash(zb_schedule(module, P, m))):
            allowed = min(P, m)
            if held > allowed:
                raise Wrong(f"zb_h1_actions({P}, {m}): rank {rank} holds {held} micro-batches "
                            f"at once (from F to W), at most {allowed} allowed (1F1B's peak, "
                            f"min(P, m)): it holds back more W's than it needs to")


def bubble_falls_to_zb_h1s(module):
    for P, m in SCHEDULE_SIZES:
        if m < P:    # the formula assumes a steady state (m >= P)
            continue
        schedule = zb_schedule(module, P, m)
        for costs in COSTS:
            timeline = simulate(schedule, costs)
            idle = timeline.makespan - m * (costs.F + costs.B + costs.W)   # the same on every rank
            expected = (P - 1) * (costs.F + costs.B - costs.W)
            if idle > expected + 1e-9 * max(1.0, expected):
                raise Wrong(f"zb_h1_actions({P}, {m}) with F={costs.F:g}, B={costs.B:g}, "
                            f"W={costs.W:g}: each rank idles {idle:g}, ZB-H1's (P-1)(F+B-W) is "
                            f"{expected:g}: at the end of the step a gradient should climb from "
                            f"the last rank to the first one B per rank, with the W's a rank "
                            f"held back filling the time it would otherwise wait")
