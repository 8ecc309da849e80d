"""Lesson 4: 1F1B. The same bubble as GPipe, a fraction of the memory.

    .venv/bin/mpiexec -n 2 .venv/bin/python lessons/04_one_f_one_b.py

After a short warm-up each rank alternates one forward and one backward, so a
micro-batch's activations are freed as soon as a new one arrives: rank r never
holds more than min(P - r, m) micro-batches, whatever m is. GPipe holds m.
"""

from _checks import Checks
from _common import OUT, WORLD, activation_bytes, main_guard, need_ranks, say, train
from _figures import draw, web_page

BATCH, LAYERS = 256, 8


def held(schedule, P, m, rank):
    """Micro-batches rank `rank` holds at its peak: the formula."""
    return m if schedule == "gpipe" else min(P - rank, m)


def main():
    need_ranks(2)
    P = WORLD.Get_size()
    checks, runs = Checks(), {}
    lines = [f"{'m':>4} {'schedule':>9} {'textbook':>9} {'replay':>7} {'measured':>9} "
             f"{'step ms':>8} {'stash':>9} {'KiB':>12}"]
    for m in (4, 8, 16):
        for schedule in ("gpipe", "1f1b"):
            r = runs[schedule, m] = train(schedule=schedule, microbatches=m, check=True)
            s = r.summary
            checks.bubble(dict(schedule=schedule, m=m), r)
            checks.equivalence(dict(schedule=schedule, m=m), s)
            for rank in range(P):
                count = held(schedule, P, m, rank)
                checks.exact("stash", dict(schedule=schedule, m=m, rank=rank),
                             s.peak_stash[rank], count)
                checks.exact("memory", dict(schedule=schedule, m=m, rank=rank),
                             s.peak_stash_bytes[rank],
                             count * activation_bytes(LAYERS // P, BATCH // m))
            if WORLD.Get_rank() == 0:
                lines.append(f"{m:>4} {schedule:>9} {(P - 1) / (m + P - 1):>9.3f} "
                             f"{r.replay_bubble:>7.3f} {r.bubble:>9.3f} {r.step_ms:>8.1f} "
                             f"{' '.join(map(str, s.peak_stash)):>9} "
                             f"{' '.join(str(b // 1024) for b in s.peak_stash_bytes):>12}")
    if WORLD.Get_rank() == 0:
        shown = runs["1f1b", 8]
        say(f"GPipe and 1F1B side by side on {P} ranks, a batch of {BATCH} in m micro-batches:",
            *lines, "textbook: (P-1)/(m+P-1) for both; stash: micro-batches held at the peak, "
            "per rank;", "KiB: their activations, per rank.", "",
            f"1F1B's stash is min(P - rank, m) = {[held('1f1b', P, 16, r) for r in range(P)]} "
            f"at m = 16; GPipe's is m = 16 on every rank.", "",
            "1F1B, m = 8 in detail:", *shown.explain(),
            draw(f"{OUT}/04_one_f_one_b.png", shown, f"1f1b, P={P}, m=8"),
            web_page(f"{OUT}/04_one_f_one_b.html", shown, f"1f1b, P={P}, m=8"),
            "", "1F1B, m = 8, as it ran:", shown.summary.timeline, "",
            f"answer: at m = 16 rank 0 holds {runs['1f1b', 16].summary.peak_stash[0]} "
            f"micro-batches under 1F1B, {runs['gpipe', 16].summary.peak_stash[0]} under GPipe "
            f"({runs['1f1b', 16].summary.peak_stash_bytes[0] // 1024} KiB against "
            f"{runs['gpipe', 16].summary.peak_stash_bytes[0] // 1024} KiB).", "")
    checks.finish()


if __name__ == "__main__":
    main_guard(main)
