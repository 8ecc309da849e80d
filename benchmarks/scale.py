"""Scale, by simulation: how fast is the simulator, and what does each schedule give at size?

    python benchmarks/scale.py [--quick] [--json FILE]

1. The simulator's own time (generate, lower, walk) at P = 64, m = 1024 for every
   schedule (target: the walk under 1 s for 1F1B), and the memory it takes (the
   peak of Python's allocations while planning and walking 1F1B, tracemalloc).
2. Bubble fraction of one flushed step against P, m and V for each schedule,
   unit costs, free messages: the table to choose a schedule from.
3. GPT-3's 1024-GPU layout (TP 8 x PP 16 x DP 8, 96 layers, m = 64..512): bubble
   and first-rank stash per schedule. TP lives inside a node and does not change
   the pipeline's shape; DP only divides the batch, so one pipeline tells it all.
"""

import argparse
import json
import time
import tracemalloc

from mpipipe.schedules import lower, make_schedule, validated_schedule
from mpipipe.plan.simulate import peak_stash, simulate, walk

SCHEDULES = [("gpipe", 1), ("1f1b", 1), ("interleaved", 2), ("interleaved", 4),
             ("looped-bfs", 2), ("zb-h1", 1), ("zb-h2", 1), ("zbv", 2)]


def timing(P, m):
    rows = []
    for name, V in SCHEDULES:
        t0 = time.perf_counter()
        schedule = make_schedule(name, P, m, V)
        t1 = time.perf_counter()
        lowered = lower(schedule)
        t2 = time.perf_counter()
        timeline = walk(lowered)
        t3 = time.perf_counter()
        actions = sum(len(p) for p in lowered.programs)
        rows.append({"schedule": name, "V": V, "actions": actions, "generate_s": t1 - t0,
                     "lower_s": t2 - t1, "walk_s": t3 - t2,
                     "bubble": timeline.bubble_fraction})
    return rows


def memory_mib(P, m):
    """Peak MiB Python allocates to generate, lower and walk 1F1B (tracemalloc: slow, so apart)."""
    tracemalloc.start()
    try:
        walk(lower(make_schedule("1f1b", P, m, 1)))
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def bubble_table(Ps, ms):
    rows = []
    for name, V in SCHEDULES:
        for P in Ps:
            for m in ms:
                try:
                    bubble = simulate(validated_schedule(name, P, m, V)).bubble_fraction
                except ValueError:          # e.g. interleaved with m not a multiple of P
                    bubble = None
                rows.append({"schedule": name, "V": V, "P": P, "m": m, "bubble": bubble})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    P, m = (16, 128) if args.quick else (64, 1024)
    out = {"timing": timing(P, m)}
    print(f"simulator time at P={P}, m={m}:")
    print(f"{'schedule':>12} {'V':>2} {'actions':>8} {'generate s':>11} {'lower s':>8} "
          f"{'walk s':>7} {'bubble':>7}")
    for r in out["timing"]:
        print(f"{r['schedule']:>12} {r['V']:>2} {r['actions']:>8} {r['generate_s']:>11.2f} "
              f"{r['lower_s']:>8.2f} {r['walk_s']:>7.2f} {r['bubble']:>7.3f}")
    out["memory_mib_1f1b"] = memory_mib(P, m)
    print(f"memory: generating, lowering and walking 1f1b at P={P}, m={m} peaks at "
          f"{out['memory_mib_1f1b']:.0f} MiB of Python objects")
    Ps, ms = ((4, 8), (8, 32)) if args.quick else ((4, 8, 16, 32), (8, 32, 128))
    out["bubbles"] = bubble_table(Ps, ms)
    print("\nbubble fraction of one flushed step (unit costs, free messages):")
    header = [f"P={p},m={mm}" for p in Ps for mm in ms]
    print(f"{'schedule':>15} " + " ".join(f"{h:>11}" for h in header))
    for name, V in SCHEDULES:
        cells = [r["bubble"] for r in out["bubbles"] if r["schedule"] == name and r["V"] == V]
        label = f"{name} V={V}" if V > 1 else name
        print(f"{label:>15} " + " ".join("          -" if b is None else f"{b:>11.3f}" for b in cells))
    gpt = []
    print("\nGPT-3 175B, TP 8 x PP 16 x DP 8 (1024 GPUs), one pipeline of 16 stages:")
    print(f"{'schedule':>15} " + " ".join(f"{'m=' + str(mm):>9}" for mm in (64, 128, 256, 512))
          + "   stash rank 0 at m=512")
    for name, V in SCHEDULES if not args.quick else SCHEDULES[:3]:
        cells = []
        for mm in (64, 128, 256, 512):
            schedule = validated_schedule(name, 16, mm, V)
            cells.append(simulate(schedule).bubble_fraction)
        stash = peak_stash(schedule)[0]
        gpt.append({"schedule": name, "V": V, "bubbles": cells, "stash": stash})
        label = f"{name} V={V}" if V > 1 else name
        print(f"{label:>15} " + " ".join(f"{b:>9.3f}" for b in cells) + f"   {stash:>10}")
    out["gpt3"] = gpt
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
