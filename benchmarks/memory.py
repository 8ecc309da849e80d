"""Memory: peak activation bytes per stage, measured by the engine, next to the formula.

    python benchmarks/memory.py [--quick] [--json FILE]

Runs `mpiexec -n 2 mpipipe train` (8 x [Linear(512,512) + GELU], float32,
global batch 256, m = 8) for gpipe, 1f1b, zb-h2, and 1f1b/gpipe with
--recompute, and prints the peak activation bytes the engine counted on each
stage beside the formula:

  per micro-batch and layer, a Linear keeps its input (b x n floats) and a GELU
  its input and tanh (2 x b x n floats): 3 b n x 4 bytes per layer;
  with --recompute only the stage's input: b n x 4 bytes;
  times the peak number of micro-batches held (gpipe m, 1f1b P - stage,
  zb-h2 up to 2P - 1 - stage's share, as the simulator counts it).
"""

import argparse
import json
import subprocess
import sys

from mpipipe.comm.launcher import mpiexec_command
from mpipipe.schedules import make_schedule
from mpipipe.plan.simulate import peak_stash

WIDTH, LAYERS, BATCH, M, P = 512, 8, 256, 8, 2
MODEL = ["--data", "teacher", "--input-dim", str(WIDTH), "--output-dim", str(WIDTH), "--hidden",
         str(WIDTH), "--layers", str(LAYERS), "--last-activation", "--dtype", "float32",
         "--optimizer", "sgd", "--lr", "0.001", "--global-batch", str(BATCH), "--samples", "1024",
         "--microbatches", str(M), "--quiet", "--json"]


def measured(schedule, recompute, steps):
    command = [*mpiexec_command(P), sys.executable, "-m",
               "mpipipe", "train", *MODEL, "--schedule", schedule, "--steps", str(steps)]
    command += ["--recompute"] if recompute else []
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def formula(schedule, recompute):
    b = BATCH // M
    per_layer = 3 * b * WIDTH * 4
    per_mb = b * WIDTH * 4 if recompute else per_layer * LAYERS // P
    return [count * per_mb for count in peak_stash(make_schedule(schedule, P, M))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    print(f"peak activation KiB per stage, P={P}, m={M}, micro-batch {BATCH // M} x {WIDTH}:")
    print(f"{'schedule':>18} {'stash (mb)':>11} {'measured KiB':>16} {'formula KiB':>16} {'step ms':>8}")
    for schedule, recompute in (("gpipe", False), ("1f1b", False), ("zb-h2", False),
                                ("gpipe", True), ("1f1b", True)):
        r = measured(schedule, recompute, 2 if args.quick else 6)
        expect = formula(schedule, recompute)
        rows.append({"schedule": schedule, "recompute": recompute, "stash": r["peak_stash"],
                     "measured_bytes": r["peak_stash_bytes"], "formula_bytes": expect,
                     "step_time_s": r["step_time_s"]})
        label = schedule + (" --recompute" if recompute else "")
        print(f"{label:>18} {' '.join(map(str, r['peak_stash'])):>11} "
              f"{' '.join(f'{x / 1024:.0f}' for x in r['peak_stash_bytes']):>16} "
              f"{' '.join(f'{x / 1024:.0f}' for x in expect):>16} {r['step_time_s'] * 1e3:>8.1f}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=1)


if __name__ == "__main__":
    main()
