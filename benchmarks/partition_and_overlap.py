"""Where to cut, and when to all-reduce: ratios from alternating runs in one invocation.

    python benchmarks/partition_and_overlap.py [--rounds 3] [--quick] [--json FILE]

1. Partitions: the main GPT job (pp=4, 1f1b) and a wide MLP (pp=2, 1f1b) with
   `--partition uniform`, `params` and `auto`; median step time and measured
   bubble of each, and each partition's time over auto's.
2. The data-parallel all-reduce at pp=2 x dp=2 (interleaved, two chunks per
   rank, so one chunk's reduction can overlap the other's backwards):
   `--allreduce overlap` against `end`.
Runs alternate in rounds; each cell is the median over rounds of the run's
median step time. On a 2-core machine 4 ranks share the cores: read the
ratios, not the absolute times.
"""

import argparse
import json
import statistics
import subprocess
import sys

from mpipipe.comm.launcher import mpiexec_command

GPT = ["--model", "gpt", "--steps", "40"]
MLP = ["--data", "teacher", "--input-dim", "512", "--output-dim", "512", "--hidden", "512",
       "--layers", "8", "--dtype", "float32", "--optimizer", "sgd", "--lr", "0.001",
       "--global-batch", "256", "--samples", "1024", "--steps", "12"]
DP = MLP + ["--schedule", "interleaved", "--pp", "2", "--dp", "2", "--microbatches", "4"]


def run(ranks, options):
    command = [*mpiexec_command(ranks), sys.executable, "-m", "mpipipe", "train", *options,
               "--quiet", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round, few steps")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    short = ["--steps", "4"] if args.quick else []
    configs = {}
    for model, ranks, base in (("GPT, pp=4", 4, GPT), ("MLP 8x512, pp=2", 2, MLP)):
        for how in ("uniform", "params", "auto"):
            configs[("partition", model, how)] = (ranks, base + ["--partition", how] + short)
    for when in ("overlap", "end"):
        configs[("all-reduce", "MLP 8x512, pp=2 x dp=2", when)] = (4, DP + ["--allreduce", when]
                                                                   + short)
    results = {key: [] for key in configs}
    for round_ in range(rounds):
        for key, (ranks, options) in configs.items():
            results[key].append(run(ranks, options))
        print(f"round {round_ + 1}/{rounds} done", file=sys.stderr, flush=True)
    rows = []
    for key, runs in results.items():
        what, model, how = key
        rows.append({"what": what, "model": model, "setting": how,
                     "step_time_s": statistics.median(r["step_time_s"] for r in runs),
                     "bubble": statistics.median(r["bubble_fraction"] for r in runs),
                     "partition": runs[-1]["partition"]})
    print(f"median of {rounds} round(s)")
    print(f"{'':<11}{'model':<25}{'setting':<9}{'cut':<15}{'step ms':>9}{'bubble':>8}{'ratio':>7}")
    for row in rows:
        against = "auto" if row["what"] == "partition" else "overlap"
        reference = next(r for r in rows if r["model"] == row["model"] and
                         r["setting"] == against)
        row["ratio"] = row["step_time_s"] / reference["step_time_s"]
        print(f"{row['what']:<11}{row['model']:<25}{row['setting']:<9}{str(row['partition']):<15}"
              f"{row['step_time_s'] * 1e3:>9.1f}{row['bubble']:>8.3f}{row['ratio']:>7.2f}")
    print("ratio: the step time over auto's (partitions) or over overlap's (all-reduce)")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"rounds": rounds, "rows": rows}, out, indent=1)


if __name__ == "__main__":
    main()
