"""Lesson 7: zero bubble. Split the backward, fill the gaps with weight gradients.

    .venv/bin/mpiexec -n 2 .venv/bin/python lessons/07_zero_bubble.py

The backward is two jobs: B, the input gradient the previous stage is waiting
for, and W, the weight gradient only the optimizer needs. ZB-H1 sends every B
on at once and runs the W's in what were 1F1B's idle gaps: bubble per rank
(P-1)(F+B-W) instead of (P-1)(F+B+W). The price: a micro-batch's activations
stay until its W, so every rank holds as many as rank 0 (P), not P - r. ZB-H2
holds more (2P-1) to also fill the warm-up: its steady state has no bubble at
all, but within one flushed step the edges stay. ZB-V and DualPipeV put two
chunks per rank in a V; DualPipeV (DeepSeek) runs a forward and the other
chunk's backward as a pair (F&B), drawn with '&'.
"""

from _checks import Checks
from _common import OUT, WORLD, activation_bytes, main_guard, need_ranks, say, train
from _figures import draw, web_page
from mpipipe.schedules import validated_schedule
from mpipipe.plan.simulate import steady_state

BATCH, LAYERS, M = 256, 8, 8
CHUNKS = {"1f1b": 1, "zb-h1": 1, "zb-h2": 1, "zbv": 2, "dualpipev": 2}


def held(schedule, P, rank):
    """(Chunk-)micro-batches a rank holds at its peak, with m = 8 >= 2P."""
    return {"1f1b": min(P - rank, M),       # freed at each BW
            "zb-h1": min(P, M),            # kept until W, which comes later: P on every rank
            "zb-h2": min(2 * P - 1, M),    # more forwards in flight, to fill the warm-up
            "zbv": 2 * P,                  # half-size chunks: 1F1B's bytes
            "dualpipev": 2 * P + 1}[schedule]


def main():
    need_ranks(2)
    P = WORLD.Get_size()
    checks, runs = Checks(), {}
    lines = [f"{'schedule':>9} {'textbook':>9} {'steady':>7} {'replay':>7} {'measured':>9} "
             f"{'step ms':>8} {'stash':>7} {'KiB':>11}"]
    schedules = [name for name in CHUNKS if name != "dualpipev" or M >= 2 * P]
    for schedule in schedules:
        steady = steady_state(validated_schedule(schedule, P, M))[1]
        r = runs[schedule] = train(schedule=schedule, microbatches=M, check=True)
        s = r.summary
        checks.bubble(dict(schedule=schedule), r)
        checks.equivalence(dict(schedule=schedule), s)
        for rank in range(P):
            count = held(schedule, P, rank)
            checks.exact("stash", dict(schedule=schedule, rank=rank), s.peak_stash[rank], count)
            checks.exact("memory", dict(schedule=schedule, rank=rank), s.peak_stash_bytes[rank],
                         count * activation_bytes(LAYERS // (P * CHUNKS[schedule]), BATCH // M))
        if WORLD.Get_rank() == 0:
            lines.append(f"{schedule:>9} {r.textbook:>9.3f} {steady:>7.3f} {r.replay_bubble:>7.3f} "
                         f"{r.bubble:>9.3f} {r.step_ms:>8.1f} "
                         f"{' '.join(map(str, s.peak_stash)):>7} "
                         f"{' '.join(str(b // 1024) for b in s.peak_stash_bytes):>11}")
    if WORLD.Get_rank() == 0:
        zb, base = runs["zb-h1"], runs["1f1b"]
        say(f"{P} ranks, m = {M}:", *lines,
            "textbook: one flushed step simulated with F = B = W and free messages; steady: "
            "steps back", "to back (only ZB-H2 reaches 0); stash: micro-batches (zbv, "
            "dualpipev: half-size chunks)", "held at the peak, per rank; KiB: their activations.",
            "", f"the split, measured in zb-h1: F {zb.action_ms('F'):.2f} ms, B "
            f"{zb.action_ms('B'):.2f} ms, W {zb.action_ms('W'):.2f} ms an action "
            f"(1f1b's fused BW {base.action_ms('BW'):.2f} ms: B + W is "
            f"{split_ratio(zb, base):.2f} times it)", "",
            "zb-h1 in detail:", *zb.explain(),
            draw(f"{OUT}/07_zero_bubble.png", zb, f"zb-h1, P={P}, m={M}"),
            web_page(f"{OUT}/07_zero_bubble.html", zb, f"zb-h1, P={P}, m={M}"), "",
            "zb-h1 as it ran (W's fill the gaps):", zb.summary.timeline, "")
        if "dualpipev" in runs:
            say("dualpipev as it ran (F7&bw3: a forward and the other chunk's backward, a pair):",
                runs["dualpipev"].summary.timeline, "")
        say(f"answer: under zb-h1 the ranks hold {' '.join(map(str, zb.summary.peak_stash))} "
            f"micro-batches (1f1b: {' '.join(map(str, base.summary.peak_stash))}): every "
            "rank keeps each one until its W.",
            f"The step took {zb.step_ms:.1f} ms against 1f1b's {base.step_ms:.1f} ms; measured "
            f"bubble {zb.bubble:.3f} against {base.bubble:.3f}.", why_faster_or_not(zb, base), "")
    checks.finish()


def split_ratio(zb, base):
    """(B + W) / BW: what splitting the backward costs in compute (two passes, not one)."""
    return (zb.action_ms("B") + zb.action_ms("W")) / base.action_ms("BW")


def why_faster_or_not(zb, base):
    """The step times compared, with the two things that move them: the idle ZB-H1 fills
    (the replays: this run's own action times, free messages) and the split's cost."""
    extra = M * (zb.action_ms("B") + zb.action_ms("W") - base.action_ms("BW"))
    verdict = "faster" if zb.step_ms < base.step_ms else "slower"
    return (f"why: zb-h1 was {verdict} here: its W's fill idle time (replayed bubble "
            f"{zb.replay_bubble:.3f} against 1f1b's {base.replay_bubble:.3f}),\n"
            f"     but splitting BW into B and W costs {extra:+.1f} ms of compute per rank over "
            f"{M} micro-batches,\n     and on shared cores the waits for messages differ from "
            f"run to run (the measured column).")


if __name__ == "__main__":
    main_guard(main)
