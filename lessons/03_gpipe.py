"""Lesson 3: GPipe. Cut the batch into micro-batches so the stages overlap.

    mpiexec -n 2 python lessons/03_gpipe.py

With m micro-batches the pipeline fills, runs, and drains: the idle fraction
falls to (P-1)/(m+P-1). The price: all m micro-batches' activations wait on
every rank until the backwards begin, so activation memory grows with m.
"""

from _common import WORLD, main_guard, need_ranks, say, train


def main():
    need_ranks(2)
    P = WORLD.Get_size()
    rows = []
    for m in (1, 2, 4, 8, 16):
        result = train(schedule="gpipe", microbatches=m)
        rows.append(f"{m:>4} {result.bubble_fraction:>10.3f} {(P - 1) / (m + P - 1):>9.3f}"
                    f" {result.peak_stash[0]:>7} {result.peak_stash_bytes[0] / 1024:>9.0f}"
                    f" {result.step_time_s * 1e3:>9.1f}")
        if m == 8:
            picture = result.timeline
    say(f"GPipe on {P} ranks, global batch {result.global_batch}:",
        f"{'m':>4} {'measured':>10} {'formula':>9} {'stash':>7} {'KiB':>9} {'step ms':>9}",
        *rows, "", "bubble: idle fraction measured from every action's timestamps;",
        "formula: (P-1)/(m+P-1); stash: micro-batches held by rank 0 at the peak.",
        "", "m = 8, as it ran:", picture)


if __name__ == "__main__":
    main_guard(main)
