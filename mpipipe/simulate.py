"""Run a lowered schedule on a model of the machine instead of on MPI.

Each rank walks its own action list in order. A compute action takes its
cost; a send is non-blocking and makes its message available at once; a
receive waits until its message has been sent, plus `comm` (the latency).
This is exactly how the MPI engine behaves (Isend, then blocking Recv), so
the walk also *proves* a schedule runs: if every rank reaches the end of its
list, no rank waits forever. validate() uses the same walk with unit costs.

Ranks that block on a receive are parked and woken by the matching send, so a
walk is linear in the number of actions (P=64, m=1024 is ~0.5 M actions).
"""

import gc
from collections import deque
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from .errors import ScheduleError
from .schedules.actions import (B, BACKWARD_INPUT, BW, COMPUTE, F, RECV_B, RECV_F, SEND_B,
                                SEND_F, STASH_RELEASE, W)


@dataclass(frozen=True)
class Costs:
    """Time of each compute action for a rank's whole share of the model.

    BW (the fused backward) costs B + W unless given. With V chunks per rank a
    chunk's action costs 1/V of these. `recompute` adds a forward to every
    backward (activation checkpointing); `comm` delays every message.
    """

    F: float = 1.0
    B: float = 1.0
    W: float = 1.0
    BW: float | None = None
    comm: float = 0.0
    recompute: bool = False
    stage_factors: tuple = ()   # per stage, multiplies its costs (e.g. a slower last stage)

    def of(self, kind, chunks=1, stage=None):
        if kind == BW:
            cost = self.B + self.W if self.BW is None else self.BW
        else:
            cost = {F: self.F, B: self.B, W: self.W}[kind]
        if self.recompute and kind in BACKWARD_INPUT:
            cost += self.F
        if stage is not None and stage < len(self.stage_factors):
            cost *= self.stage_factors[stage]
        return cost / chunks

    @classmethod
    def parse(cls, text):
        """'F=1,B=2' -> Costs(F=1, B=2). Keys: F, B, W, BW, comm."""
        values = {}
        for item in filter(None, (part.strip() for part in (text or "").split(","))):
            key, sep, value = item.partition("=")
            if not sep or key.strip() not in ("F", "B", "W", "BW", "comm"):
                raise ValueError(f"bad cost {item!r}: expected KEY=NUMBER with KEY in F, B, W, BW, comm")
            try:
                values[key.strip()] = float(value)
            except ValueError:
                raise ValueError(f"bad cost {item!r}: {value!r} is not a number") from None
            if values[key.strip()] < 0:
                raise ValueError(f"bad cost {item!r}: costs cannot be negative")
        return cls(**values)


class Event(NamedTuple):
    """One action on one rank, from start to end (a receive: the time spent waiting)."""

    rank: int
    action: object
    start: float
    end: float


@dataclass
class Timeline:
    num_ranks: int
    events: list
    makespan: float
    busy: list                  # compute time per rank
    peak_stash: list            # most micro-batches whose activations a rank holds at once
    info: dict = field(default_factory=dict)

    @property
    def bubble_fraction(self):
        """Share of rank-time not spent computing: 1 - sum(busy) / (P * makespan)."""
        if self.makespan <= 0:
            return 0.0
        return 1.0 - sum(self.busy) / (self.num_ranks * self.makespan)


def walk(schedule, costs=Costs()):
    """Simulate a lowered schedule; raise ScheduleError naming the rank if it cannot finish."""
    # A walk keeps every event it makes (about a million small objects at P=64,
    # m=1024), and Python's cyclic garbage collector would rescan them again and
    # again as they pile up; none of them can form a cycle, so it is paused.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _walk(schedule, costs)
    finally:
        if collecting:
            gc.enable()


# The message key of message_key(), built inline in the walk (it runs once per
# action): kind -> (direction, is a send, stage offset of the receiving stage).
_MESSAGE = {SEND_F: ("F", True, 1), RECV_F: ("F", False, 0),
            SEND_B: ("B", True, -1), RECV_B: ("B", False, 0)}


def _walk(schedule, costs):
    P = schedule.num_ranks
    programs = schedule.programs
    position, clock, busy = [0] * P, [0.0] * P, [0.0] * P
    events = []
    record = events.append
    in_flight = {}     # message key -> time it was sent
    blocked_on = {}    # message key -> rank waiting for it
    cost = {(kind, stage): costs.of(kind, schedule.chunks, stage)
            for kind in COMPUTE for stage in range(schedule.num_stages)}
    latency = costs.comm
    handoffs = _LocalHandoffs(schedule)
    check_handoffs = handoffs.check if handoffs.any else None
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
                if kind not in COMPUTE:
                    raise ScheduleError(f"rank {rank}: unknown action {action!r}")
                stage = stages[action.chunk]
                if check_handoffs:
                    check_handoffs(rank, action, stage)
                took = cost[kind, stage]
                computed += took
                record(Event(rank, action, now, now + took))
                now += took
            else:
                direction, is_send, offset = message
                stage = stages[action.chunk] + offset
                if is_send:
                    key = (rank, action.peer, direction, action.microbatch, stage)
                    if key in in_flight:
                        raise ScheduleError(f"rank {rank} sends {action} twice in one step")
                    in_flight[key] = now
                    record(Event(rank, action, now, now))
                    if key in blocked_on:
                        runnable.append(blocked_on.pop(key))
                else:
                    key = (action.peer, rank, direction, action.microbatch, stage)
                    if key not in in_flight:
                        blocked_on[key] = rank
                        break
                    start = now
                    now = max(now, in_flight.pop(key) + latency)
                    record(Event(rank, action, start, now))
            at += 1
        clock[rank], position[rank] = now, at
        busy[rank] += computed
    if blocked_on:
        raise ScheduleError(_deadlock_message(schedule, position, blocked_on, in_flight))
    if in_flight:
        (src, dst, direction, mb, stage) = next(iter(in_flight))
        raise ScheduleError(f"rank {src} sends {direction}{mb} (for stage {stage}) to rank {dst}, "
                            f"which never receives it")
    return Timeline(P, events, max(clock, default=0.0), busy, peak_stash(schedule))


def simulate(schedule, costs=Costs()):
    """The planned timeline of one step of a (lowered, valid) schedule."""
    from .schedules.lower import lower

    return walk(lower(schedule), costs)


def costs_from_events(events, chunks=1, recompute=False, schedule=None):
    """A cost model from measured actions: the mean time of each kind (per rank's share).

    Given the schedule that ran, each stage also gets its own factor (its
    measured compute time over what the means predict for its actions), so a
    plan made with these costs keeps a slow stage slow: real stages are rarely
    equal (the last one computes the loss, the first skips one input gradient),
    and that alone opens bubbles that equal costs would hide.
    """
    from statistics import mean

    times = {}
    for e in events:
        if e.action.kind in COMPUTE:
            times.setdefault(e.action.kind, []).append(e.end - e.start)
    values = {kind: mean(v) * chunks for kind, v in times.items()}
    costs = Costs(F=values.get(F, 1.0), B=values.get(B, 1.0), W=values.get(W, 1.0),
                  BW=values.get(BW), recompute=recompute)
    if schedule is None:
        return costs
    measured = [0.0] * schedule.num_stages
    predicted = [0.0] * schedule.num_stages
    for e in events:
        if e.action.is_compute:      # a recomputed forward counts towards its stage's time
            stage = schedule.stage(e.rank, e.action.chunk)
            measured[stage] += e.end - e.start
            if e.action.kind in COMPUTE:
                predicted[stage] += costs.of(e.action.kind, chunks)
    factors = tuple(m / p if p > 0 else 1.0 for m, p in zip(measured, predicted))
    return replace(costs, stage_factors=factors)


def steady_state(schedule, costs=Costs()):
    """Time per step once steps follow each other without a flush.

    Steps run back to back (micro-batch numbers continued), so one step's
    warm-up can overlap the previous step's cool-down, as with the zero-bubble
    paper's post-validated optimizer step. Returns (time per step, bubble
    fraction): the difference between 3 and 2 steps in a row.
    """
    from .schedules.lower import lower

    lowered = lower(schedule)
    two, three = walk(repeat(lowered, 2), costs), walk(repeat(lowered, 3), costs)
    per_step = three.makespan - two.makespan
    busy = (sum(three.busy) - sum(two.busy)) / schedule.num_ranks
    return per_step, (1.0 - busy / per_step if per_step > 0 else 0.0)


def repeat(schedule, times):
    """The same schedule `times` times in a row, as one long step."""
    from .schedules.actions import Action, Schedule

    m = schedule.num_microbatches
    programs = [[Action(a.kind, a.microbatch + i * m, a.chunk, a.peer)
                 for i in range(times) for a in program] for program in schedule.programs]
    return Schedule(schedule.name, schedule.num_ranks, m * times, programs, chunks=schedule.chunks,
                    stage_map=schedule.stage_map, lowered=schedule.lowered)


def peak_stash(schedule):
    """Per rank, the most micro-batches held between their F and their BW (or W)."""
    peaks = []
    for program in schedule.programs:
        held = peak = 0
        for action in program:
            if action.kind == F:
                held += 1
                peak = max(peak, held)
            elif action.kind in STASH_RELEASE:
                held -= 1
        peaks.append(peak)
    return peaks


class _LocalHandoffs:
    """Where two neighbouring stages share a rank (a V's turn, or chunks on one rank) no
    message orders them: check that the rank runs the producer before the consumer."""

    def __init__(self, schedule):
        place = schedule.place
        self.schedule = schedule
        self.last = schedule.num_stages - 1
        self.fed_locally = {s for s in range(1, schedule.num_stages)
                            if place(s - 1)[0] == place(s)[0]}
        self.any = bool(self.fed_locally)
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
                f"{need[2]}, which it needs and which this same rank only runs later")
        if kind == F:
            self.done.add(("F", mb, stage))
        elif kind in BACKWARD_INPUT:
            self.done.add(("B", mb, stage))


def _deadlock_message(schedule, position, blocked_on, in_flight):
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
