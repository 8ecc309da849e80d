"""How long planning takes at scale: generate, validate (which lowers and walks), simulate.

    python benchmarks/planner.py [--stages 64] [--microbatches 1024] [--rounds 3] [--json FILE]

For every schedule, the time of each part of what `mpipipe train` and `mpipipe
simulate` do before anything runs: generate the compute actions, check their
bookkeeping, lower them (add the messages), walk them once to prove they finish
(validate), and walk them once more with costs for the planned timeline
(simulate). Medians over rounds, the schedules taken in turn within each round.
Target: every schedule under 2 s at P = 64, m = 1024.
"""

import argparse
import json
import statistics
import time

from mpipipe.schedules import GENERATORS, default_chunks, lower, make_schedule
from mpipipe.schedules.validate import _check_bookkeeping
from mpipipe.schedules.walk import walk
from mpipipe.plan.simulate import simulate

PARTS = ("generate", "bookkeeping", "lower", "validate walk", "simulate walk")


def plan_once(name, P, m):
    """Seconds of each part, for one plan of `name`."""
    times = [time.perf_counter()]
    schedule = make_schedule(name, P, m, default_chunks(name))
    times.append(time.perf_counter())
    _check_bookkeeping(schedule)
    times.append(time.perf_counter())
    lowered = lower(schedule)
    times.append(time.perf_counter())
    walk(lowered, keep_events=False)
    times.append(time.perf_counter())
    simulate(lowered)
    times.append(time.perf_counter())
    return [b - a for a, b in zip(times, times[1:])]


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
    print(f"{'schedule':>12} " + " ".join(f"{part:>13}" for part in PARTS) + f" {'total':>7}")
    rows = []
    for name in names:
        parts = [statistics.median(r[i] for r in runs[name]) for i in range(len(PARTS))]
        total = statistics.median(sum(r) for r in runs[name])
        rows.append({"schedule": name, "parts": dict(zip(PARTS, parts)), "total_s": total})
        print(f"{name:>12} " + " ".join(f"{p:>13.2f}" for p in parts) + f" {total:>7.2f}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"stages": P, "microbatches": m, "rounds": rounds, "rows": rows}, out)


if __name__ == "__main__":
    main()
