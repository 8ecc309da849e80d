"""Lesson 3: GPipe. Cut the batch into micro-batches so the stages overlap.

    .venv/bin/mpiexec -n 2 .venv/bin/python lessons/03_gpipe.py

With m micro-batches the pipeline fills, runs, and drains: the idle fraction
falls to (P-1)/(m+P-1). The price: all m micro-batches' activations wait on
every rank until the backwards begin. Here the batch is fixed (256), so a
micro-batch is 256/m samples: more micro-batches, smaller ones.
"""

from _checks import Checks
from _common import OUT, WORLD, activation_bytes, main_guard, need_ranks, say, train
from _figures import draw, web_page

BATCH, LAYERS = 256, 8
SHOWN = 8          # the m drawn and explained in detail


def main():
    need_ranks(2)
    P = WORLD.Get_size()
    checks, rows, runs = Checks(), [], {}
    for m in (1, 2, 4, 8, 16):
        r = runs[m] = train(schedule="gpipe", microbatches=m, check=True)
        s = r.summary
        checks.bubble(dict(m=m), r)
        checks.equivalence(dict(m=m), s)
        for rank in range(P):
            # GPipe: every rank holds all m micro-batches when its first backward starts
            checks.exact("stash", dict(m=m, rank=rank), s.peak_stash[rank], m)
            checks.exact("memory", dict(m=m, rank=rank), s.peak_stash_bytes[rank],
                         m * activation_bytes(LAYERS // P, BATCH // m))
        if WORLD.Get_rank() == 0:
            rows.append(f"{m:>4} {(P - 1) / (m + P - 1):>9.3f} {r.replay_bubble:>7.3f} "
                        f"{r.bubble:>9.3f} {r.step_ms:>8.1f} {r.compute_ms:>11.1f} "
                        f"{' '.join(map(str, s.peak_stash)):>9} "
                        f"{' '.join(f'{b // 1024}' for b in s.peak_stash_bytes):>12}")
    shown, last = runs[SHOWN], runs[16]
    picture = (draw(f"{OUT}/03_gpipe.png", shown, f"gpipe, P={P}, m={SHOWN}") + "\n" +
               web_page(f"{OUT}/03_gpipe.html", shown, f"gpipe, P={P}, m={SHOWN}")) \
        if WORLD.Get_rank() == 0 else ""
    say(f"GPipe on {P} ranks, a batch of {BATCH} cut into m micro-batches of {BATCH}/m:",
        f"{'m':>4} {'textbook':>9} {'replay':>7} {'measured':>9} {'step ms':>8} "
        f"{'compute ms':>11} {'stash':>9} {'KiB':>12}",
        *rows,
        "textbook: (P-1)/(m+P-1); replay: each step played again with its own action times",
        "and free messages; compute: the ranks' mean a step (median over steps; the detail",
        "below gives each rank's); stash: micro-batches held at the peak, per rank; KiB:",
        "their activations, per rank.",
        "", f"m = {SHOWN} in detail:", *(shown.explain() if shown.measured else []),
        picture, "", f"m = {SHOWN}, as it ran:", shown.summary.timeline, "")
    if WORLD.Get_rank() == 0:
        say(f"answer: from m = {SHOWN} to m = 16 the textbook bubble falls from "
            f"{(P - 1) / (SHOWN + P - 1):.3f} to {(P - 1) / (16 + P - 1):.3f}; the step took "
            f"{shown.step_ms:.1f} ms, then {last.step_ms:.1f} ms "
            f"({'faster' if last.step_ms < shown.step_ms else 'slower'}), while the compute",
            f"per rank went from {shown.compute_ms:.1f} to {last.compute_ms:.1f} ms: "
            f"micro-batches of {BATCH // 16} rows keep a core less busy than {BATCH // SHOWN}, "
            "and every action pays its Python and every message its latency.", "")
    checks.finish()


if __name__ == "__main__":
    main_guard(main)
