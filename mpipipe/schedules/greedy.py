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

from ..errors import ConfigError
from .actions import B, F, W, Action, Schedule


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
    waiting_w = [[] for _ in range(P)]            # (chunk, mb) whose W is still to do
    in_flight = [0] * P
    remaining = [3 * m * chunks] * P
    programs = [[] for _ in range(P)]
    stuck = [False] * P     # nothing to do until another rank acts
    while any(remaining):
        rank = min((r for r in range(P) if remaining[r]), key=lambda r: (stuck[r], clock[r]))
        now = clock[rank]
        backwards, forwards = [], []
        for chunk, stage in enumerate(stage_map[rank]):
            mb = next_backward[stage]
            if mb < m and (mb, stage) in forward_done:
                ready = forward_done[mb, stage] if stage == last else backward_done.get((mb, stage + 1))
                if ready is not None:
                    backwards.append((ready, mb, -stage if deep_first else stage, chunk, stage))
            mb = next_forward[stage]
            if mb < m and in_flight[rank] < memory_limits[rank]:
                ready = 0.0 if stage == 0 else forward_done.get((mb, stage - 1))
                if ready is not None:
                    forwards.append((ready, mb, -stage if deep_first else stage, chunk, stage))
        ready_b = [c for c in backwards if c[0] <= now]
        ready_f = [c for c in forwards if c[0] <= now]
        if ready_b:
            kind, (_, mb, _, chunk, stage) = B, min(ready_b, key=lambda c: c[1:3])
        elif ready_f:
            kind, (_, mb, _, chunk, stage) = F, min(ready_f, key=lambda c: c[1:3])
        elif waiting_w[rank]:
            kind, (chunk, mb) = W, waiting_w[rank].pop(0)
            stage = stage_map[rank][chunk]
        else:
            later = [c[0] for c in backwards + forwards if c[0] > now]
            if later:
                clock[rank] = min(later)
            elif stuck[rank]:
                raise ConfigError(f"{name}: no rank can proceed: the memory limit "
                                  f"{memory_limits[rank]} is too small for this pipeline")
            else:
                stuck[rank] = True
            continue
        stuck = [False] * P
        clock[rank] = now + 1.0
        remaining[rank] -= 1
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
