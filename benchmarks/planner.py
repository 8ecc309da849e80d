"""How long planning takes at scale: generate, check, lower, and one walk that proves and plans.

    python benchmarks/planner.py [--stages 64] [--microbatches 1024] [--rounds 3] [--json FILE]

For every schedule, the time of each part of what `mpipipe train` plans on every
rank before the first step: generate the compute actions, check their bookkeeping,
lower them (add the messages), and walk them once with unit costs, which proves
that no rank waits forever and gives the planned figures the summary prints
(makespan, bubble, stash; no events kept: plan.simulate.validated_plan). The total
is their sum. The last column, outside the total, is one more walk keeping every
event, which `mpipipe simulate` adds to draw the timeline. Medians over rounds,
the schedules taken in turn within each round. Target: every total under 2 s at
P = 64, m = 1024.

(The schedules these times are for are the ones tests/test_schedule_identity.py
holds: a faster planner must produce the same action lists.)
"""

import argparse
import json
import statistics
import time

from mpipipe.schedules import GENERATORS, default_chunks, lower, make_schedule
from mpipipe.schedules.validate import _check_bookkeeping
from mpipipe.plan.simulate import simulate, walk

PARTS = ("generate", "bookkeeping", "lower", "walk")
DRAWN = "with events"


def plan_once(name, P, m):
    """Seconds of each part, for one plan of `name`."""
    times = [time.perf_counter()]
    schedule = make_schedule(name, P, m, default_chunks(name))
    times.append(time.perf_counter())
    _check_bookkeeping(schedule)
    times.append(time.perf_counter())
    lowered = lower(schedule)
    times.append(time.perf_counter())
    walk(lowered, keep_events=False)      # as validated_plan: proves it, plans it
    times.append(time.perf_counter())
    parts = [b - a for a, b in zip(times, times[1:])]
    start = time.perf_counter()
    simulate(lowered)
    return parts + [time.perf_counter() - start]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", type=int, default=64)
    parser.add_argument("--microbatches", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="P=16, m=128, one round")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    P, m, rounds = args.stages, args.microbatches, args.rounds
    if args.quick:
        P, m, rounds = 16, 128, 1
    names = [n for n in GENERATORS if n != "naive"]      # naive runs one micro-batch
    runs = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            runs[name].append(plan_once(name, P, m))
    print(f"planning at P={P}, m={m}: seconds, median of {rounds} round(s)")
    print(f"{'schedule':>12} " + " ".join(f"{part:>13}" for part in PARTS) + f" {'total':>7}"
          f" {DRAWN:>12}")
    rows = []
    for name in names:
        parts = [statistics.median(r[i] for r in runs[name]) for i in range(len(PARTS))]
        total = statistics.median(sum(r[:len(PARTS)]) for r in runs[name])
        drawn = statistics.median(r[-1] for r in runs[name])
        rows.append({"schedule": name, "parts": dict(zip(PARTS, parts)), "total_s": total,
                     "simulate_with_events_s": drawn})
        print(f"{name:>12} " + " ".join(f"{p:>13.2f}" for p in parts) + f" {total:>7.2f}"
              f" {drawn:>12.2f}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"stages": P, "microbatches": m, "rounds": rounds, "rows": rows}, out)


if __name__ == "__main__":
    main()
