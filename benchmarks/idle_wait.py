"""What does a waiting rank cost? CPU burned while waiting, and step time when oversubscribed.

Part 1 (run under mpiexec -n 2): rank 1 waits 2 s for a message that rank 0
sends after sleeping; we print the CPU seconds rank 1 used meanwhile, with
mpipipe's polling wait and with MPI's blocking Wait (MPICH spins).

Part 2 (spawns its own jobs): the 4-stage pipeline on this machine's cores,
--wait poll vs --wait block, median step time, alternating runs.

    python benchmarks/idle_wait.py [--quick]
"""

import json
import os
import resource
import statistics
import subprocess
import sys

from mpipipe.comm.launcher import mpiexec_command


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def part1():
    import time

    import numpy as np
    from mpi4py import MPI

    from mpipipe.comm.p2p import Waiter

    comm = MPI.COMM_WORLD
    buffer = np.zeros(1024)
    results = {}
    for mode in ("poll", "block"):
        comm.Barrier()
        if comm.rank == 0:
            time.sleep(2.0)
            comm.Send(buffer, dest=1, tag=7)
        else:
            before, start = cpu_seconds(), time.perf_counter()
            Waiter(mode).wait(comm.Irecv(buffer, source=0, tag=7))
            results[mode] = (cpu_seconds() - before, time.perf_counter() - start)
    if comm.rank == 1:
        for mode, (cpu, wall) in results.items():
            print(f"  --wait {mode:<5}: waited {wall:.2f} s, used {cpu:.3f} s of CPU "
                  f"({cpu / wall:.0%} of a core)", flush=True)


def part2(rounds=3):
    args = ["--data", "teacher", "--input-dim", "512", "--output-dim", "512", "--hidden", "512",
            "--layers", "8", "--dtype", "float32", "--samples", "1024", "--steps", "15",
            "--quiet", "--json"]
    times = {"poll": [], "block": []}
    for _ in range(rounds):
        for mode in times:
            done = subprocess.run([*mpiexec_command(4), sys.executable, "-m", "mpipipe", "train",
                                   *args, "--wait", mode], capture_output=True, text=True,
                                  timeout=600, check=True)
            times[mode].append(json.loads(done.stdout.splitlines()[-1])["step_time_s"])
    poll, block = (statistics.median(times[m]) for m in ("poll", "block"))
    print(f"  4 ranks on {os.cpu_count()} cores, 8 x 512 layers, m=8: step time "
          f"poll {poll * 1e3:.1f} ms, block {block * 1e3:.1f} ms (block/poll = {block / poll:.2f})")


if __name__ == "__main__":
    if os.environ.get("MPIPIPE_IDLE_PART1"):
        part1()
    else:
        import argparse

        parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
        parser.add_argument("--quick", action="store_true", help="one round instead of three")
        quick = parser.parse_args().quick
        print("a rank waiting 2 s for a message:", flush=True)
        subprocess.run([*mpiexec_command(2), sys.executable, __file__], check=True,
                       env=dict(os.environ, MPIPIPE_IDLE_PART1="1"))
        rounds = 1 if quick else 3
        print(f"oversubscribed pipeline (median of {rounds} alternating runs each):", flush=True)
        part2(rounds)
