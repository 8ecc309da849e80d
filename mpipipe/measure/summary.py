"""What a run measured: each rank's notes in, one typed summary out.

During training every rank notes a few numbers per step (`StepLog`: its loss
share, step time, compute time, waits, and the actions of the steps kept for
pictures). At the end rank 0 gathers one `RankReport` per rank and turns them
into a `Summary`: step time, the bubble measured and planned, the waits, the
peak stash, what the model learned. Measuring never disturbs the steps being
measured: nothing is sent until training is over.

Two plans sit beside the measured bubble: the schedule with equal stages and
free messages (the textbook's figure), and the last step simulated again with
its own measured action times, each stage at its own speed (`resimulate`):
what remains between that and the measurement is messages and noise.
"""

import os
import statistics
from dataclasses import asdict, dataclass

import numpy as np

from mpipipe.comm.backend import to_host
from mpipipe.nn.losses import LOSSES
from mpipipe.nn.model import build_stage, join_stage_shards
from mpipipe.plan.simulate import Costs, costs_from_events, replay, simulate
from mpipipe.plan.timeline import bubble_fraction, in_ms, render
from mpipipe.schedules.actions import Event
from .idle import breakdown, idle_slots, longest, slot_dict


class StepLog:
    """This rank's notes, one entry per step."""

    def __init__(self, keep_all_steps, last_step, run_start, keep_state=False):
        self.keep_all_steps, self.last_step, self.run_start = keep_all_steps, last_step, run_start
        self.keep_state, self.state_before_last = keep_state, None
        self.losses, self.step_times, self.busy, self.ends, self.waits = [], [], [], [], []
        self.messages, self.tensor = [], []     # per step: (sends, bytes); (all-reduces, bytes, s)
        self.history = []   # kept steps: (step, start offset in s, [Event-like tuples, ...])

    def before(self, step, chunks):
        """Before `step`: under --check, keep the weights and optimizer state the last step
        starts from (host copies), so that it can be replayed in one process."""
        if self.keep_state and step == self.last_step:
            self.state_before_last = {
                ch.stage: (to_host(ch.layers.flat_params),
                           {k: to_host(v) if np.ndim(v) == 1 else v
                            for k, v in ch.optimizer.state().items()}) for ch in chunks}

    def record(self, step, loss, seconds, engine):
        """After `step`: the world's loss, the step's wall time, and the engine's events."""
        self.losses.append(loss)
        self.step_times.append(seconds)
        compute = [e for e in engine.events if e.action.is_compute]
        self.busy.append(sum(e.end - e.start for e in compute))
        self.ends.append(max((e.end for e in compute), default=0.0))
        self.waits.append(engine.wait_time)
        self.messages.append((engine.sent, engine.sent_bytes))
        self.tensor.append(tuple(engine.tensor_step))
        if self.keep_all_steps or step == self.last_step:
            self.history.append((step, engine.t0 - self.run_start,
                                 [(e.action, e.start, e.end, e.collective) for e in engine.events]))

    def report(self, topology, engine, chunks, device, transport):
        """This rank's RankReport, once training is over (the weights copied to the host)."""
        weight_bytes = sum(2 * ch.layers.flat_params.nbytes      # the parameters and gradients
                           + sum(v.nbytes for v in ch.optimizer.state().values()
                                 if np.ndim(v) == 1) for ch in chunks)
        return RankReport(topology.world_rank, topology.pp_index, topology.dp_index, self.busy,
                          self.ends, self.waits, self.history, engine.peak_held,
                          engine.peak_bytes, {ch.stage: to_host(ch.layers.flat_params)
                                              for ch in chunks}, device, transport,
                          topology.tp_index, self.messages, self.tensor, weight_bytes,
                          self.state_before_last)


@dataclass
class RankReport:
    """What one rank sends to rank 0 once training is over."""

    world_rank: int
    pp_index: int
    dp_index: int
    busy: list              # per step: seconds of compute
    ends: list              # per step: end of the last compute action, from the step's start
    waits: list             # per step: seconds waiting for messages
    history: list           # StepLog.history
    peak_stash: int         # most micro-batches held at once
    peak_stash_bytes: int
    params: dict            # stage -> its flat parameters (its tensor shard), on the host
    device: str             # "cpu (why)" / "gpu (why)"
    transport: str          # "direct (why)" / "staged (why)"
    tp_index: int = 0
    messages: list = None   # per step: (pipeline sends, their bytes)
    tensor: list = None     # per step: (tensor all-reduces, their bytes, seconds in them)
    weight_bytes: int = 0   # parameters, gradients and optimizer state held
    state_before_last: dict = None   # --check: stage -> (weights, optimizer state) on the host


@dataclass
class Summary:
    """The run's figures, the same on every rank (`--json` prints them, less the timeline).
    Lists "per rank" run over the ranks of replica 0 in world-rank order (with tp = 1:
    one per stage)."""

    schedule: str
    pp: int
    dp: int
    microbatches: int
    chunks: int
    recompute: bool
    microbatch_size: int
    global_batch: int
    steps: int
    first_step: int
    dtype: str
    partition: list
    losses: list
    final_loss: float
    step_time_s: float                  # median over the steps after the first
    step_times_s: list
    bubble_fraction: float              # measured, median over the steps after the first
    bubble_fraction_planned: float      # the schedule with equal stages, free messages
    bubble_fraction_last_step: float    # measured
    bubble_fraction_last_step_planned: float   # resimulated with its own action times
    span_s: float                       # median time from a step's start to its last compute
    comm_wait_s: list                   # median per step, per rank: waiting for pipeline messages
    peak_stash: list                    # per rank
    peak_stash_bytes: list
    device: list                        # the distinct device lines of all ranks
    transport: list
    ranks_on_node: int
    cores: int
    timeline: str                       # the last step as it ran, in ASCII
    tp: int = 1
    messages_per_step: list = None      # per rank: pipeline sends in a step
    message_bytes_per_step: list = None
    tensor_allreduces_per_step: list = None   # per rank: tensor-parallel all-reduces in a step
    tensor_bytes_per_step: list = None
    tensor_wait_s: list = None          # median per step, per rank: time inside them
    weight_bytes: list = None           # per rank: parameters + gradients + optimizer state
    peak_memory_bytes: list = None      # per rank: weight_bytes + peak_stash_bytes
    held_out_loss: float | None = None  # token data: on samples never trained on
    held_out_accuracy: float | None = None
    held_out_exact: float | None = None
    accuracy: float | None = None       # classification: on the whole data set
    check: object = None                # reference.Check under --check
    planned_span_s: float | None = None     # --partition auto: the chosen cut's planned span
    planned_bubble_fraction: float | None = None  # ... and its planned bubble
    schedule_file: str | None = None    # where the schedule came from, if from a file
    bubble_fraction_last_step_replay: float | None = None  # its own action times, free messages
    idle_ms_last_step: list = None      # per rank: {cause: ms} of the last step (idle.py)
    longest_idle: dict = None           # the last step's longest idle slot and its cause

    def to_json(self):
        """The summary as a JSON-ready dict: no timeline, no figure that does not apply."""
        return {k: v for k, v in asdict(self).items() if k != "timeline" and v is not None}


def records_of(reports):
    """Every rank's kept steps, for trace.chrome_trace: (world rank, pp index, dp index,
    tp index, step, offset, actions)."""
    return [(r.world_rank, r.pp_index, r.dp_index, r.tp_index, step, offset, actions)
            for r in reports for step, offset, actions in r.history]


def last_step_events(records, last_step):
    """The events of `last_step`, in seconds, one row per pipeline stage: replica 0's
    (and of each stage its tensor rank 0)."""
    return [Event(pp, action, *times) for _, pp, dp, tp, step, _, actions in records
            if dp == 0 and tp == 0 and step == last_step for action, *times in actions]


def replica_weights(setup, reports):
    """Each replica's whole model as one flat parameter vector (stages in order, the
    tensor shards of each stage joined back into whole layers)."""
    weights = []
    for d in range(setup.config.dp):
        shards = {}      # stage -> {tp index: flat}
        for r in reports:
            if r.dp_index == d:
                for stage, flat in r.params.items():
                    shards.setdefault(stage, {})[r.tp_index] = flat
        weights.append(np.concatenate([
            join_stage_shards(setup.spec, setup.blocks[s], [by_tp[t] for t in sorted(by_tp)])
            if len(by_tp) > 1 else by_tp[0] for s, by_tp in sorted(shards.items())]))
    return weights


def state_before_last(setup, reports):
    """Replica 0's whole (weights, optimizer state) before the last step, the tensor shards
    joined back into whole layers; None if not kept."""
    shards = {}      # stage -> {tp index: (weights, state)}
    for r in reports:
        if r.dp_index == 0 and r.state_before_last:
            for stage, kept in r.state_before_last.items():
                shards.setdefault(stage, {})[r.tp_index] = kept
    if not shards:
        return None

    def whole(pick):     # one flat array of the whole model, stage by stage
        return np.concatenate([
            join_stage_shards(setup.spec, setup.blocks[s], [pick(by_tp[t]) for t in sorted(by_tp)])
            if len(by_tp) > 1 else pick(by_tp[0]) for s, by_tp in sorted(shards.items())])

    _, state = next(iter(shards.values()))[0]
    return whole(lambda kept: kept[0]), {
        name: whole(lambda kept: kept[1][name]) if np.ndim(value) == 1 else value
        for name, value in state.items()}


def resimulate(setup, events):
    """The step of `events` (seconds) planned again, in ms, with its own measured action
    times, each stage at its own speed."""
    in_millis = in_ms(events)
    schedule = setup.schedule
    costs = costs_from_events(in_millis, schedule.chunks, setup.config.recompute, schedule)
    return simulate(schedule, costs)


def summarise(setup, reports, log, first_step, events, resimulated, weights, check, ranks_on_node):
    """The Summary, on rank 0 (`ranks_on_node`: the ranks sharing rank 0's node)."""
    c = setup.config
    measured = slice(1, None) if len(log.losses) > 1 else slice(None)   # the first step warms up
    spans = [max(r.ends[step] for r in reports) for step in range(len(log.losses))]
    bubbles = [bubble_fraction(sum(r.busy[step] for r in reports), len(reports), span)
               for step, span in enumerate(spans)]
    replica0 = sorted((r for r in reports if r.dp_index == 0), key=lambda r: r.world_rank)
    planned = setup.planned or simulate(setup.schedule, Costs(recompute=c.recompute),
                                        keep_events=False)
    summary = Summary(
        schedule=setup.schedule.name, pp=c.pp, dp=c.dp, microbatches=c.microbatches, chunks=c.chunks,
        recompute=c.recompute, microbatch_size=setup.microbatch_size,
        global_batch=c.global_batch, steps=c.steps, first_step=first_step, dtype=c.dtype,
        partition=setup.partition, losses=log.losses, final_loss=log.losses[-1],
        step_time_s=statistics.median(log.step_times[measured]), step_times_s=log.step_times,
        bubble_fraction=statistics.median(bubbles[measured]),
        bubble_fraction_planned=planned.bubble_fraction,
        bubble_fraction_last_step=bubbles[-1],
        bubble_fraction_last_step_planned=resimulated.bubble_fraction,
        span_s=statistics.median(spans[measured]),
        comm_wait_s=[statistics.median(r.waits[measured]) for r in replica0],
        peak_stash=[r.peak_stash for r in replica0],
        peak_stash_bytes=[r.peak_stash_bytes for r in replica0], tp=c.tp,
        messages_per_step=[max(n for n, _ in r.messages) for r in replica0],
        message_bytes_per_step=[max(b for _, b in r.messages) for r in replica0],
        tensor_allreduces_per_step=[max(t[0] for t in r.tensor) for r in replica0],
        tensor_bytes_per_step=[max(t[1] for t in r.tensor) for r in replica0],
        tensor_wait_s=[statistics.median(t[2] for t in r.tensor[measured]) for r in replica0],
        weight_bytes=[r.weight_bytes for r in replica0],
        peak_memory_bytes=[r.weight_bytes + r.peak_stash_bytes for r in replica0],
        device=sorted({r.device for r in reports}),
        transport=sorted({r.transport for r in reports}),
        ranks_on_node=ranks_on_node, cores=usable_cores(),
        timeline=render(in_ms(events), c.pp, unit="ms"), check=check,
        schedule_file=c.schedule_file)
    summary.bubble_fraction_last_step_replay = replay(setup.schedule, events).bubble_fraction
    slots = idle_slots(events, setup.schedule)
    summary.idle_ms_last_step = [{cause: ms * 1e3 for cause, ms in row.items()}
                                 for row in breakdown(slots, c.pp)]
    summary.longest_idle = slot_dict(longest(slots))
    if setup.predicted is not None:
        summary.planned_span_s = setup.predicted.makespan
        summary.planned_bubble_fraction = setup.predicted.bubble_fraction
    if setup.dataset.held_out is not None:
        summary.held_out_loss, summary.held_out_accuracy, summary.held_out_exact = \
            held_out_scores(setup, weights[0])
    elif setup.dataset.loss == "cross-entropy":
        summary.accuracy = accuracy(setup, weights[0])
    return summary


def usable_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _whole_model(setup, weights):
    model = build_stage(setup.spec, range(setup.spec.num_blocks))
    model.flat_params[...] = weights
    return model


def accuracy(setup, weights):
    """Share of the whole data set the trained model classifies right."""
    logits, _ = _whole_model(setup, weights).forward(setup.dataset.inputs)
    return float((logits.argmax(axis=-1) == setup.dataset.targets).mean())


def held_out_scores(setup, weights):
    """Token data: (loss on the held-out samples, share of the positions that count right,
    share of samples entirely right), predicting each position from the true prefix (for
    arithmetic, the positions that count are the answers' digits)."""
    inputs, targets = setup.dataset.held_out
    logits, _ = _whole_model(setup, weights).forward(inputs)
    loss, _ = LOSSES["cross-entropy"]()(logits, targets, targets.size)
    right = logits.argmax(axis=-1) == targets
    mask = setup.dataset.score_mask
    return float(loss), float(right[mask].mean()), float(np.all(right | ~mask, axis=1).mean())
