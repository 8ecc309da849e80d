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
    # When micro-batch mb's F and B of a stage finished: [stage][mb], None until then
    # (lists indexed by number, not dicts keyed by pairs: this loop runs 3 m V P times).
    forward_done = [[None] * m for _ in range(last + 1)]
    backward_done = [[None] * m for _ in range(last + 1)]
    next_forward = [0] * (last + 1)               # per stage: the next micro-batch to run
    next_backward = [0] * (last + 1)
    waiting_w = [deque() for _ in range(P)]       # (chunk, mb) whose W is still to do
    in_flight = [0] * P
    remaining = [3 * m * chunks] * P
    left = sum(remaining)
    programs = [[] for _ in range(P)]
    # Each rank's stages, most urgent first where micro-batches tie: the deeper stage
    # first when `deep_first`, else the shallower.
    served = [sorted(enumerate(stages), key=lambda cs: -cs[1] if deep_first else cs[1])
              for stages in stage_map]
    # The free rank whose clock is earliest goes next (ties: the lower rank): a heap
    # of (clock, rank). A rank with nothing to do until another rank acts is parked
    # in `stuck` and comes back when any rank makes progress.
    free, stuck = [(0.0, r) for r in range(P)], []
    # Every rank's actions, made before the play-out, rank by rank: the play-out
    # interleaves the ranks, and Actions made in its order would lie scattered in
    # memory, which slows every later pass over a rank's list (bookkeeping, lowering,
    # walks) by a third at scale. tuple.__new__: without Action's Python-level __new__.
    new = tuple.__new__
    made = [{kind: [[new(Action, (kind, mb, chunk, None, False)) for mb in range(m)]
                    for chunk in range(chunks)] for kind in (F, B, W)} for _ in range(P)]
    pop, push, never = heapq.heappop, heapq.heappush, math.inf     # looked up once
    while left:
        if not free:
            rank = min(stuck, key=lambda r: (clock[r], r))
            raise ConfigError(f"{name}: no rank can proceed: the memory limit "
                              f"{memory_limits[rank]} is too small for this pipeline")
        now, rank = pop(free)
        # The most urgent backward and forward ready now (lowest micro-batch, then the
        # stage order), and the earliest time one that is not ready yet will be.
        backward = forward = None
        later = never
        may_start = in_flight[rank] < memory_limits[rank]
        for chunk, stage in served[rank]:
            mb = next_backward[stage]
            if mb < m and forward_done[stage][mb] is not None:
                ready = forward_done[stage][mb] if stage == last else backward_done[stage + 1][mb]
                if ready is not None:
                    if ready > now:
                        later = ready if ready < later else later
                    elif backward is None or mb < backward[0]:
                        backward = (mb, chunk, stage)
            mb = next_forward[stage]
            if mb < m and may_start:
                ready = 0.0 if stage == 0 else forward_done[stage - 1][mb]
                if ready is not None:
                    if ready > now:
                        later = ready if ready < later else later
                    elif forward is None or mb < forward[0]:
                        forward = (mb, chunk, stage)
        if backward:
            kind, (mb, chunk, stage) = B, backward
        elif forward:
            kind, (mb, chunk, stage) = F, forward
        elif waiting_w[rank]:
            kind, (chunk, mb) = W, waiting_w[rank].popleft()
            stage = stage_map[rank][chunk]
        else:
            if later < never:
                clock[rank] = later
                push(free, (later, rank))
            else:
                stuck.append(rank)
            continue
        if stuck:
            for parked in stuck:
                push(free, (clock[parked], parked))
            stuck.clear()
        clock[rank] = now + 1.0
        remaining[rank] -= 1
        left -= 1
        if remaining[rank]:
            push(free, (clock[rank], rank))
        programs[rank].append(made[rank][kind][chunk][mb])
        if kind == F:
            forward_done[stage][mb] = clock[rank]
            next_forward[stage] += 1
            in_flight[rank] += 1
        elif kind == B:
            backward_done[stage][mb] = clock[rank]
            next_backward[stage] += 1
            waiting_w[rank].append((chunk, mb))
        else:
            in_flight[rank] -= 1
    return Schedule(name, P, m, programs, chunks=chunks, stage_map=stage_map)
