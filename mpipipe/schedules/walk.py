"""walk(): play a lowered schedule out in time, as the engine would run it.

Each rank walks its own action list in order. A compute action takes its
cost (an event); a send is non-blocking and makes its message available at
once (no event: it takes no time); a
receive waits until its message has been sent, plus `latency`. This is
exactly how the MPI engine behaves (Isend, then a blocking receive), so the
walk also *proves* a schedule runs: if every rank reaches the end of its list,
no rank waits forever. validate() walks with unit costs; the simulator walks
with a cost model and keeps the events.

Ranks that block on a receive are parked and woken by the matching send, so a
walk is linear in the number of actions (P=64, m=1024 is ~0.5 M actions).
"""

from collections import deque

from mpipipe.errors import ScheduleError
from .quiet_gc import paused
from .actions import (BACKWARD_INPUT, COMPUTE, F, MARKERS, RECV_B, RECV_F, SEND_B, SEND_F, Event)


def walk(schedule, cost=None, latency=0.0, keep_events=True, durations=None):
    """Walk a lowered schedule; return (events, finish time per rank, compute time per rank).

    `cost[kind, stage]` is the time of a compute action (default: 1 each);
    `durations[rank][action]`, if given, is instead each action's own time (a
    measured step played again). Raises ScheduleError naming the rank if the
    lists cannot finish. Without `keep_events` (validate() needs only the proof)
    the events list stays empty.
    """
    if cost is None:
        cost = {(kind, stage): 1.0 for kind in COMPUTE for stage in range(schedule.num_stages)}
    with paused():      # a million events at scale: see quiet_gc.py
        return _walk(schedule, cost, latency, keep_events, durations)


# The message key of actions.message_key(), built inline in the walk (it runs
# once per action): kind -> (direction, is a send, stage offset of the receiver).
_MESSAGE = {SEND_F: ("F", True, 1), RECV_F: ("F", False, 0),
            SEND_B: ("B", True, -1), RECV_B: ("B", False, 0)}


def _walk(schedule, cost, latency, keep_events, durations):
    P = schedule.num_ranks
    programs = schedule.programs
    position, clock, busy = [0] * P, [0.0] * P, [0.0] * P
    events = []
    record = events.append if keep_events else None
    in_flight = {}     # message key -> time it was sent
    blocked_on = {}    # message key -> rank waiting for it
    handoffs = _LocalHandoffs(schedule)
    check_handoffs, handing_off = handoffs.check, handoffs.stages
    new = tuple.__new__     # Event(...) without its Python-level __new__: a million of them
    runnable = deque(range(P))
    while runnable:     # run a rank until it finishes or waits; a send wakes its receiver
        rank = runnable.popleft()
        program, stages = programs[rank], schedule.stage_map[rank]
        now, at, length, computed = clock[rank], position[rank], len(program), 0.0
        while at < length:
            action = program[at]
            kind = action.kind
            message = _MESSAGE.get(kind)
            if message is None:
                stage = stages[action.chunk]
                took = cost.get((kind, stage))
                if took is None:
                    if kind in MARKERS:     # take no time and wait for nothing
                        at += 1
                        continue
                    raise ScheduleError(f"rank {rank}: unknown action {action!r}", rank, action)
                if stage in handing_off:
                    check_handoffs(rank, action, stage)
                if durations is not None:
                    took = durations[rank][action]
                computed += took
                if record:
                    record(new(Event, (rank, action, now, now + took, 0.0)))
                now += took
            else:
                direction, is_send, offset = message
                stage = stages[action.chunk] + offset
                if is_send:
                    key = (rank, action.peer, direction, action.microbatch, stage)
                    if key in in_flight:
                        raise ScheduleError(f"rank {rank} sends {action} twice in one step",
                                            rank, action)
                    in_flight[key] = now     # a send takes no time: no event
                    if key in blocked_on:
                        runnable.append(blocked_on.pop(key))
                else:
                    key = (action.peer, rank, direction, action.microbatch, stage)
                    if key not in in_flight:
                        blocked_on[key] = rank
                        break
                    start = now
                    now = max(now, in_flight.pop(key) + latency)
                    if record:
                        record(new(Event, (rank, action, start, now, 0.0)))
            at += 1
        clock[rank], position[rank] = now, at
        busy[rank] += computed
    if blocked_on:
        first = min(blocked_on.values())
        raise ScheduleError(_deadlock_message(schedule, position, blocked_on), first,
                            schedule.programs[first][position[first]])
    if in_flight:
        key = next(iter(in_flight))
        src, dst, direction, mb, stage = key
        raise ScheduleError(f"rank {src} sends {direction}{mb} (for stage {stage}) to rank {dst}, "
                            f"which never receives it", src, _send_of(schedule, key))
    return events, clock, busy


def _send_of(schedule, key):
    """The send action behind a message key (src, dst, direction, mb, receiving stage)."""
    src, dst, direction, mb, stage = key
    for action in schedule.programs[src]:
        message = _MESSAGE.get(action.kind)
        if (message and message[:2] == (direction, True) and action.peer == dst
                and action.microbatch == mb
                and schedule.stage(src, action.chunk) + message[2] == stage):
            return action
    return None


class _LocalHandoffs:
    """Where two neighbouring stages share a rank (a V's turn, or chunks on one rank) no
    message orders them: check that the rank runs the producer before the consumer."""

    def __init__(self, schedule):
        place = schedule.place
        self.fed_locally = {s for s in range(1, schedule.num_stages)
                            if place(s - 1)[0] == place(s)[0]}
        # the stages whose actions hand over or take over in memory: the only ones checked
        self.stages = self.fed_locally | {s - 1 for s in self.fed_locally}
        self.done = set()

    def check(self, rank, action, stage):
        kind, mb = action.kind, action.microbatch
        need = None
        if kind == F and stage in self.fed_locally:
            need = ("F", mb, stage - 1)
        elif kind in BACKWARD_INPUT and stage + 1 in self.fed_locally:
            need = ("B", mb, stage + 1)
        if need and need not in self.done:
            raise ScheduleError(
                f"rank {rank} runs {action} (stage {stage}) before {need[0]}{need[1]} of stage "
                f"{need[2]}, which it needs and which this same rank only runs later", rank, action)
        if kind == F:
            self.done.add(("F", mb, stage))
        elif kind in BACKWARD_INPUT:
            self.done.add(("B", mb, stage))


def _deadlock_message(schedule, position, blocked_on):
    lines = ["the schedule deadlocks:"]
    for key, rank in sorted(blocked_on.items(), key=lambda item: item[1]):
        src, _, direction, mb, stage = key
        action = schedule.programs[rank][position[rank]]
        lines.append(f"  rank {rank} would wait forever at action #{position[rank]} {action}: "
                     f"rank {src} never sends {direction}{mb} for stage {stage}"
                     + _where_is(schedule, src, position))
    return "\n".join(lines)


def _where_is(schedule, rank, position):
    program = schedule.programs[rank]
    if position[rank] >= len(program):
        return f" (rank {rank} has finished its list)"
    return f" (rank {rank} is itself stuck at #{position[rank]} {program[position[rank]]})"
