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
chunk's backward as a pair (F&B), drawn with '&'. V-Half and V-Min (Qi et al.,
"Pipeline Parallelism with Controllable Memory") go the other way: V-shaped
blocks that free activations sooner, half and a third of 1F1B's memory, for
some bubble back. The last table plans all of them at P = 8, m = 32, where the
trade-off shows (at P = 2 every schedule holds about as much).
"""

from _checks import Checks
from _common import OUT, WORLD, activation_bytes, main_guard, need_ranks, say, train
from _figures import draw, web_page
from _figures import memory_against_bubble
from mpipipe.schedules import validated_schedule
from mpipipe.plan.simulate import peak_stash, simulate, steady_state

BATCH, LAYERS, M = 256, 8, 8
CHUNKS = {"1f1b": 1, "zb-h1": 1, "zb-h2": 1, "zbv": 2, "v-half": 2, "v-min": 2, "dualpipev": 2}
TRADE_P, TRADE_M = 8, 32          # the memory/bubble table: large enough to tell them apart

# The fullest rank's activations, in micro-batches of a whole stage, as the papers state
# them (1F1B's rank 0 holds P; the V schedules' chunks are half a stage each).
PAPER_MEMORY = {"1f1b": lambda P: P, "zb-h1": lambda P: P, "zb-h2": lambda P: 2 * P - 1,
                "zbv": lambda P: P, "v-half": lambda P: (P + 2) // 2,
                "v-min": lambda P: (P + 4) // 3}


def paper_idle(schedule, P):
    """Idle time per rank of one flushed step, F = B = W = 1 (a rank's share), free
    messages, m >= P; None where the paper gives no closed form (zbv)."""
    even, third = (3 if P % 2 == 0 else 0), (2 if P % 3 == 0 else 0)
    return {"1f1b": 3 * (P - 1),              # (P-1)(F+B+W)
            "zb-h1": P - 1,                   # (P-1)(F+B-W)
            "zb-h2": P - 1,                   # flushed: the edges stay, as ZB-H1's
            "v-half": (7 * P - 7 + even) / 4,  # (7P-7+y)/2 chunk passes of 1/2
            "v-min": (4 * P - 5 + third) / 2,  # (4P-5+x) chunk passes of 1/2
            "zbv": None}[schedule]


def held(schedule, P, rank):
    """(Chunk-)micro-batches a rank holds at its peak, with m = 8 >= 2P."""
    return {"1f1b": min(P - rank, M),       # freed at each BW
            "zb-h1": min(P, M),            # kept until W, which comes later: P on every rank
            "zb-h2": min(2 * P - 1, M),    # more forwards in flight, to fill the warm-up
            "zbv": 2 * P,                  # half-size chunks: 1F1B's bytes
            "dualpipev": 2 * P + 1,
            "v-half": None, "v-min": None}[schedule]   # only the fullest rank has a formula


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
        chunk_bytes = activation_bytes(LAYERS // (P * CHUNKS[schedule]), BATCH // M)
        if held(schedule, P, 0) is None:      # v-half, v-min: the paper's fullest rank
            count = CHUNKS[schedule] * PAPER_MEMORY[schedule](P)
            checks.exact("stash", dict(schedule=schedule, rank="fullest"), max(s.peak_stash),
                         count)
            checks.exact("memory", dict(schedule=schedule, rank="fullest"),
                         max(s.peak_stash_bytes), count * chunk_bytes)
        else:
            for rank in range(P):
                count = held(schedule, P, rank)
                checks.exact("stash", dict(schedule=schedule, rank=rank), s.peak_stash[rank],
                             count)
                checks.exact("memory", dict(schedule=schedule, rank=rank),
                             s.peak_stash_bytes[rank], count * chunk_bytes)
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
            "dualpipev, v-half, v-min: half-size", "chunks) held at the peak, per rank; KiB: "
            "their activations.",
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
    memory_and_bubble(checks, runs, P)
    checks.finish()


def memory_and_bubble(checks, runs, world):
    """The trade-off, planned at TRADE_P ranks: the fullest rank's activations beside the
    bubble of one flushed step, each against the paper's formula; the picture adds this
    run's measured points (at `world` ranks)."""
    P, m = TRADE_P, TRADE_M
    lines, points = [f"{'schedule':>9} {'memory':>7} {'paper':>6} {'bubble':>7} {'paper':>6}"], []
    for name in PAPER_MEMORY:
        schedule = validated_schedule(name, P, m)
        memory = max(peak_stash(schedule)) / schedule.chunks
        bubble = simulate(schedule).bubble_fraction
        idle = paper_idle(name, P)
        paper = None if idle is None else idle / (3 * m + idle)
        checks.close("formula", dict(schedule=name, P=P, m=m, what="memory"), memory,
                     PAPER_MEMORY[name](P))
        if paper is not None:
            checks.close("formula", dict(schedule=name, P=P, m=m, what="bubble"), bubble, paper)
        points.append((name, bubble, memory))
        lines.append(f"{name:>9} {memory:>7g} {PAPER_MEMORY[name](P):>6} {bubble:>7.3f} "
                     f"{'-' if paper is None else f'{paper:.3f}':>6}")
    if WORLD.Get_rank() == 0:
        least = min(points, key=lambda p: (p[2], p[1]))
        base = next(p for p in points if p[0] == "1f1b")
        say(f"memory against bubble, planned at P = {P}, m = {m} (F = B = W, one flushed step;",
            "memory: the fullest rank's activations in micro-batches of a whole stage):",
            *lines, memory_against_bubble(
                f"{OUT}/07_memory_bubble.png", points, f"planned, P={P}, m={m}, F=B=W",
                [(name, runs[name].bubble, max(runs[name].summary.peak_stash) / CHUNKS[name])
                 for name in PAPER_MEMORY], f"measured here, P={world}, m={M}"),
            f"answer (memory): {least[0]} holds the least, {least[2]:g} micro-batches' "
            f"activations against 1f1b's {base[2]:g}, with a bubble of {least[1]:.3f} "
            f"against 1f1b's {base[1]:.3f}.", "")


def split_ratio(zb, base):
    """(B + W) / BW: what splitting the backward costs in compute (two passes, not one)."""
    return (zb.action_ms("B") + zb.action_ms("W")) / base.action_ms("BW")


def why_faster_or_not(zb, base):
    """The step times compared ("level": within 2%), with the two things that move them:
    the idle ZB-H1 fills (the replays: this run's own action times, free messages) and the
    split's cost."""
    extra = M * (zb.action_ms("B") + zb.action_ms("W") - base.action_ms("BW"))
    change = zb.step_ms / base.step_ms - 1
    verdict = "level" if abs(change) <= 0.02 else "faster" if change < 0 else "slower"
    return (f"why: zb-h1 was {verdict} here ({change:+.1%}): its W's fill idle time (replayed "
            f"bubble {zb.replay_bubble:.3f} against 1f1b's {base.replay_bubble:.3f}),\n"
            f"     but splitting BW into B and W costs {extra:+.1f} ms of compute per rank over "
            f"{M} micro-batches,\n     and the waits for messages differ from run to run "
            f"(the measured column).")


if __name__ == "__main__":
    main_guard(main)
