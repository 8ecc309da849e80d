"""Lesson 2: naive model parallelism. One batch, the stages take turns.

    mpiexec -n 4 python lessons/02_naive_model_parallel.py

The model's 8 layers are split over the ranks. The whole batch goes forward
through rank 0, then rank 1, ..., then backward in reverse. Only one rank
works at any moment, so each rank idles (P-1)/P of the step.
"""

from _common import main_guard, need_ranks, say, train, WORLD
from mpipipe.simulate import simulate
from mpipipe.schedules import validated_schedule


def main():
    need_ranks(2)
    P = WORLD.Get_size()
    result = train(schedule="naive", microbatches=1)
    formula = (P - 1) / P
    say(f"naive model parallelism on {P} ranks, one batch of {result.global_batch}:",
        f"  idle fraction (bubble) measured {result.bubble_fraction:.3f}, "
        f"formula (P-1)/P = {formula:.3f}",
        "", "the step as it ran (only one rank busy at a time):", result.timeline,
        "", "the plan, in units of one forward:",
        _plan(P))


def _plan(P):
    from mpipipe.timeline import render

    timeline = simulate(validated_schedule("naive", P, 1))
    return render(timeline.events, P, timeline.makespan)


if __name__ == "__main__":
    main_guard(main)
