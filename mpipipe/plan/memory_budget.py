"""--memory-budget N: the shortest split-backward schedule whose stash fits N.

The zero-bubble family trades activation memory for bubble: ZB-H2 and ZB-V
hold up to 2P-1 and P micro-batches' activations per rank and almost never
idle; ZB-H1 holds P; V-Half (P+2)//2 and V-Min (P+4)//3 idle more. Given a
budget (micro-batches' activations per rank, a whole stage's each: a V's
chunk-micro-batch counts half), plan each of them, keep those whose fullest
rank fits, and take the one whose flushed step is shortest under the costs.
"""

from mpipipe.errors import ConfigError
from mpipipe.schedules import PEAK_MEMORY_FORMULAS, validated_schedule
from .simulate import Costs, peak_stash, simulate

FAMILY = ("zb-h2", "zbv", "zb-h1", "v-half", "v-min")


def peak_micro_batches(schedule):
    """The fullest rank's stash in micro-batches' activations of a whole stage."""
    return max(peak_stash(schedule), default=0) / schedule.chunks


def fitting(num_ranks, num_microbatches, budget, costs=Costs()):
    """(makespan, peak, name) of each family schedule that fits, shortest first."""
    fits = []
    for name in FAMILY:
        schedule = validated_schedule(name, num_ranks, num_microbatches)
        peak = peak_micro_batches(schedule)
        if peak <= budget:
            fits.append((simulate(schedule, costs).makespan, peak, name))
    return sorted(fits)


def pick_schedule(num_ranks, num_microbatches, budget, costs=Costs()):
    """The name of the shortest family schedule that fits `budget`; ConfigError if none."""
    if budget < 1:
        raise ConfigError(f"--memory-budget must be at least 1 micro-batch, got {budget}")
    fits = fitting(num_ranks, num_microbatches, budget, costs)
    if not fits:
        least = min(FAMILY, key=lambda name: PEAK_MEMORY_FORMULAS[name](num_ranks))
        needs = peak_micro_batches(validated_schedule(least, num_ranks, num_microbatches))
        raise ConfigError(
            f"no schedule of {', '.join(FAMILY)} fits --memory-budget {budget} at "
            f"{num_ranks} ranks and {num_microbatches} micro-batches: the least memory is "
            f"{least}'s {needs:g} micro-batches' activations per rank; allow that much, or "
            f"use fewer pipeline ranks")
    return fits[0][2]
