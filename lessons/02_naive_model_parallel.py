"""Lesson 2: naive model parallelism. One batch, the stages take turns.

    .venv/bin/mpiexec -n 4 .venv/bin/python lessons/02_naive_model_parallel.py

The model's 8 layers are split over the ranks. The whole batch goes forward
through rank 0, then rank 1, ..., then backward in reverse. Only one rank
works at any moment, so each rank idles (P-1)/P of the step.
"""

from _checks import Checks
from _common import OUT, WORLD, activation_bytes, main_guard, need_ranks, say, train
from _figures import draw
from mpipipe.schedules import validated_schedule
from mpipipe.plan.simulate import simulate
from mpipipe.plan.timeline import render

BATCH, LAYERS = 256, 8


def main():
    need_ranks(2)
    P = WORLD.Get_size()
    checks = Checks()
    r = train(schedule="naive", microbatches=1, check=True)
    s = r.summary
    checks.bubble(dict(P=P), r)
    checks.equivalence(dict(P=P), s)
    for rank in range(P):      # one batch in flight: each rank keeps its layers' activations once
        checks.exact("stash", dict(rank=rank), s.peak_stash[rank], 1)
        checks.exact("memory", dict(rank=rank), s.peak_stash_bytes[rank],
                     activation_bytes(LAYERS // P, BATCH))
    if WORLD.Get_rank() == 0:
        plan = simulate(validated_schedule("naive", P, 1))
        say(f"naive model parallelism on {P} ranks, {LAYERS // P} of the {LAYERS} layers each, "
            f"one batch of {BATCH}:",
            f"  formula (P-1)/P = {(P - 1) / P:.3f}", *r.explain(),
            draw(f"{OUT}/02_naive_model_parallel.png", r, f"naive, P={P}"),
            f"  activations kept per rank: {' '.join(f'{b // 1024}' for b in s.peak_stash_bytes)}"
            " KiB (the whole batch through its layers)",
            "", "the step as it ran (only one rank busy at a time):", s.timeline,
            "", "the plan, in units of one forward:",
            render(plan.events, P, plan.makespan), "",
            f"answer: with {P} ranks each one idles {(P - 1) / P:.3f} of the step by the formula;"
            f" measured {r.bubble:.3f}.", "")
    checks.finish()


if __name__ == "__main__":
    main_guard(main)
