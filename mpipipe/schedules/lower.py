"""lower(): add the messages a schedule's compute actions imply.

For a compute action of stage s on rank r:
  F      needs the activation of stage s-1 (RECV_F just before it) and
         hands its output to stage s+1 (SEND_F just after it);
  BW, B  need the gradient from stage s+1 (RECV_B before) and
         hand the input gradient to stage s-1 (SEND_B after);
  W      needs nothing from anyone.
No message is added where the neighbouring stage lives on the same rank (a
V-shaped schedule's turn): the engine hands the array over directly.

Sends are non-blocking (Isend) and receives blocking, so a lowered schedule
runs exactly as validate() and the simulator model it.
"""

from .actions import (BACKWARD_INPUT, F, RECV_B, RECV_F, SEND_B, SEND_F, Action,
                      Schedule)


def lower(schedule):
    if schedule.lowered:
        return schedule
    last = schedule.num_stages - 1
    programs = []
    for rank, program in enumerate(schedule.programs):
        lowered = []
        for action in program:
            stage = schedule.stage(rank, action.chunk)
            mb, chunk = action.microbatch, action.chunk
            before, after = [], []
            if action.kind == F:
                if stage > 0:
                    before.append(_message(schedule, rank, RECV_F, mb, chunk, stage - 1))
                if stage < last:
                    after.append(_message(schedule, rank, SEND_F, mb, chunk, stage + 1))
            elif action.kind in BACKWARD_INPUT:
                if stage < last:
                    before.append(_message(schedule, rank, RECV_B, mb, chunk, stage + 1))
                if stage > 0:
                    after.append(_message(schedule, rank, SEND_B, mb, chunk, stage - 1))
            lowered += [a for a in before if a] + [action] + [a for a in after if a]
        programs.append(lowered)
    return Schedule(schedule.name, schedule.num_ranks, schedule.num_microbatches, programs,
                    chunks=schedule.chunks, stage_map=schedule.stage_map, lowered=True,
                    notes=dict(schedule.notes))


def _message(schedule, rank, kind, microbatch, chunk, peer_stage):
    peer, _ = schedule.place(peer_stage)
    if peer == rank:
        return None  # same rank: handed over in memory, no message
    return Action(kind, microbatch, chunk, peer)
