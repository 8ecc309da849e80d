"""How close does a pipeline get to its bound? One invocation, printed as a table.

Model: 8 x [Linear(1024, 1024) + GELU(tanh)], MSE on teacher data, global batch
256, float32, SGD, one BLAS thread per rank. For each schedule, P and m:

  one process, m micro-batches   mpiexec -n 1 mpipipe train --pp 1 --microbatches m
  P stages,    m micro-batches   mpiexec -n P mpipipe train --pp P --microbatches m
  one process, full batch        mpiexec -n 1 mpipipe train --pp 1 --microbatches 1

speedup = one-process time (same m) / pipeline time. The bound is the
schedule's own: P x (1 - its planned bubble), i.e. P m / (m + P - 1) for GPipe
and 1F1B. Smaller micro-batches make each matrix product less efficient, so the
speedup over the full-batch one-process run is printed too. Configurations
alternate in rounds; each cell is the median over rounds of each run's median
step time. With more ranks than cores a row is flagged: the ranks share cores.

    python benchmarks/pipeline_speedup.py [--rounds 3] [--steps 12]
        [--schedules 1f1b,gpipe] [--ranks 2] [--microbatches 4,8] [--json FILE]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

from mpipipe.comm.launcher import mpiexec_command
from mpipipe.schedules import validated_schedule
from mpipipe.plan.simulate import simulate

MODEL = ["--data", "teacher", "--input-dim", "1024", "--output-dim", "1024", "--hidden", "1024",
         "--layers", "8", "--last-activation", "--dtype", "float32", "--optimizer", "sgd",
         "--lr", "0.001", "--global-batch", "256", "--samples", "1024"]



def step_time(ranks, steps, extra):
    command = [*mpiexec_command(ranks), sys.executable, "-m", "mpipipe", "train", *MODEL,
               "--pp", str(ranks), "--steps", str(steps), "--quiet", "--json", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    if done.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return summary["step_time_s"], summary["bubble_fraction"]


def accepts(schedule, P, m):
    try:
        validated_schedule(schedule, P, m)
        return True
    except ValueError:
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--microbatches", default="4,8")
    parser.add_argument("--schedules", default="1f1b,gpipe")
    parser.add_argument("--ranks", default="2")
    parser.add_argument("--json", help="also write the table here")
    args = parser.parse_args()
    ms = [int(m) for m in args.microbatches.split(",")]
    Ps = [int(p) for p in args.ranks.split(",")]
    configs = {("one process", 1, 1): (1, ["--microbatches", "1"])}
    for m in ms:
        configs[("one process", 1, m)] = (1, ["--microbatches", str(m)])
        for P in Ps:
            for schedule in args.schedules.split(","):
                if accepts(schedule, P, m):
                    configs[(schedule, P, m)] = (P, ["--microbatches", str(m), "--schedule",
                                                     schedule])
    times = {key: [] for key in configs}
    bubbles = {key: [] for key in configs}
    for round_ in range(args.rounds):
        for key, (ranks, extra) in configs.items():
            t, b = step_time(ranks, args.steps, extra)
            times[key].append(t)
            bubbles[key].append(b)
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    median = {key: statistics.median(v) for key, v in times.items()}
    full = median[("one process", 1, 1)]
    cores = os.cpu_count() or 1
    rows = []
    print(f"one process, full batch: {full * 1e3:.1f} ms/step (median of {args.rounds} runs x "
          f"{args.steps - 1} steps)")
    print(f"{'schedule':<12}{'P':>3}{'m':>4}{'1-proc ms':>11}{'pipe ms':>9}{'speedup':>9}"
          f"{'bound':>7}{'of bound':>10}{'vs full':>9}{'bubble':>8}")
    for (schedule, P, m), t in median.items():
        if schedule == "one process":
            continue
        single = median[("one process", 1, m)]
        bound = P * (1 - simulate(validated_schedule(schedule, P, m)).bubble_fraction)
        row = {"schedule": schedule, "P": P, "m": m, "one_process_s": single, "pipeline_s": t,
               "speedup": single / t, "bound": bound, "fraction_of_bound": single / t / bound,
               "speedup_vs_full_batch": full / t, "oversubscribed": P > cores,
               "bubble_measured": statistics.median(bubbles[(schedule, P, m)])}
        rows.append(row)
        flag = "  (oversubscribed)" if P > cores else ""
        print(f"{schedule:<12}{P:>3}{m:>4}{single * 1e3:>11.1f}{t * 1e3:>9.1f}{row['speedup']:>9.2f}"
              f"{bound:>7.2f}{row['fraction_of_bound']:>9.0%}{row['speedup_vs_full_batch']:>9.2f}"
              f"{row['bubble_measured']:>8.3f}{flag}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"full_batch_s": full, "rows": rows}, out, indent=1)


if __name__ == "__main__":
    main()
