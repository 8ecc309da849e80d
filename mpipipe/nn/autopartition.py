"""--partition auto: cut the model where the simulator says the step is shortest.

Equal layer counts or equal parameter counts are proxies for equal time, and
poor ones at the ends of a GPT: the embedding has many parameters and little
work, the head and the loss much work per parameter. So:

1. profile: every rank times each block's forward (F), input gradient (B) and
   weight gradient (W) on its own device, on one micro-batch, a few times; the
   world averages the medians, so every rank holds the same figures;
2. search: every contiguous cut of the blocks into the schedule's stages (for
   chunks, into P x V stages, placed as the schedule places them) is
   simulated with those costs, and the shortest step wins (ties: the first
   cut in order). Past a few thousand cuts, the search starts from the cut
   that balances the heaviest stage and hands one block at a time from one
   stage to another while the simulated step gets shorter.

Training stays exact: a cut changes where blocks run, not what they compute.
"""

import math
import statistics
import time
from dataclasses import replace
from itertools import combinations, permutations

import numpy as np

from mpipipe.errors import ConfigError
from mpipipe.plan.partition import block_ranges
from mpipipe.plan.simulate import Costs, simulate
from .losses import LOSSES
from .model import build_stage

REPEATS = 5            # timings per block and action; the median is kept
ENUMERATE_UP_TO = 3000  # cuts simulated one by one; beyond, a local search


def block_times(setup, xp, repeats=REPEATS):
    """[(F, B, W) seconds] per block of `setup`'s model, on one micro-batch, on this rank's
    device; the last block's include the loss."""
    model = build_stage(setup.spec, range(setup.spec.num_blocks), xp=xp)
    data, size = setup.dataset, setup.microbatch_size
    inputs, targets = xp.asarray(data.inputs[:size]), xp.asarray(data.targets[:size])
    loss = LOSSES[data.loss]()
    runs = []
    for _ in range(repeats):
        forward, caches, x = [], [], inputs
        for block in model.layers:
            start = _now(xp)
            x, cache = block.forward(x)
            forward.append(_now(xp) - start)
            caches.append(cache)
        start = _now(xp)
        _, dy = loss(x, targets, setup.loss_denominator)
        forward[-1] += _now(xp) - start
        backward, weight = [0.0] * len(caches), [0.0] * len(caches)
        for i in reversed(range(len(caches))):
            block = model.layers[i]
            start = _now(xp)
            dx = block.backward_input(dy, caches[i], need_dx=i > 0)
            backward[i] = _now(xp) - start
            start = _now(xp)
            block.backward_weight(dy, caches[i])
            weight[i] = _now(xp) - start
            dy = dx
        runs.append(list(zip(forward, backward, weight)))
    return [tuple(statistics.median(run[i][k] for run in runs) for k in range(3))
            for i in range(len(runs[0]))]


def _now(xp):
    """The time, once the device has finished what was queued (so a GPU is timed too)."""
    if xp is not np:
        xp.cuda.get_current_stream().synchronize()
    return time.perf_counter()


def averaged(comm, times):
    """The same block times on every rank: the mean over the world."""
    from mpi4py import MPI

    mine = np.array(times, dtype=np.float64)
    total = np.empty_like(mine)
    comm.Allreduce(mine, total, op=MPI.SUM)
    return [tuple(row) for row in (total / comm.Get_size()).tolist()]


def stage_costs(times, partition):
    """(F, B, W) of each stage: the sums over its blocks."""
    return tuple(tuple(sum(times[b][k] for b in blocks) for k in range(3))
                 for blocks in block_ranges(partition))


def predicted(schedule, times, partition, recompute=False):
    """The planned timeline of one step with this cut (simulator, per-stage costs)."""
    return simulate(schedule, Costs(recompute=recompute,
                                    stage_costs=stage_costs(times, partition)))


def best_partition(schedule, times, recompute=False):
    """(the cut with the shortest simulated step, its timeline)."""
    blocks, stages = len(times), schedule.num_stages
    if blocks < stages:
        raise ConfigError(f"{stages} pipeline stages but the model has only {blocks} blocks")
    if math.comb(blocks - 1, stages - 1) <= ENUMERATE_UP_TO:
        candidates = (_sizes(cuts, blocks) for cuts in combinations(range(1, blocks), stages - 1))
        return min(((p, predicted(schedule, times, p, recompute)) for p in candidates),
                   key=lambda found: found[1].makespan)
    return _local_search(schedule, times, recompute)


def _sizes(cuts, blocks):
    edges = (0, *cuts, blocks)
    return [b - a for a, b in zip(edges, edges[1:])]


def _local_search(schedule, times, recompute):
    """From the cut that balances the heaviest stage's time, hand one block at a time from a
    stage to another (the stages between pass one on: every boundary between them moves
    by one) while the simulated step gets shorter."""
    from mpipipe.plan.partition import balanced_by_params

    weights = [round(1e9 * sum(t)) for t in times]          # integers for the balancer
    best = balanced_by_params(weights, schedule.num_stages)
    best_timeline = predicted(schedule, times, best, recompute)
    moved = True
    while moved:
        moved = False
        for giver, taker in permutations(range(len(best)), 2):
            trial = list(best)
            trial[giver] -= 1
            trial[taker] += 1
            if trial[giver] < 1:
                continue
            timeline = predicted(schedule, times, trial, recompute)
            if timeline.makespan < best_timeline.makespan:
                best, best_timeline, moved = trial, timeline, True
    return best, best_timeline


def choose(setup, comm, xp, say):
    """`setup` with the cut --partition auto finds (profiled here, the same on every rank)."""
    times = averaged(comm, block_times(setup, xp))
    partition, timeline = best_partition(setup.schedule, times, setup.config.recompute)
    say(f"partition auto: blocks per stage {partition}, predicted step "
        f"{timeline.makespan * 1e3:.2f} ms of compute, bubble {timeline.bubble_fraction:.3f} "
        f"(from each block's measured F, B and W)")
    blocks = block_ranges(partition)
    spec = setup.spec
    shapes = [spec.boundary_shape(r.start) for r in blocks] + [spec.boundary_shape(spec.num_blocks)]
    return replace(setup, partition=partition, blocks=blocks, shapes=shapes,
                   predicted=timeline)
