"""What does the NaN check (on unless --no-nan-check) cost? Median step time with and without it, alternating runs.

The check looks at every activation a forward produces and every gradient a
backward produces (one pass of isfinite over each), on 8 x [Linear(512,512) +
GELU], float32, global batch 256, m = 8, two ranks:

    python benchmarks/nan_check_cost.py [--rounds 5]
"""

import argparse
import json
import statistics
import subprocess
import sys

from mpipipe.comm.launcher import mpiexec_command

MODEL = ["--data", "teacher", "--input-dim", "512", "--output-dim", "512", "--hidden", "512",
         "--layers", "8", "--last-activation", "--dtype", "float32", "--optimizer", "sgd",
         "--lr", "0.001", "--global-batch", "256", "--samples", "1024", "--steps", "12",
         "--quiet", "--json"]


def step_time(extra):
    command = [*mpiexec_command(2), sys.executable, "-m",
               "mpipipe", "train", *MODEL, *extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(done.stdout.splitlines()[-1])["step_time_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    on, off = [], []
    for _ in range(args.rounds):
        on.append(step_time([]))
        off.append(step_time(["--no-nan-check"]))
    a, b = statistics.median(on), statistics.median(off)
    print(f"step time, median of {args.rounds} runs: with the NaN check {a * 1e3:.2f} ms, "
          f"without {b * 1e3:.2f} ms: the check costs {100 * (a / b - 1):+.1f}%")


if __name__ == "__main__":
    main()
