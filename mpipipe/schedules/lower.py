"""lower(): add the messages a schedule's compute actions imply.

For a compute action of stage s on rank r:
  F      needs the activation of stage s-1 (RECV_F just before it) and
         hands its output to stage s+1 (SEND_F just after it);
  BW, B  need the gradient from stage s+1 (RECV_B before) and
         hand the input gradient to stage s-1 (SEND_B after);
  W      needs nothing from anyone.
No message is added where the neighbouring stage lives on the same rank (a
V-shaped schedule's turn): the engine hands the array over directly.

An overlapped pair (actions.py) is lowered as one unit, as PyTorch lowers
its OVERLAP_F_B: the receives of both before the pair, the sends of both
after it, so the pair stays together in the list. Markers (UNSHARD, ...)
pass through as they are.

Sends are non-blocking (Isend) and receives blocking, so a lowered schedule
runs exactly as validate() and the simulator model it.
"""

from .actions import (BACKWARD_INPUT, F, RECV_B, RECV_F, SEND_B, SEND_F, Action,
                      Schedule)
from .quiet_gc import without_gc


@without_gc      # a million actions at scale: see quiet_gc.py
def lower(schedule):
    if schedule.lowered:
        return schedule
    programs = []
    for rank, program in enumerate(schedule.programs):
        peers = [_peers(schedule, rank, chunk) for chunk in range(schedule.chunks)]
        lowered, before, group, after = [], [], [], []
        for action in program:
            kind = action.kind
            if kind == F:                # (receive from, send to): the previous, the next stage
                source, target = peers[action.chunk][0]
                receive, send = RECV_F, SEND_F
            elif kind in BACKWARD_INPUT:  # the other way round
                source, target = peers[action.chunk][1]
                receive, send = RECV_B, SEND_B
            else:
                source = target = None
            if source is not None:
                before.append(Action(receive, action.microbatch, action.chunk, source))
            group.append(action)
            if target is not None:
                after.append(Action(send, action.microbatch, action.chunk, target))
            if not action.pairs_with_next:      # the group (one action, or a pair) is complete
                lowered += before
                lowered += group
                lowered += after
                before, group, after = [], [], []
        lowered += before + group + after       # a pair left open at the end (validate objects)
        programs.append(lowered)
    return Schedule(schedule.name, schedule.num_ranks, schedule.num_microbatches, programs,
                    chunks=schedule.chunks, stage_map=schedule.stage_map, lowered=True,
                    notes=dict(schedule.notes))


def _peers(schedule, rank, chunk):
    """For a chunk's forward and its backward: (the rank to receive from, the rank to send
    to), None where there is no neighbouring stage or it is on this same rank (a V's turn:
    handed over in memory, no message)."""
    stage, last = schedule.stage(rank, chunk), schedule.num_stages - 1

    def other(neighbour):
        if not 0 <= neighbour <= last:
            return None
        peer = schedule.place(neighbour)[0]
        return None if peer == rank else peer

    return (other(stage - 1), other(stage + 1)), (other(stage + 1), other(stage - 1))
