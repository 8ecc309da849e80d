"""Lesson 5: activation recomputation. Trade compute for memory.

    mpiexec -n 2 python lessons/05_recompute.py

With --recompute a stage keeps only its input per micro-batch and runs its
forward again right before the backward. Memory falls to one activation per
micro-batch per stage; each backward costs one extra forward (about a third
more compute when the backward is twice the forward).
"""

from _common import main_guard, need_ranks, say, train


def main():
    need_ranks(2)
    lines = [f"{'schedule':>9} {'recompute':>10} {'stash KiB rank 0':>17} {'step ms':>8}"]
    for schedule in ("gpipe", "1f1b"):
        for recompute in (False, True):
            r = train(schedule=schedule, microbatches=8, recompute=recompute)
            lines.append(f"{schedule:>9} {str(recompute):>10} "
                         f"{r.peak_stash_bytes[0] / 1024:>17.0f} {r.step_time_s * 1e3:>8.1f}")
            if recompute and schedule == "1f1b":
                picture = r.timeline
    say("activation memory against time (m = 8):", *lines, "",
        "1F1B with --recompute, as it ran (R: the repeated forward before each backward):",
        picture)


if __name__ == "__main__":
    main_guard(main)
