"""Lesson 6: interleaved virtual stages. A smaller bubble for more messages.

    .venv/bin/mpiexec -n 2 .venv/bin/python lessons/06_interleaved.py

Each rank holds V model chunks (rank r: stages r, r+P, ...), each 1/V of its
share. Warm-up and cool-down are made of chunk-sized steps, so the bubble
shrinks: (P-1)/(Vm+P-1) of the step. A micro-batch now crosses VP-1 stage
boundaries instead of P-1, each a message forward and one back: 2m(VP-1)
messages a step, (VP-1)/(P-1) times 1F1B's.
"""

import statistics

from _checks import Checks
from _common import OUT, WORLD, activation_bytes, main_guard, need_ranks, say, train
from _figures import draw, in_flight
from mpipipe.schedules import validated_schedule
from mpipipe.plan.simulate import Costs, simulate

BATCH, LAYERS, M = 256, 16, 8
COMM = (0, 0.1, 0.5, 1, 2)     # message costs swept in the simulator, in forwards


def held(P, V, rank):
    """Chunk-micro-batches rank `rank` holds at its peak: 1F1B's min(P - r, m); interleaved:
    Megatron-LM's warm-up, 2(P-1-r) + (V-1)P forwards, then one more in the steady state."""
    return min(P - rank, M) if V == 1 else min(2 * (P - 1 - rank) + (V - 1) * P + 1, M * V)


def main():
    need_ranks(2)
    P = WORLD.Get_size()
    checks, runs = Checks(), {}
    lines = [f"{'schedule':>12} {'V':>2} {'textbook':>9} {'replay':>7} {'measured':>9} "
             f"{'step ms':>8} {'messages':>9} {'stash':>7} {'KiB':>11}"]
    for schedule, V in (("1f1b", 1), ("interleaved", 2), ("interleaved", 4)):
        r = runs[V] = train(schedule=schedule, microbatches=M, chunks=V, layers=LAYERS, check=True)
        s = r.summary
        checks.bubble(dict(V=V), r)
        checks.equivalence(dict(V=V), s)
        for rank in range(P):
            checks.exact("stash", dict(V=V, rank=rank), s.peak_stash[rank], held(P, V, rank))
            checks.exact("memory", dict(V=V, rank=rank), s.peak_stash_bytes[rank],
                         held(P, V, rank) * activation_bytes(LAYERS // (P * V), BATCH // M))
        if WORLD.Get_rank() == 0:
            sent = sum(e.action.kind.startswith("SEND") for e in r.measured[-1].events)
            checks.exact("messages", dict(V=V), sent, 2 * M * (V * P - 1))
            lines.append(f"{schedule:>12} {V:>2} {(P - 1) / (V * M + P - 1):>9.3f} "
                         f"{r.replay_bubble:>7.3f} {r.bubble:>9.3f} {r.step_ms:>8.1f} {sent:>9} "
                         f"{' '.join(map(str, s.peak_stash)):>7} "
                         f"{' '.join(str(b // 1024) for b in s.peak_stash_bytes):>11}")
    if WORLD.Get_rank() == 0:
        shown = runs[2]
        say(f"{P} ranks, m = {M}, {LAYERS} layers:", *lines,
            "textbook: (P-1)/(Vm+P-1); messages: sent in the last step, counted; stash: "
            "chunk-micro-batches", "held at the peak, per rank (a chunk is 1/V of a rank's "
            "layers); KiB: their activations.", "", "interleaved, V = 2 in detail:",
            *shown.explain(), draw(f"{OUT}/06_interleaved.png", shown, f"interleaved, P={P}, "
                                   f"m={M}, V=2"), "",
            "interleaved, V = 2, as it ran (lower case: odd chunks):", shown.summary.timeline, "",
            *sweep(P, shown), "",
            f"answer: V = 2 has the textbook bubble {(P - 1) / (2 * M + P - 1):.3f} against "
            f"1F1B's {(P - 1) / (M + P - 1):.3f}; the step took {shown.step_ms:.1f} ms against "
            f"{runs[1].step_ms:.1f} ms ({'faster' if shown.step_ms < runs[1].step_ms else 'slower'}"
            ").", "")
    checks.finish()


def sweep(P, shown):
    """When do messages eat interleaving's gain? The simulator, F = B = W = 1 for a rank's
    share of the model, every message costing `comm` of that."""
    lines = [f"simulated, P = {P}, m = {M}: step length as messages get dearer "
             "(1 = a rank's forward of one micro-batch)",
             f"{'comm':>6} {'1f1b':>7} {'V = 2':>7} {'V = 4':>7}"]
    stops = {}
    for comm in COMM:
        lengths = [simulate(validated_schedule(name, P, M, V), Costs(comm=comm)).makespan
                   for name, V in (("1f1b", 1), ("interleaved", 2), ("interleaved", 4))]
        lines.append(f"{comm:>6g} {lengths[0]:>7.2f} {lengths[1]:>7.2f} {lengths[2]:>7.2f}")
        for V, length in zip((2, 4), lengths[1:]):
            if length >= lengths[0]:
                stops.setdefault(V, comm)
    for V in (2, 4):
        lines.append(f"V = {V} " + (f"is no faster than 1F1B from comm = {stops[V]:g} on"
                                    if V in stops else "is faster at every cost above"))
    forward = shown.action_ms("F") * 2       # a chunk's forward is half a rank's share
    message = statistics.median(in_flight(shown))
    lines.append(f"this run: a rank's forward of one micro-batch {forward:.2f} ms, a message "
                 f"{message:.2f} ms (median): comm = {message / forward:.3f}")
    return lines


if __name__ == "__main__":
    main_guard(main)
