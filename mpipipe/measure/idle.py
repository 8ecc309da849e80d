"""Why each idle slot: every stretch of a step in which a rank did not compute, with its cause.

The bubble fraction says how much of a step was idle; a student asks where it came
from. This module cuts each rank's step, from its start to the end of the last
compute action on any rank (the span the bubble is measured over), into the rank's
compute actions and the idle slots between them, and gives every slot one cause:

    warm-up          before the rank's first compute action: the pipeline filling
                     (waiting for the first message, as the plan also does)
    message          waiting in a receive for a peer's activation or gradient: which
                     action on which rank produced it, and how long that action
                     itself waited before it started (a late producer passes its
                     lateness on)
    all-reduce       waiting for the data-parallel all-reduce of the gradients
    between actions  neither: posting sends, the Python between two actions, a rank
                     waiting for a core on a shared machine
    cool-down        after the rank's last compute action and its all-reduce: the
                     pipeline draining, the others still at work

The slots of a rank partition its idle time, so their sum is the span minus the
rank's compute time, exactly: the measured bubble, explained. The same function
reads a plan (the simulator's events) and a measured step (the engine's).
"""

from dataclasses import dataclass

from mpipipe.schedules.actions import ALLREDUCE, BW, RECV_B, RECV_F, B, F

CAUSES = ("warm-up", "message", "all-reduce", "between actions", "cool-down")
PRODUCES = {RECV_F: (F,), RECV_B: (B, BW)}    # a receive's message is made by these kinds


@dataclass(frozen=True)
class IdleSlot:
    """One idle stretch of one rank, in the events' unit of time."""

    rank: int
    start: float
    end: float
    cause: str                       # one of CAUSES
    waited_for: str = ""             # message: "BW3 on rank 1 (stage 1)"
    producer: tuple = None           # message: (rank, start, end) of the producing action
    producer_waited: float = 0.0     # message: idle time right before the producer started

    @property
    def length(self):
        return self.end - self.start


def step_span(events):
    """The span the bubble is measured over: up to the last compute action's end."""
    return max((e.end for e in events if e.action.is_compute), default=0.0)


def idle_slots(events, schedule):
    """Every idle slot of every rank of one step (events: one Event per action, as the
    engine records them or the simulator plans them), ordered by rank and time."""
    span = step_span(events)
    computes = {}                    # rank -> its compute events, in time order
    for e in sorted(events, key=lambda e: (e.rank, e.start)):
        if e.action.is_compute:
            computes.setdefault(e.rank, []).append(e)
    # (rank, receive kind it feeds, micro-batch, chunk) -> (its index on the rank, event)
    makers = {(e.rank, recv, e.action.microbatch, e.action.chunk): (i, e)
              for rank_computes in computes.values() for i, e in enumerate(rank_computes)
              for recv, kinds in PRODUCES.items() if e.action.kind in kinds}
    by_rank = {}
    for e in events:
        by_rank.setdefault(e.rank, []).append(e)
    slots = []
    for rank in range(schedule.num_ranks):
        slots += [_with_producer(slot, receive, schedule, computes, makers)
                  for slot, receive in _slots_of_rank(rank, by_rank.get(rank, []),
                                                      computes.get(rank, []), span)]
    return slots


def _slots_of_rank(rank, events, computes, span):
    """Cut [0, span] of one rank into its compute actions and labelled idle pieces, then
    join neighbouring pieces of the same cause (and the same receive) into one slot.
    Returns [(IdleSlot, the receive event it was spent in, or None), ...]."""
    if not computes:
        return [(IdleSlot(rank, 0.0, span, "cool-down"), None)] if span > 0 else []
    first, last = computes[0].start, computes[-1].end
    pieces = []                      # (start, end, cause, receive event or None)
    t = 0.0
    in_order = sorted((e for e in events if e.action.kind != ALLREDUCE), key=lambda e: e.start)
    for e in in_order:
        if e.start > t:
            pieces.append((t, e.start, "between actions", None))
        if not e.action.is_compute and e.end > max(t, e.start):
            cause = "message" if e.action.kind in PRODUCES else "between actions"
            pieces.append((max(t, e.start), e.end, cause, e if cause == "message" else None))
        t = max(t, e.end)
    reduced = max((e.end for e in events if e.action.kind == ALLREDUCE), default=t)
    if reduced > t:
        pieces.append((t, reduced, "all-reduce", None))
        t = reduced
    if span > t:
        pieces.append((t, span, "cool-down", None))
    slots = []
    for start, end, cause, receive in pieces:
        start, end = max(start, 0.0), min(end, span)
        if end - start <= span * 1e-12:      # nothing but rounding between two actions
            continue
        if end <= first:
            cause = "warm-up"
        elif start >= last and cause != "all-reduce":
            cause = "cool-down"
        previous = slots[-1] if slots else None
        if previous and previous[2] == cause and previous[3] is receive and previous[1] >= start:
            slots[-1] = (previous[0], end, cause, receive)
        else:
            slots.append((start, end, cause, receive))
    return [(IdleSlot(rank, start, end, cause), receive) for start, end, cause, receive in slots]


def _with_producer(slot, receive, schedule, computes, makers):
    """A slot spent in `receive`: name the action that made its message, on which rank,
    and how long that action itself waited before it (its own idle gap)."""
    if receive is None:
        return slot
    stage = schedule.stage(slot.rank, receive.action.chunk)
    sender = stage - 1 if receive.action.kind == RECV_F else stage + 1
    rank, chunk = schedule.place(sender)
    found = makers.get((rank, receive.action.kind, receive.action.microbatch, chunk))
    if found is None:                # the trace holds no such action: say what was awaited
        return IdleSlot(slot.rank, slot.start, slot.end, slot.cause,
                        f"{receive.action.kind[-1]}{receive.action.microbatch} from stage {sender}")
    index, made = found
    waited = made.start - (computes[rank][index - 1].end if index else 0.0)
    return IdleSlot(slot.rank, slot.start, slot.end, slot.cause,
                    f"{made.action.kind}{made.action.microbatch} on rank {rank} (stage {sender})",
                    (rank, made.start, made.end), waited)


def breakdown(slots, num_ranks):
    """Per rank, the idle time of each cause: [{cause: time, ...}, ...] (every cause listed)."""
    table = [dict.fromkeys(CAUSES, 0.0) for _ in range(num_ranks)]
    for slot in slots:
        table[slot.rank][slot.cause] += slot.length
    return table


def longest(slots):
    """The longest idle slot, the one a student should look at first (None if none)."""
    return max(slots, key=lambda s: s.length, default=None)


def slot_dict(slot, scale=1e3):
    """A slot as JSON-ready numbers (times times `scale`: ms from seconds); None stays None."""
    if slot is None:
        return None
    out = {"rank": slot.rank, "start": slot.start * scale, "end": slot.end * scale,
           "cause": slot.cause, "waited_for": slot.waited_for,
           "producer_waited": slot.producer_waited * scale}
    if slot.producer is not None:
        rank, start, end = slot.producer
        out["producer"] = {"rank": rank, "start": start * scale, "end": end * scale}
    return out
