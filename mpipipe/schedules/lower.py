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


def lower(schedule):
    if schedule.lowered:
        return schedule
    programs = []
    for rank, program in enumerate(schedule.programs):
        lowered, before, group, after = [], [], [], []
        for action in program:
            receives, sends = _messages(schedule, rank, action)
            before += receives
            group.append(action)
            after += sends
            if not action.pairs_with_next:      # the group (one action, or a pair) is complete
                lowered += before + group + after
                before, group, after = [], [], []
        lowered += before + group + after       # a pair left open at the end (validate objects)
        programs.append(lowered)
    return Schedule(schedule.name, schedule.num_ranks, schedule.num_microbatches, programs,
                    chunks=schedule.chunks, stage_map=schedule.stage_map, lowered=True,
                    notes=dict(schedule.notes))


def _messages(schedule, rank, action):
    """(receives before, sends after) one compute action; none for W and markers."""
    last = schedule.num_stages - 1
    mb, chunk = action.microbatch, action.chunk
    before, after = [], []
    if action.kind == F:
        stage = schedule.stage(rank, chunk)
        if stage > 0:
            before.append(_message(schedule, rank, RECV_F, mb, chunk, stage - 1))
        if stage < last:
            after.append(_message(schedule, rank, SEND_F, mb, chunk, stage + 1))
    elif action.kind in BACKWARD_INPUT:
        stage = schedule.stage(rank, chunk)
        if stage < last:
            before.append(_message(schedule, rank, RECV_B, mb, chunk, stage + 1))
        if stage > 0:
            after.append(_message(schedule, rank, SEND_B, mb, chunk, stage - 1))
    return [a for a in before if a], [a for a in after if a]


def _message(schedule, rank, kind, microbatch, chunk, peer_stage):
    peer, _ = schedule.place(peer_stage)
    if peer == rank:
        return None  # same rank: handed over in memory, no message
    return Action(kind, microbatch, chunk, peer)
