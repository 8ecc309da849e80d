"""Lesson 7: zero bubble. Split the backward, fill the gaps with weight gradients.

    mpiexec -n 2 python lessons/07_zero_bubble.py

The backward is two jobs: B, the input gradient the previous stage is waiting
for, and W, the weight gradient only the optimizer needs. ZB-H1 sends every B
on at once and runs the W's in what were 1F1B's idle gaps: bubble per rank
(P-1)(F+B-W) instead of (P-1)(F+B+W). ZB-H2 holds more activations (2P-1) to
also fill the warm-up: its steady state has no bubble at all, but within one
flushed step the edges stay (see the simulator's "steady state"). DualPipeV
(DeepSeek) puts two chunks per rank in a V like ZB-V and runs a forward and the
other chunk's backward as a pair (F&B), drawn with '&'.
"""

from _common import WORLD, main_guard, need_ranks, say, train
from mpipipe.schedules import validated_schedule
from mpipipe.simulate import simulate, steady_state


def main():
    need_ranks(2)
    P, m = WORLD.Get_size(), 8
    lines = [f"{'schedule':>9} {'planned':>8} {'steady':>7} {'measured':>9} {'stash':>6}"]
    for schedule in ("1f1b", "zb-h1", "zb-h2", "zbv", "dualpipev"):
        schedule_plan = validated_schedule(schedule, P, m)
        planned = simulate(schedule_plan).bubble_fraction
        steady = steady_state(schedule_plan)[1]
        r = train(schedule=schedule, microbatches=m)
        lines.append(f"{schedule:>9} {planned:>8.3f} {steady:>7.3f} "
                     f"{r.bubble_fraction:>9.3f} {r.peak_stash[0]:>6}")
        if schedule == "zb-h1":
            picture = r.timeline
        if schedule == "dualpipev":
            pairs = r.timeline
    say(f"{P} ranks, m = {m}; planned with F = B = W:", *lines, "",
        "planned: one flushed step; steady: steps back to back (only ZB-H2 reaches 0);",
        "stash: micro-batches (zbv, dualpipev: half-size chunks) held by rank 0 at the peak.",
        "", "zb-h1 as it ran (W's fill the gaps):", picture, "",
        "dualpipev as it ran (F7&bw3: a forward and the other chunk's backward, a pair):", pairs)


if __name__ == "__main__":
    main_guard(main)
