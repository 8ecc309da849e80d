"""Lesson 6: interleaved virtual stages. A smaller bubble for more messages.

    mpiexec -n 2 python lessons/06_interleaved.py

Each rank holds V model chunks (rank r: stages r, r+P, ...), each 1/V of its
share. Warm-up and cool-down are made of chunk-sized steps, so the bubble
shrinks by V: bubble / work = (P-1)/(V m). Every micro-batch now crosses the
ranks V times, so there are V times as many messages.
"""

from _common import WORLD, main_guard, need_ranks, say, train
from mpipipe.schedules import validated_schedule


def messages(name, P, m, V):
    lowered = validated_schedule(name, P, m, V)
    return sum(a.kind.startswith("SEND") for program in lowered.programs for a in program)


def main():
    need_ranks(2)
    P, m = WORLD.Get_size(), 8
    lines = [f"{'schedule':>12} {'V':>2} {'bubble':>7} {'formula':>8} {'messages':>9}"]
    for schedule, V in (("1f1b", 1), ("interleaved", 2), ("interleaved", 4)):
        r = train(schedule=schedule, microbatches=m, chunks=V, layers=16)
        lines.append(f"{schedule:>12} {V:>2} {r.bubble_fraction:>7.3f} "
                     f"{(P - 1) / (V * m + P - 1):>8.3f} {messages(schedule, P, m, V):>9}")
        if V == 2:
            picture = r.timeline
    say(f"{P} ranks, m = {m}, 16 layers (formula: (P-1)/(Vm+P-1) of the step):", *lines, "",
        "interleaved, V = 2, as it ran (lower case: the second chunk):", picture)


if __name__ == "__main__":
    main_guard(main)
