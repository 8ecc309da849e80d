"""Lesson 4: 1F1B. The same bubble as GPipe, a fraction of the memory.

    mpiexec -n 2 python lessons/04_one_f_one_b.py

After a short warm-up each rank alternates one forward and one backward, so a
micro-batch's activations are freed as soon as a new one arrives: rank r never
holds more than min(P - r, m) micro-batches, whatever m is.
"""

from _common import WORLD, main_guard, need_ranks, say, train


def main():
    need_ranks(2)
    P = WORLD.Get_size()
    lines = [f"{'m':>4} {'schedule':>9} {'bubble':>7} {'formula':>8} {'stash per rank':>16} {'KiB rank 0':>11}"]
    for m in (4, 8, 16):
        for schedule in ("gpipe", "1f1b"):
            r = train(schedule=schedule, microbatches=m)
            lines.append(f"{m:>4} {schedule:>9} {r.bubble_fraction:>7.3f} "
                         f"{(P - 1) / (m + P - 1):>8.3f} {' '.join(map(str, r.peak_stash)):>16} "
                         f"{r.peak_stash_bytes[0] / 1024:>11.0f}")
            if m == 8 and schedule == "1f1b":
                picture = r.timeline
    say(f"GPipe and 1F1B side by side on {P} ranks:", *lines,
        "", f"1F1B's stash is min(P - rank, m) = {[min(P - s, 16) for s in range(P)]} at m = 16;",
        "GPipe's is m on every rank.", "", "1F1B, m = 8, as it ran:", picture)


if __name__ == "__main__":
    main_guard(main)
