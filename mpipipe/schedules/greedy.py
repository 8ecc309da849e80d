"""A list scheduler: build a split-backward schedule by playing it out in time.

The zero-bubble papers find their schedules with a heuristic rather than a
closed formula, and so does this module. It simulates the ranks with unit
costs (F = B = W = 1) and, whenever a rank is free, gives it the most urgent
work that is ready:

  1. a B whose gradient has arrived: the previous stage is waiting for it;
  2. else an F whose input has arrived, if the rank's memory limit allows
     one more micro-batch in flight (counted from F to its W);
  3. else a W: it is needed by no one until the optimizer step, so it fills
     what would otherwise be a bubble;
  4. else wait for the next arrival.

Ties go to the lower micro-batch, then to the deeper stage when `deep_first`
(ZB-V wants the returning chunk to drain first). The order found is fixed
into action lists, which the engine runs whatever the real costs turn out
to be: the plan is a plan, the trace shows what really happened.
"""

import heapq
import math
from collections import deque

from mpipipe.errors import ConfigError
from .actions import B, F, W, Action, Schedule
from .quiet_gc import without_gc


@without_gc      # a million small objects at scale: see quiet_gc.py
def schedule_greedily(name, num_ranks, num_microbatches, stage_map, memory_limits,
                      deep_first=False):
    """Action lists for the ranks; stage_map[rank][chunk] = stage, as in Schedule."""
    P, m = num_ranks, num_microbatches
    chunks = len(stage_map[0])
    last = P * chunks - 1
    clock = [0.0] * P
    forward_done, backward_done = {}, {}          # (mb, stage) -> finish time
    next_forward = {s: 0 for r in range(P) for s in stage_map[r]}
    next_backward = dict(next_forward)
    waiting_w = [deque() for _ in range(P)]       # (chunk, mb) whose W is still to do
    in_flight = [0] * P
    remaining = [3 * m * chunks] * P
    left = sum(remaining)
    programs = [[] for _ in range(P)]
    # The free rank whose clock is earliest goes next (ties: the lower rank): a heap
    # of (clock, rank). A rank with nothing to do until another rank acts is parked
    # in `stuck` and comes back when any rank makes progress.
    free, stuck = [(0.0, r) for r in range(P)], []
    while left:
        if not free:
            rank = min(stuck, key=lambda r: (clock[r], r))
            raise ConfigError(f"{name}: no rank can proceed: the memory limit "
                              f"{memory_limits[rank]} is too small for this pipeline")
        now, rank = heapq.heappop(free)
        # The most urgent backward and forward ready now (lowest micro-batch, then the
        # stage order), and the earliest time one that is not ready yet will be.
        backward = forward = None
        later = math.inf
        for chunk, stage in enumerate(stage_map[rank]):
            order = -stage if deep_first else stage
            mb = next_backward[stage]
            if mb < m and (mb, stage) in forward_done:
                ready = forward_done[mb, stage] if stage == last else backward_done.get((mb, stage + 1))
                if ready is not None:
                    if ready > now:
                        later = ready if ready < later else later
                    elif backward is None or (mb, order) < backward[:2]:
                        backward = (mb, order, chunk, stage)
            mb = next_forward[stage]
            if mb < m and in_flight[rank] < memory_limits[rank]:
                ready = 0.0 if stage == 0 else forward_done.get((mb, stage - 1))
                if ready is not None:
                    if ready > now:
                        later = ready if ready < later else later
                    elif forward is None or (mb, order) < forward[:2]:
                        forward = (mb, order, chunk, stage)
        if backward:
            kind, (mb, _, chunk, stage) = B, backward
        elif forward:
            kind, (mb, _, chunk, stage) = F, forward
        elif waiting_w[rank]:
            kind, (chunk, mb) = W, waiting_w[rank].popleft()
            stage = stage_map[rank][chunk]
        else:
            if later < math.inf:
                clock[rank] = later
                heapq.heappush(free, (later, rank))
            else:
                stuck.append(rank)
            continue
        for parked in stuck:
            heapq.heappush(free, (clock[parked], parked))
        stuck = []
        clock[rank] = now + 1.0
        remaining[rank] -= 1
        left -= 1
        if remaining[rank]:
            heapq.heappush(free, (clock[rank], rank))
        programs[rank].append(Action(kind, mb, chunk))
        if kind == F:
            forward_done[mb, stage] = clock[rank]
            next_forward[stage] += 1
            in_flight[rank] += 1
        elif kind == B:
            backward_done[mb, stage] = clock[rank]
            next_backward[stage] += 1
            waiting_w[rank].append((chunk, mb))
        else:
            in_flight[rank] -= 1
    return Schedule(name, P, m, programs, chunks=chunks, stage_map=stage_map)
