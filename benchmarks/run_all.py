"""Run every benchmark, one after another, and keep their JSON.

    python benchmarks/run_all.py            # the full set: tens of minutes on 2 cores
    python benchmarks/run_all.py --quick    # a few minutes: the same code, smaller sizes

Each benchmark prints its own table; the JSON goes to benchmarks/results/
(or --out). None of them passes or fails on speed: they report figures.
"""

import argparse
import os
import subprocess
import sys
import time

from mpipipe.comm.launcher import mpiexec_command

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few rounds")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    quick = ["--quick"] if args.quick else []
    py = [sys.executable]
    runs = [
        ("pipeline speedup against the bound", py + [os.path.join(HERE, "pipeline_speedup.py")]
         + (["--rounds", "1", "--steps", "4", "--microbatches", "8"] if args.quick else
            ["--schedules", "gpipe,1f1b,interleaved,zb-h1", "--ranks", "2,4",
             "--microbatches", "2,4,8,16"]), "speedup.json"),
        ("against PyTorch", py + [os.path.join(HERE, "vs_pytorch.py")] + quick, "vs_pytorch.json"),
        ("communication", mpiexec_command(2) + py + [os.path.join(HERE, "comm.py")] + quick,
         "comm.json"),
        ("scale, by simulation", py + [os.path.join(HERE, "scale.py")] + quick, "scale.json"),
        ("memory", py + [os.path.join(HERE, "memory.py")] + quick, "memory.json"),
        ("schedules: plan and measurement", py + [os.path.join(HERE, "schedules_table.py")]
         + (["--ranks", "2", "--steps", "3"] if args.quick else []), None),
        ("waiting without spinning", py + [os.path.join(HERE, "idle_wait.py")] + quick, None),
        ("planning at scale", py + [os.path.join(HERE, "planner.py")] + quick, "planner.json"),
        ("where to cut, when to all-reduce", py + [os.path.join(HERE, "partition_and_overlap.py")]
         + quick, "partition_and_overlap.json"),
    ]
    failed = []
    for title, command, result in runs:
        if result:
            command = command + ["--json", os.path.join(args.out, result)]
        print(f"\n== {title}\n$ {' '.join(os.path.relpath(c) if c.startswith(HERE) else c for c in command)}",
              flush=True)
        start = time.monotonic()
        done = subprocess.run(command)
        print(f"({time.monotonic() - start:.0f} s)", flush=True)
        if done.returncode:
            failed.append(title)
    if failed:
        sys.exit(f"benchmarks that failed to run: {', '.join(failed)}")


if __name__ == "__main__":
    main()
