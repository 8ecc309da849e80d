"""mpipipe against PyTorch's pipelining: the same model, schedule, P and m, step times side by side.

Model: 8 x [Linear(1024, 1024) + GELU(tanh)], MSE (mean) on mpipipe's teacher data
(1024 samples), global batch 256, float32, SGD lr 0.001 momentum 0.9 (mpipipe's
sgd), one thread per rank. Both frameworks start from the same weights (the
PyTorch worker copies mpipipe's seeded blocks) and see the same batches, so their
losses agree step by step; the table shows first and last loss of each.

  mpipipe:  mpiexec -n P python -m mpipipe train --data teacher ... --pp P
            --microbatches m --schedule S --steps N --quiet --json
            step_time_s: rank 0's step (its barrier, the schedule, the loss
            all-reduce, the optimizer), median over steps 2..N.
  PyTorch:  mpiexec -n P python benchmarks/torch_pipeline_worker.py --schedule S
            --microbatches m --steps N
            torch.distributed (gloo, CPU, MASTER_ADDR 127.0.0.1 and a free port),
            rank r holds layers [r 8/P, (r+1) 8/P) as a pipelining.PipelineStage,
            driven by Schedule1F1B / ScheduleGPipe(n_microbatches=m); each step
            (zero_grad, schedule.step, optimizer.step) timed after a barrier, the
            slowest rank's time, median over steps 2..N.

Per configuration the two frameworks alternate in every round (the one going
first alternates too); each configuration's figure is the median over rounds of
the per-run medians, and ratio = mpipipe / PyTorch (below 1: mpipipe is faster).
"of bound" compares each framework's pipeline with a one-process run of the same
framework and m (mpipipe: `mpiexec -n 1 ... --pp 1`; PyTorch: a plain
nn.Sequential on one thread, gradients accumulated over the m micro-batches):
speedup / (P m / (m + P - 1)). The same shares and ratio are also printed paired by
round (each round's own runs, then the median), which the machine's drift over an
invocation moves less. Targets at P=2, m=8: 1f1b at >= 95% of its bound,
gpipe at >= 90%, and ratio <= 0.9 for both.

After the table, benchmarks/layer_profile.py (run as its own process, one thread)
prints the one-process step layer by layer for both frameworks, so that a gap in
the "1-proc" columns can be traced to the operation that makes it.

On a shared machine other processes distort the timings. Before each run the
script waits (up to --max-wait s) until others use under 0.25 cores, measures the
CPU time others took during the run (/proc/stat minus this script's children) and
repeats a run during which they took over 0.2 cores (--retries, default twice);
runs still disturbed are listed as warnings under the table.

    python benchmarks/vs_pytorch.py [--rounds 3] [--steps 12] [--quick] [--json FILE]

PyTorch is an optional benchmark dependency, never a runtime one. Install the CPU
build, without the CUDA wheels a plain `pip install torch` pulls in:

    pip install torch --index-url https://download.pytorch.org/whl/cpu
    pip install torch==2.13.0          # where a local CPU wheel is on pip's path

Without torch the script prints how to install it and a "skipped" line, exit 0.
"""

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from mpipipe.comm.launcher import mpiexec_command

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "torch_pipeline_worker.py")
LAYER_PROFILE = os.path.join(HERE, "layer_profile.py")
TARGETS = {"1f1b": 0.95, "gpipe": 0.90}     # mpipipe's share of the bound at P=2, m=8
TARGET_RATIO = 0.9                          # mpipipe's step over PyTorch's
MODEL = ["--data", "teacher", "--input-dim", "1024", "--output-dim", "1024", "--hidden", "1024",
         "--layers", "8", "--last-activation", "--dtype", "float32", "--optimizer", "sgd",
         "--lr", "0.001", "--global-batch", "256", "--samples", "1024"]
INSTALL = ("install the CPU build of PyTorch (no CUDA wheels):\n"
           "  pip install torch --index-url https://download.pytorch.org/whl/cpu\n"
           "  or, from a local CPU wheel: pip install torch==2.13.0")


def torch_missing():
    """None if torch.distributed.pipelining (with gloo) can be used, else why not."""
    try:
        import torch
        import torch.distributed as dist
        if not dist.is_available() or not dist.is_gloo_available():
            return f"torch {torch.__version__} has no torch.distributed / gloo"
        import torch.distributed.pipelining  # noqa: F401
    except ImportError as error:
        return f"torch is not importable ({error})"
    return None



def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine_busy_s():
    """CPU seconds the whole machine has spent busy (all cores, /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_s():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_for_quiet(limit_s, threshold=0.25):
    """Wait (up to limit_s) until other processes use less than `threshold` cores."""
    waited = 0.0
    while waited < limit_s:
        before = machine_busy_s()
        if before is None:
            return
        time.sleep(1.0)
        busy = machine_busy_s() - before
        if busy < threshold:
            return
        if waited == 0:
            print(f"  the machine is busy ({busy:.1f} cores used by others): waiting", file=sys.stderr,
                  flush=True)
        waited += 1.0


def run(framework, ranks, schedule, m, steps, quiet_s=120, retries=2, foreign_limit=0.2):
    """One run, repeated (up to `retries` times) if other processes took more than
    `foreign_limit` cores on average while it ran; its summary, with foreign_cpu."""
    for attempt in range(retries + 1):
        wait_for_quiet(quiet_s)
        busy, mine, start = machine_busy_s(), children_cpu_s(), time.perf_counter()
        summary = run_once(framework, ranks, schedule, m, steps)
        wall = time.perf_counter() - start
        if busy is None:
            return summary
        summary["foreign_cpu"] = max(0.0, (machine_busy_s() - busy - (children_cpu_s() - mine)) / wall)
        summary["attempts"] = attempt + 1
        if summary["foreign_cpu"] <= foreign_limit:
            break
        print(f"  {framework} {schedule} m={m}: other processes used {summary['foreign_cpu']:.2f} "
              f"cores during the run" + ("; running it again" if attempt < retries else ""),
              file=sys.stderr, flush=True)
    return summary


def run_once(framework, ranks, schedule, m, steps):
    """One run; returns its summary (step_time_s, losses, ...)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if framework == "mpipipe":
        command = [*mpiexec_command(ranks), sys.executable, "-m", "mpipipe", "train", *MODEL,
                   "--microbatches", str(m), "--pp", str(ranks), "--steps", str(steps),
                   "--quiet", "--json"]
        if ranks > 1:
            command += ["--schedule", schedule]
    else:
        worker = [sys.executable, WORKER, "--microbatches", str(m), "--steps", str(steps)]
        if ranks == 1:
            command = worker + ["--single"]
        else:
            command = [*mpiexec_command(ranks), *worker, "--schedule", schedule]
            env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stdout[-3000:]}"
                 f"\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_torch_pipeline(summary, ranks, m, steps):
    """The PyTorch run really used `ranks` stages, each with its share of the layers."""
    stages = summary["stages"]
    per = 8 // ranks
    problems = []
    if [s["stage_index"] for s in stages] != list(range(ranks)):
        problems.append(f"stage indices {[s['stage_index'] for s in stages]}")
    for s in stages:
        if s["num_stages"] != ranks or s["layers"] != [s["rank"] * per, (s["rank"] + 1) * per]:
            problems.append(f"rank {s['rank']} holds layers {s['layers']} of {s['num_stages']} stages")
        if s["forward_calls"] < steps * m:   # + 1 shape-inference forward in dynamic mode
            problems.append(f"rank {s['rank']} ran {s['forward_calls']} forwards (< {steps * m})")
        if not s["grad_norm"] > 0:
            problems.append(f"rank {s['rank']} has no gradient")
    return problems


def layer_profile(rounds):
    """benchmarks/layer_profile.py in its own process (its table printed); its rows."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "profile.json")
        print(flush=True)
        done = subprocess.run([sys.executable, LAYER_PROFILE, "--rounds", str(rounds),
                               "--json", out], timeout=900)
        if done.returncode or not os.path.exists(out):
            print(f"warning: {os.path.basename(LAYER_PROFILE)} failed ({done.returncode})")
            return None
        with open(out) as f:
            return json.load(f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None, help="default 3 (--quick: 2)")
    parser.add_argument("--steps", type=int, default=None, help="default 12 (--quick: 6)")
    parser.add_argument("--pp", type=int, default=2, help="pipeline stages P (default 2)")
    parser.add_argument("--microbatches", default="4,8")
    parser.add_argument("--schedules", default="1f1b,gpipe")
    parser.add_argument("--quick", action="store_true",
                        help="only 1f1b with m=8, 2 rounds of 6 steps")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--max-wait", type=float, default=None,
                        help="before each run wait up to this many seconds for other processes "
                             "to leave the cores alone (default 120; --quick: 15)")
    parser.add_argument("--retries", type=int, default=None,
                        help="repeat a run during which other processes took over 0.2 cores "
                             "at most this many times (default 2; --quick: 1)")
    args = parser.parse_args()
    if args.quick:
        args.microbatches, args.schedules = "8", "1f1b"
    rounds = args.rounds or (2 if args.quick else 3)
    max_wait = args.max_wait if args.max_wait is not None else (15 if args.quick else 120)
    retries = args.retries if args.retries is not None else (1 if args.quick else 2)
    steps = args.steps or (6 if args.quick else 12)
    P = args.pp
    if 8 % P:
        sys.exit("--pp must divide the 8 layers (1, 2, 4 or 8)")

    why = torch_missing()
    if why:
        print(f"{why}\n{INSTALL}")
        print("vs_pytorch: skipped (PyTorch not installed)")
        if args.json:
            with open(args.json, "w") as out:
                json.dump({"skipped": why, "install": INSTALL}, out, indent=1)
        return
    import torch
    torch_version = torch.__version__

    ms = [int(m) for m in args.microbatches.split(",")]
    configs = [("single", m) for m in ms] + [(s, m) for s in args.schedules.split(",") for m in ms]
    results = {(fw, key): [] for key in configs for fw in ("pytorch", "mpipipe")}
    problems = []
    print(f"vs_pytorch: torch {torch_version}, P={P}, {rounds} rounds x {steps} steps, "
          f"configs {', '.join(f'{s} m={m}' for s, m in configs)}", file=sys.stderr, flush=True)
    for round_ in range(rounds):
        order = ("pytorch", "mpipipe") if round_ % 2 == 0 else ("mpipipe", "pytorch")
        for schedule, m in configs:
            ranks = 1 if schedule == "single" else P
            for framework in order:
                summary = run(framework, ranks, schedule, m, steps, quiet_s=max_wait,
                              retries=retries)
                if summary.get("foreign_cpu", 0.0) > 0.2:
                    problems.append(f"{framework} {schedule} m={m} round {round_ + 1}: other "
                                    f"processes used {summary['foreign_cpu']:.2f} cores during it")
                results[(framework, (schedule, m))].append(summary)
                if framework == "pytorch" and ranks > 1:
                    problems += [f"{schedule} m={m}: {p}"
                                 for p in check_torch_pipeline(summary, ranks, m, steps)]
        print(f"round {round_ + 1}/{rounds} done", file=sys.stderr, flush=True)

    def median(framework, key):
        return statistics.median(r["step_time_s"] for r in results[(framework, key)])

    def losses(framework, key):
        first = results[(framework, key)][0]["losses"]
        return first[0], first[-1]

    bound = {m: P * m / (m + P - 1) for m in ms}
    rows = []
    for schedule, m in configs:
        if schedule == "single":
            continue
        key = (schedule, m)
        row = {"schedule": schedule, "pp": P, "microbatches": m,
               "pytorch_s": median("pytorch", key), "mpipipe_s": median("mpipipe", key),
               "pytorch_single_s": median("pytorch", ("single", m)),
               "mpipipe_single_s": median("mpipipe", ("single", m)), "bound": bound[m]}
        row["ratio"] = row["mpipipe_s"] / row["pytorch_s"]
        for fw in ("pytorch", "mpipipe"):
            row[f"{fw}_speedup"] = row[f"{fw}_single_s"] / row[f"{fw}_s"]
            row[f"{fw}_fraction_of_bound"] = row[f"{fw}_speedup"] / bound[m]
            row[f"{fw}_loss_first"], row[f"{fw}_loss_last"] = losses(fw, key)
            row[f"{fw}_runs_s"] = [r["step_time_s"] for r in results[(fw, key)]]
            row[f"{fw}_foreign_cpu"] = [r.get("foreign_cpu") for r in results[(fw, key)]]
            row[f"{fw}_step_times_s"] = [r["step_times_s"] for r in results[(fw, key)]]
            # the same share from each round's own pair of runs: minutes apart, not a
            # whole invocation, so less moved by the machine's drift
            row[f"{fw}_fraction_of_bound_by_round"] = statistics.median(
                one["step_time_s"] / run_["step_time_s"] / bound[m]
                for one, run_ in zip(results[(fw, ("single", m))], results[(fw, key)]))
        row["ratio_by_round"] = statistics.median(
            ours["step_time_s"] / theirs["step_time_s"]
            for ours, theirs in zip(results[("mpipipe", key)], results[("pytorch", key)]))
        rows.append(row)
        for fw in ("pytorch", "mpipipe"):
            first, last = row[f"{fw}_loss_first"], row[f"{fw}_loss_last"]
            if not last < first:
                problems.append(f"{schedule} m={m}: {fw} loss did not decrease ({first} -> {last})")

    print(f"\nmpipipe vs torch.distributed.pipelining (torch {torch_version}, gloo, CPU), P={P}: "
          f"median over {rounds} alternating rounds of each run's median step (steps 2..{steps})\n")
    print("| schedule | m | PyTorch ms | mpipipe ms | mpipipe/PyTorch | 1-proc PyTorch ms "
          "| 1-proc mpipipe ms | 1-proc mpipipe/PyTorch | bound | PyTorch of bound "
          "| mpipipe of bound | loss PyTorch (first -> last) | loss mpipipe (first -> last) |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|")
    for r in rows:
        print(f"| {r['schedule']} | {r['microbatches']} | {r['pytorch_s'] * 1e3:.1f} "
              f"| {r['mpipipe_s'] * 1e3:.1f} | {r['ratio']:.2f} | {r['pytorch_single_s'] * 1e3:.1f} "
              f"| {r['mpipipe_single_s'] * 1e3:.1f} "
              f"| {r['mpipipe_single_s'] / r['pytorch_single_s']:.2f} | {r['bound']:.2f} "
              f"| {r['pytorch_fraction_of_bound']:.0%} | {r['mpipipe_fraction_of_bound']:.0%} "
              f"| {r['pytorch_loss_first']:.5f} -> {r['pytorch_loss_last']:.5f} "
              f"| {r['mpipipe_loss_first']:.5f} -> {r['mpipipe_loss_last']:.5f} |")
    print("\npaired by round (each round's one-process and pipeline runs, then the median "
          "over rounds):")
    for r in rows:
        print(f"  {r['schedule']} m={r['microbatches']}: of bound mpipipe "
              f"{r['mpipipe_fraction_of_bound_by_round']:.0%}, PyTorch "
              f"{r['pytorch_fraction_of_bound_by_round']:.0%}; mpipipe/PyTorch "
              f"{r['ratio_by_round']:.2f}")
    print()
    for r in rows:
        if P == 2 and r["microbatches"] == 8 and r["schedule"] in TARGETS:
            share, ratio = r["mpipipe_fraction_of_bound"], r["ratio"]
            goal = TARGETS[r["schedule"]]
            print(f"target {r['schedule']}: mpipipe at {share:.0%} of the bound (>= {goal:.0%}: "
                  f"{'met' if share >= goal else 'NOT met'}), {ratio:.2f} x PyTorch's step "
                  f"(<= {TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'NOT met'})")
    profile = layer_profile(rounds=3 if args.quick else 7)
    for problem in problems:
        print(f"warning: {problem}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"torch_version": torch_version, "pp": P, "rounds": rounds, "steps": steps,
                       "rows": rows, "problems": problems, "layer_profile": profile,
                       "single": {f"{fw} m={m}": [r["step_time_s"] for r in results[(fw, ("single", m))]]
                                  for fw in ("pytorch", "mpipipe") for m in ms}}, out, indent=1)


if __name__ == "__main__":
    main()
