"""Lesson 8: pipeline x data parallelism, with Comm.Split.

    mpiexec -n 4 python lessons/08_pipeline_x_data.py

Four ranks become 2 pipelines (replicas) of 2 stages. Comm.Split with
color = replica groups each pipeline's ranks (they Send/Recv activations);
color = stage groups the ranks that hold the same layers (they Allreduce their
gradients once per step). The global batch is split between the replicas; the
result is the same training as one process on the whole batch.
"""

import numpy as np

from _common import WORLD, main_guard, need_ranks, say, train
from mpipipe.topology import grid


def main():
    need_ranks(4)
    size = WORLD.Get_size()
    pp, dp = 2, size // 2
    rank = WORLD.Get_rank()
    dp_index, pp_index = divmod(rank, pp)
    pipe = WORLD.Split(color=dp_index, key=pp_index)     # my pipeline (replica)
    data = WORLD.Split(color=pp_index, key=dp_index)     # my stage's replicas
    mine = np.array([float(rank)])
    total = np.empty(1)
    data.Allreduce(mine, total)                          # what the gradient all-reduce does
    seen = WORLD.gather((rank, pipe.Get_rank(), data.Get_rank(), total[0]), root=0)
    say(grid(pp, dp), "", "each rank: world rank, rank in its pipeline, rank in its "
        "data-parallel group, sum over its data-parallel group:",
        *(f"  rank {r}: pipeline rank {p}, data rank {d}, Allreduce sum {s:g}"
          for r, p, d, s in seen or []))
    result = train(schedule="1f1b", pp=pp, dp=dp, microbatches=4, dtype="float64", check=True)
    check = result.check
    say("", f"training pp={pp} x dp={dp}, {result.steps} steps: final loss "
        f"{result.final_loss:.6f}",
        f"against one process on the whole batch: losses differ by {check.loss_rel_err:.1e}, "
        f"weights by {check.weight_rel_err:.1e} (relative): "
        + ("the same training." if check.passed else "NOT the same training!"))


if __name__ == "__main__":
    main_guard(main)
