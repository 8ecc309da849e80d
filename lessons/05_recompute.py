"""Lesson 5: activation recomputation. Trade compute for memory.

    .venv/bin/mpiexec -n 2 .venv/bin/python lessons/05_recompute.py

With recompute a stage keeps only its input per micro-batch and runs its
forward again (R) right before the backward. Memory falls to one input per
micro-batch per stage; each backward costs one extra forward.
"""

from _checks import Checks
from _common import (BYTES_PER_NUMBER, OUT, WORLD, activation_bytes, main_guard, need_ranks, say,
                     train)
from _figures import draw

BATCH, LAYERS, WIDTH, M = 256, 8, 512, 8


def held(schedule, P, rank):
    return M if schedule == "gpipe" else min(P - rank, M)


def kept_per_microbatch(P, recompute):
    """Bytes one micro-batch leaves on a stage until its backward."""
    if recompute:
        return (BATCH // M) * WIDTH * BYTES_PER_NUMBER      # the stage's input, nothing else
    return activation_bytes(LAYERS // P, BATCH // M)


def main():
    need_ranks(2)
    P = WORLD.Get_size()
    checks, runs = Checks(), {}
    lines = [f"{'schedule':>9} {'recompute':>9} {'textbook':>9} {'replay':>7} {'measured':>9} "
             f"{'step ms':>8} {'F ms':>6} {'R ms':>6} {'stash':>6} {'KiB':>11}"]
    for schedule in ("gpipe", "1f1b"):
        for recompute in (False, True):
            r = runs[schedule, recompute] = train(schedule=schedule, microbatches=M,
                                                  recompute=recompute, check=True)
            s = r.summary
            label = dict(schedule=schedule, recompute=recompute)
            checks.bubble(label, r)
            checks.equivalence(label, s)
            for rank in range(P):
                count = held(schedule, P, rank)
                checks.exact("stash", {**label, "rank": rank}, s.peak_stash[rank], count)
                checks.exact("memory", {**label, "rank": rank}, s.peak_stash_bytes[rank],
                             count * kept_per_microbatch(P, recompute))
            if WORLD.Get_rank() == 0:
                lines.append(f"{schedule:>9} {str(recompute):>9} {(P - 1) / (M + P - 1):>9.3f} "
                             f"{r.replay_bubble:>7.3f} {r.bubble:>9.3f} {r.step_ms:>8.1f} "
                             f"{r.time_in('F'):>6.1f} {r.time_in('R'):>6.1f} "
                             f"{' '.join(map(str, s.peak_stash)):>6} "
                             f"{' '.join(str(b // 1024) for b in s.peak_stash_bytes):>11}")
    if WORLD.Get_rank() == 0:
        plain, again = runs["1f1b", False], runs["1f1b", True]
        saved = plain.summary.peak_stash_bytes[0] / again.summary.peak_stash_bytes[0]
        say(f"activation memory against time, {P} ranks, m = {M} micro-batches of {BATCH // M}:",
            *lines, "F ms, R ms: per rank and step, the forwards and the repeated forwards; "
            "stash: micro-batches", "held at the peak, per rank; KiB: what they keep, per rank.",
            "", "1F1B with recompute in detail:", *again.explain(),
            draw(f"{OUT}/05_recompute.png", again, f"1f1b, P={P}, m={M}, recompute"), "",
            "1F1B with recompute, as it ran (R: the repeated forward before each backward):",
            again.summary.timeline, "",
            f"answer: recompute keeps {saved:.0f} times less on rank 0 "
            f"({plain.summary.peak_stash_bytes[0] // 1024} KiB -> "
            f"{again.summary.peak_stash_bytes[0] // 1024} KiB: {LAYERS // P} layers x 3 arrays ->"
            " the input alone),", f"and pays {again.time_in('R'):.1f} ms of repeated forwards "
            f"per rank and step, against {again.time_in('F'):.1f} ms of forwards: one forward "
            "more per micro-batch.", "")
    checks.finish()


if __name__ == "__main__":
    main_guard(main)
