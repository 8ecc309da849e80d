"""Run a schedule on a model of the machine instead of on MPI.

A cost model (`Costs`: the time of F, B, W, of a message and of the tensor-
parallel all-reduces) turns a lowered schedule into a planned timeline by
walking it as the engine would run it (schedules/walk.py). The same costs can
be read back from a measured step (`costs_from_events`), so a plan and a
measurement can be compared; `replay` plays a measured step again with each
action's own time and free messages. `tensor_or_pipeline` plans the same model
on N ranks both ways, split into N stages or into N tensor shards, and says
how slow the tensor all-reduces must be before the pipeline wins;
`allreduce_time` and `message_time` turn a link's latency and bandwidth into
those costs.
"""

from dataclasses import dataclass, replace

from mpipipe.schedules.actions import (B, BACKWARD_INPUT, BW, COMPUTE, F, RECOMPUTE, STASH_RELEASE, W,
                                Schedule)
from mpipipe.schedules.lower import lower
from mpipipe.schedules.validate import checked_and_lowered
from mpipipe.schedules.walk import walk as schedules_walk
from .timeline import Timeline, bubble_fraction


@dataclass(frozen=True)
class Costs:
    """Time of each compute action for a rank's whole share of the model.

    BW (the fused backward) costs B + W unless given. With V chunks per rank a
    chunk's action costs 1/V of these. `recompute` adds a forward to every
    backward (activation checkpointing); `comm` delays every message.
    `tp_comm` is the time of the tensor-parallel all-reduces in one forward of
    the rank's share (two per transformer block); the input gradient (B, BW)
    pays as much again (f's backward), W nothing.
    """

    F: float = 1.0
    B: float = 1.0
    W: float = 1.0
    BW: float | None = None
    comm: float = 0.0
    recompute: bool = False
    stage_factors: tuple = ()   # per stage, multiplies its costs (e.g. a slower last stage)
    stage_costs: tuple = ()     # per stage its own (F, B, W), e.g. profiled: then F, B, W unused
    tp_comm: float = 0.0

    def of(self, kind, chunks=1, stage=None):
        if self.stage_costs and stage is not None:     # a stage's own time, not a share
            f, b, w = self.stage_costs[stage]
            cost = {F: f, B: b, W: w, BW: b + w}[kind]
            return cost + f if self.recompute and kind in BACKWARD_INPUT else cost
        if kind == BW:
            cost = self.B + self.W if self.BW is None else self.BW
        else:
            cost = {F: self.F, B: self.B, W: self.W}[kind]
        if kind != W:
            cost += self.tp_comm
        if self.recompute and kind in BACKWARD_INPUT:
            cost += self.F + self.tp_comm
        if stage is not None and stage < len(self.stage_factors):
            cost *= self.stage_factors[stage]
        return cost / chunks

    @classmethod
    def parse(cls, text):
        """'F=1,B=2' -> Costs(F=1, B=2). Keys: F, B, W, BW, comm, tp_comm."""
        values = {}
        keys = ("F", "B", "W", "BW", "comm", "tp_comm")
        for item in filter(None, (part.strip() for part in (text or "").split(","))):
            key, sep, value = item.partition("=")
            if not sep or key.strip() not in keys:
                raise ValueError(f"bad cost {item!r}: expected KEY=NUMBER with KEY in "
                                 f"{', '.join(keys)}")
            try:
                values[key.strip()] = float(value)
            except ValueError:
                raise ValueError(f"bad cost {item!r}: {value!r} is not a number") from None
            if values[key.strip()] < 0:
                raise ValueError(f"bad cost {item!r}: costs cannot be negative")
        return cls(**values)


def walk(schedule, costs=Costs(), keep_events=True):
    """The timeline of a lowered schedule under `costs`; ScheduleError if it cannot finish.
    Without `keep_events` it holds the figures only (makespan, busy, peak stash), no events:
    half the time and none of the memory at scale, for a caller that draws nothing."""
    cost = {(kind, stage): costs.of(kind, schedule.chunks, stage)
            for kind in COMPUTE for stage in range(schedule.num_stages)}
    events, clock, busy = schedules_walk(schedule, cost, costs.comm, keep_events=keep_events)
    return Timeline(schedule.num_ranks, events, max(clock, default=0.0), busy,
                    peak_stash(schedule))


def simulate(schedule, costs=Costs(), keep_events=True):
    """The planned timeline of one step of a schedule (lowered here if it is not yet)."""
    return walk(lower(schedule), costs, keep_events)


def validated_plan(schedule, costs=Costs()):
    """Prove a schedule runs and plan it, in one walk: (lowered schedule, its Timeline
    of figures, no events). validate() walks a schedule once to prove that no rank
    waits forever; the walk that times it under `costs` proves exactly that too (the
    same walk, walk.py), so mpipipe train, which needs both, walks once."""
    lowered = checked_and_lowered(schedule)
    return lowered, walk(lowered, costs, keep_events=False)


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


def replay(schedule, events):
    """The measured step `events` played again: every compute action lasting exactly
    what it lasted (a repeated forward, R, counted with the backward it precedes), every
    message free and instant. A rank cannot start an action before its previous one
    ends and the message it needs has been sent, so no run with these action times can
    finish sooner: the replay is a floor, and whatever the measured step took beyond it
    was spent outside the actions (messages, the code between actions, a rank waiting
    for a core). Returns the replayed Timeline, in the events' unit of time."""
    repeated = {(e.rank, e.action.chunk, e.action.microbatch): e.end - e.start
                for e in events if e.action.kind == RECOMPUTE}
    durations = [{} for _ in range(schedule.num_ranks)]
    for e in events:
        if e.action.kind in COMPUTE:
            took = e.end - e.start
            if e.action.kind in BACKWARD_INPUT:
                took += repeated.get((e.rank, e.action.chunk, e.action.microbatch), 0.0)
            durations[e.rank][e.action] = took
    played, _, _ = schedules_walk(lower(schedule), durations=durations)
    return Timeline.of_events(played, schedule.num_ranks)


def steady_state(schedule, costs=Costs()):
    """Time per step once steps follow each other without a flush.

    Steps run back to back (micro-batch numbers continued), so one step's
    warm-up can overlap the previous step's cool-down, as with the zero-bubble
    paper's post-validated optimizer step. Returns (time per step, bubble
    fraction): the difference between 3 and 2 steps in a row.
    """
    lowered = lower(schedule)
    two, three = walk(repeat(lowered, 2), costs), walk(repeat(lowered, 3), costs)
    per_step = three.makespan - two.makespan
    busy = sum(three.busy) - sum(two.busy)
    return per_step, bubble_fraction(busy, schedule.num_ranks, per_step)


def repeat(schedule, times):
    """The same schedule `times` times in a row, as one long step."""
    m = schedule.num_microbatches
    programs = [[a if a.microbatch is None else a._replace(microbatch=a.microbatch + i * m)
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


# -- tensor or pipeline? -------------------------------------------------------------------

def message_time(nbytes, latency, bandwidth):
    """One point-to-point message: the latency, then the bytes at the link's bandwidth."""
    return latency + nbytes / bandwidth


def allreduce_time(nbytes, ranks, latency, bandwidth):
    """A ring all-reduce of `nbytes` over `ranks`: 2 (ranks - 1) rounds, each one latency
    and 1/ranks of the array (reduce-scatter, then all-gather)."""
    if ranks == 1:
        return 0.0
    return 2 * (ranks - 1) * (latency + nbytes / (ranks * bandwidth))


@dataclass
class Versus:
    """The same model on N ranks, planned as a pipeline and as tensor parallelism."""

    ranks: int
    microbatches: int
    pipeline: Timeline          # N stages under the schedule asked for
    tensor: Timeline            # one stage, each action paying its tensor all-reduces
    break_even_tp_comm: float   # tp_comm above which the pipeline's step is the shorter


def tensor_or_pipeline(schedule, costs):
    """Plan `schedule` (N ranks, m micro-batches) against tensor parallelism over the
    same N ranks. `costs` are a rank's share under either split (1/N of the model's
    compute, as both divide it evenly), `comm` the pipeline's message, `tp_comm` the
    tensor all-reduces of one forward. Tensor parallelism has no bubble and no
    pipeline messages, but every forward and every input gradient pays tp_comm."""
    from mpipipe.schedules import validated_schedule

    m = schedule.num_microbatches
    pipeline = simulate(schedule, replace(costs, tp_comm=0.0))
    one_stage = validated_schedule("1f1b", 1, m)
    alone = replace(costs, comm=0.0, stage_factors=())
    tensor = simulate(one_stage, alone)
    silent = simulate(one_stage, replace(alone, tp_comm=0.0))     # its compute alone
    talks = m * (3 if costs.recompute else 2)    # tp_comm paid per micro-batch: F, BW (, R)
    return Versus(schedule.num_ranks, m, pipeline, tensor,
                  (pipeline.makespan - silent.makespan) / talks)
