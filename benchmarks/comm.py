"""Communication: mpipipe's transfer against raw mpi4py, and the cost of an action.

Run under two ranks:

    mpiexec -n 2 python benchmarks/comm.py [--quick] [--json FILE]

1. Ping-pong of one activation (32 x 1024 float32 = 128 KiB, and other sizes),
   rank 0 <-> rank 1, median one-way time over many rounds:
   raw       comm.Send / comm.Recv (blocking, MPI's own wait)
   raw-nb    comm.Isend / comm.Irecv + Wait
   mpipipe   mpipipe.comm.p2p.PointToPoint: Isend, Irecv into a reused buffer, polling wait
   ratio = mpipipe / raw (the target: within 10%).
2. Per-action overhead of the engine: the median time of F and BW actions in a
   one-rank run (as the engine records them) minus the time of the same stage's
   forward/backward called directly on the same arrays. This is the smallest
   useful amount of work per micro-batch: actions much shorter than that are
   mostly overhead.
"""

import argparse
import json
import statistics
import time

import mpipipe  # noqa: F401  (one BLAS thread per rank)
import numpy as np
from mpi4py import MPI

from mpipipe.comm.p2p import PointToPoint, Waiter

COMM = MPI.COMM_WORLD


def ping_pong(nbytes, rounds, mode):
    """Median one-way seconds for `nbytes` between ranks 0 and 1."""
    send = np.ones(nbytes // 4, dtype=np.float32)
    recv = np.empty_like(send)
    p2p = PointToPoint(COMM, Waiter.for_node("poll", None, COMM.Get_size()))
    peer = 1 - COMM.Get_rank()
    times = []
    for i in range(rounds + 2):
        COMM.Barrier()
        start = time.perf_counter()
        for turn in (0, 1):
            if COMM.Get_rank() == turn:
                if mode == "raw":
                    COMM.Send(send, dest=peer, tag=5)
                elif mode == "raw-nb":
                    COMM.Isend(send, dest=peer, tag=5).Wait()
                else:
                    p2p.send(send, peer, 5)
                    p2p.finish()
            else:
                if mode == "raw":
                    COMM.Recv(recv, source=peer, tag=5)
                elif mode == "raw-nb":
                    COMM.Irecv(recv, source=peer, tag=5).Wait()
                else:
                    p2p.recv(recv, peer, 5)
        if i >= 2:
            times.append((time.perf_counter() - start) / 2)
    return statistics.median(times)


def action_overhead(steps):
    """(engine F, direct forward, engine BW, direct backward) medians in seconds, one rank."""
    from mpipipe.config import TrainConfig
    from mpipipe.train import run_training

    config = TrainConfig(data="teacher", input_dim=256, output_dim=256, hidden=256, layers=2,
                         dtype="float32", optimizer="sgd", lr=0.001, global_batch=256,
                         microbatches=8, samples=512, steps=steps, schedule="1f1b")
    run = run_training(config, MPI.COMM_SELF, keep_all_steps=True)
    kinds = {"F": [], "BW": []}
    for *_, actions in run.records[1:]:
        for action, start, end, _ in actions:
            if action.kind in kinds:
                kinds[action.kind].append(end - start)
    stage = run.chunks[0].layers
    x = np.random.default_rng(0).standard_normal((32, 256)).astype(np.float32)
    direct_f, direct_b = [], []
    for _ in range(200):
        t0 = time.perf_counter()
        y, cache = stage.forward(x)
        t1 = time.perf_counter()
        stage.backward(y, cache, need_dx=False)
        t2 = time.perf_counter()
        direct_f.append(t1 - t0)
        direct_b.append(t2 - t1)
    med = statistics.median
    return med(kinds["F"]), med(direct_f), med(kinds["BW"]), med(direct_b)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    if COMM.Get_size() != 2:
        raise SystemExit("run with: mpiexec -n 2 python benchmarks/comm.py")
    rounds = 50 if args.quick else 400
    sizes = [128 * 1024] if args.quick else [4 * 1024, 128 * 1024, 1024 * 1024, 8 * 1024 * 1024]
    rows = []
    for nbytes in sizes:
        row = {"bytes": nbytes}
        for mode in ("raw", "raw-nb", "mpipipe", "raw", "raw-nb", "mpipipe"):   # twice, alternating
            row.setdefault(mode, []).append(ping_pong(nbytes, rounds // 2, mode))
        rows.append({k: (min(v) if isinstance(v, list) else v) for k, v in row.items()})
    overhead = action_overhead(4 if args.quick else 12) if COMM.Get_rank() == 0 else None
    if COMM.Get_rank() == 0:
        print(f"one-way time, median of {rounds} ping-pongs (best of two alternating runs):")
        print(f"{'bytes':>10} {'raw us':>9} {'raw-nb us':>10} {'mpipipe us':>11} {'mpipipe/raw':>12}")
        for r in rows:
            print(f"{r['bytes']:>10} {r['raw'] * 1e6:>9.1f} {r['raw-nb'] * 1e6:>10.1f} "
                  f"{r['mpipipe'] * 1e6:>11.1f} {r['mpipipe'] / r['raw']:>12.2f}")
        f_engine, f_direct, b_engine, b_direct = overhead
        print(f"per-action overhead (one rank, 2 x Linear(256,256)+GELU, micro-batch 32): "
              f"F {1e6 * (f_engine - f_direct):.0f} us ({1e6 * f_engine:.0f} in the engine, "
              f"{1e6 * f_direct:.0f} direct), BW {1e6 * (b_engine - b_direct):.0f} us "
              f"({1e6 * b_engine:.0f} vs {1e6 * b_direct:.0f})")
        if args.json:
            with open(args.json, "w") as out:
                json.dump({"ping_pong": rows, "overhead_s": {
                    "F": f_engine - f_direct, "BW": b_engine - b_direct}}, out, indent=1)


if __name__ == "__main__":
    main()
