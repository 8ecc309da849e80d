"""Lesson 8: pipeline x data parallelism, with Comm.Split.

    .venv/bin/mpiexec -n 4 .venv/bin/python lessons/08_pipeline_x_data.py

Four ranks become 2 pipelines (replicas) of 2 stages. Comm.Split with
color = replica groups each pipeline's ranks (they Send/Recv activations);
color = stage groups the ranks that hold the same layers (they Allreduce their
gradients once per step). The global batch is split between the replicas; the
result is the same training as one process on the whole batch.
"""

import statistics
import time

# _common first: it limits BLAS to one thread per rank before NumPy loads
from _common import OUT, WORLD, activation_bytes, main_guard, need_ranks, say, train
import numpy as np  # noqa: E402

from _checks import Checks
from _figures import draw
from mpipipe.comm.p2p import Waiter, allreduce_sum
from mpipipe.schedules.actions import ALLREDUCE
from mpipipe.comm.topology import grid

BATCH, LAYERS, M, PP = 256, 8, 4, 2
REPEATS = 10


def main():
    need_ranks(4)
    size, rank = WORLD.Get_size(), WORLD.Get_rank()
    if size % PP or BATCH % (size // PP * M):
        say(f"this lesson needs an even number of ranks that divides {BATCH // M} replicas")
        raise SystemExit(2)
    pp, dp = PP, size // PP
    checks = Checks()
    dp_index, pp_index = divmod(rank, pp)
    pipe = WORLD.Split(color=dp_index, key=pp_index)     # my pipeline (replica)
    data = WORLD.Split(color=pp_index, key=dp_index)     # my stage's replicas
    mine = np.array([float(rank)])
    total = np.empty(1)
    data.Allreduce(mine, total)                          # what the gradient all-reduce does
    seen = WORLD.gather((rank, pipe.Get_rank(), data.Get_rank(), total[0]), root=0)
    for r, _, _, got in seen or []:   # a stage's ranks are s, s + pp, s + 2 pp, ...
        stage = r % pp
        checks.exact("allreduce", dict(rank=r), got, sum(d * pp + stage for d in range(dp)))
    say(grid(pp, dp), "", "each rank: world rank, rank in its pipeline, rank in its "
        "data-parallel group, sum over its data-parallel group:",
        *(f"  rank {r}: pipeline rank {p}, data rank {d}, Allreduce sum {s:g}"
          for r, p, d, s in seen or []))
    r = train(schedule="1f1b", pp=pp, dp=dp, microbatches=M, dtype="float64", check=True)
    s = r.summary
    label = dict(pp=pp, dp=dp)
    checks.equivalence(label, s)
    checks.bubble(label, r)
    for stage in range(pp):
        count = min(pp - stage, M)
        checks.exact("stash", {**label, "rank": stage}, s.peak_stash[stage], count)
        checks.exact("memory", {**label, "rank": stage}, s.peak_stash_bytes[stage],
                     count * activation_bytes(LAYERS // pp, BATCH // dp // M, bytes_per_number=8))
    seconds, nbytes = time_allreduce(r.run)
    if rank == 0:
        check = s.check
        say("", f"training pp={pp} x dp={dp}, 1f1b, m = {M} per replica, float64, {s.steps} "
            f"steps: final loss {s.final_loss:.6f}",
            f"against one process on the whole batch: losses differ by {check.loss_rel_err:.1e}, "
            f"weights by {check.weight_rel_err:.1e} (relative): "
            + ("the same training." if check.passed else "NOT the same training!"), "",
            "replica 0's pipeline in detail:", *r.explain(),
            draw(f"{OUT}/08_pipeline_x_data.png", r, f"1f1b, pp={pp} x dp={dp}, m={M}"), "",
            f"the gradient all-reduce, timed alone ({REPEATS} times, median), per stage:",
            *(f"  stage {st}: {nbytes[st] / 2**20:.2f} MiB of gradients over {dp} replicas in "
              f"{seconds[st] * 1e3:.2f} ms: {2 * (dp - 1) / dp * nbytes[st] / seconds[st] / 1e9:.2f}"
              " GB/s sent per rank (a ring sends 2(n-1)/n of the data)" for st in range(pp)),
            "in the training's last step (the engine's trace, from its start after the stage's "
            "last backward to its end):", "  " + ", ".join(
                f"stage {e.rank} {e.end - e.start:.2f} ms" for e in r.measured[-1].events
                if e.action.kind == ALLREDUCE),
            "", f"answer: ranks {', '.join(str(q) for q in range(1, size, pp))} (stage 1) sum to "
            f"{seen[1][3]:g}; the all-reduce takes "
            f"{max(seconds.values()) * 1e3:.2f} ms of a {r.step_ms:.1f} ms step "
            f"({max(seconds.values()) * 1e3 / r.step_ms:.0%}), once per step.", "")
    checks.finish()


def time_allreduce(run):
    """Sum a copy of this rank's gradients over its data-parallel group, as the engine does
    once per step: (median seconds per stage, bytes per stage), on rank 0."""
    grads = np.concatenate([chunk.layers.flat_grads for chunk in run.chunks])
    waiter = Waiter.for_node("poll", None, run.topology.node.Get_size())
    times = []
    for _ in range(REPEATS):
        buffer = grads.copy()
        waiter.barrier(WORLD)
        start = time.perf_counter()
        allreduce_sum(run.topology.data, buffer, waiter)
        times.append(time.perf_counter() - start)
    gathered = WORLD.gather((run.topology.pp_index, statistics.median(times), grads.nbytes), root=0)
    if gathered is None:
        return None, None
    seconds = {stage: max(t for s, t, _ in gathered if s == stage) for stage, _, _ in gathered}
    nbytes = {stage: b for stage, _, b in gathered}
    return seconds, nbytes


if __name__ == "__main__":
    main_guard(main)
