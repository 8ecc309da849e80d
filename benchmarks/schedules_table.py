"""Every schedule: bubble and peak stash from the formula, the simulator and a real run.

For each schedule, at P ranks with m micro-batches (V = 2 chunks where the
schedule has chunks), prints one Markdown row:

  formula    the literature's bubble fraction of one flushed step (equal
             stages, F = B = W, free messages), where there is one;
  simulated  mpipipe's simulator, unit costs;
  measured   from the per-action timestamps of `mpiexec -n P mpipipe train`
             (median over steps 2..), 8 x [Linear(512,512) + GELU], float32;
  last step  that step's measured bubble, and the simulator's plan fed with
             that step's measured action times, each stage at its own speed:
             what is left between the two is messages and noise;
  peak stash on the first rank: formula, simulated, measured by the engine.

With more ranks than cores (P = 4 on a 2-core machine) the ranks share cores,
so measured bubbles are not comparable with the plan: such rows are flagged.

    python benchmarks/schedules_table.py [--ranks 2,4] [--microbatches 8] [--steps 10]
"""

import argparse
import json
import os
import subprocess
import sys

from mpipipe.errors import ConfigError
from mpipipe.comm.launcher import mpiexec_command
from mpipipe.schedules import BUBBLE_FORMULAS, default_chunks, validated_schedule
from mpipipe.plan.simulate import Costs, simulate

SCHEDULES = ["naive", "gpipe", "1f1b", "interleaved", "looped-bfs", "zb-h1", "zb-h2", "zbv",
             "dualpipev"]
MODEL = ["--data", "teacher", "--input-dim", "512", "--output-dim", "512", "--hidden", "512",
         "--layers", "8", "--last-activation", "--dtype", "float32", "--optimizer", "sgd",
         "--lr", "0.001", "--global-batch", "256", "--samples", "1024"]


def stash_formula(name, P, m, V):
    """Peak micro-batches held by the first rank, as the papers give it."""
    return {"naive": 1, "gpipe": m, "1f1b": min(P, m), "zb-h1": min(P, m),
            "zb-h2": min(2 * P - 1, m), "looped-bfs": V * m,
            "dualpipev": 2 * P + 1}.get(name)     # chunk-micro-batches, m >= 2P


def measure(name, P, m, steps):
    command = [*mpiexec_command(P), sys.executable, "-m",
               "mpipipe", "train", *MODEL, "--schedule", name, "--microbatches",
               str(1 if name == "naive" else m), "--steps", str(steps), "--quiet", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", default="2,4")
    parser.add_argument("--microbatches", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    m = args.microbatches
    print("| P | schedule | bubble: formula | simulated | measured | last step: measured | "
          "planned with its stage times | peak stash rank 0: formula | simulated | measured |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for P in (int(p) for p in args.ranks.split(",")):
        flag = " (oversubscribed)" if P > (os.cpu_count() or 1) else ""
        for name in SCHEDULES:
            mm = 1 if name == "naive" else m
            V = default_chunks(name)
            try:
                schedule = validated_schedule(name, P, mm, V)
            except ConfigError as refused:       # e.g. dualpipev needs m >= 2P
                print(f"| {P}{flag} | {name} | {refused} |", flush=True)
                continue
            timeline = simulate(schedule, Costs())
            formula = BUBBLE_FORMULAS.get(name)
            expected = formula(P, mm, V, Costs()) if formula else None
            run = measure(name, P, m, args.steps)
            stash = stash_formula(name, P, mm, V)
            print(f"| {P}{flag} | {name} | {'-' if expected is None else f'{expected:.3f}'} | "
                  f"{timeline.bubble_fraction:.3f} | {run['bubble_fraction']:.3f} | "
                  f"{run['bubble_fraction_last_step']:.3f} | "
                  f"{run['bubble_fraction_last_step_planned']:.3f} | "
                  f"{'-' if stash is None else stash} | {timeline.peak_stash[0]} | "
                  f"{run['peak_stash'][0]} |", flush=True)


if __name__ == "__main__":
    main()
