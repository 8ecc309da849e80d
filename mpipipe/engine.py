"""Run one rank's lowered action list: the pipeline on MPI.

The engine is a loop over the rank's actions; each kind has a small handler.
Between handlers, arrays wait in dicts keyed by (chunk, micro-batch):

    inbox       activations that arrived (or stage 0's input), waiting for F
    outbox      activations F produced, waiting for SEND_F
    grad_inbox  gradients that arrived (or the loss gradient), waiting for BW/B
    grad_outbox input gradients BW/B produced, waiting for SEND_B
    stash       what F saved for the backward (see Stashed)

A step: zero the gradients, run the list, finish the sends, complete the
all-reduce of the gradients across data-parallel replicas, let the optimizer
step. A chunk's all-reduce starts as soon as its last weight gradient is done
(at its REDUCE_GRAD marker if the list has one, as a schedule read from a
PyTorch file may; after the whole list with --allreduce end), so that it runs
while the rank computes the other chunks and micro-batches; UNSHARD and RESHARD
do nothing (FSDP's markers: mpipipe never gathers parameters for a compute).
An overlapped pair is run as its two actions, one after the other. Every
action is timed (start, end, relative to the step's start, which a barrier
aligns across ranks) so the measured timeline can be drawn like the planned
one. With tensor parallelism (--tp) the chunks hold shards of their layers,
which all-reduce inside F, B and BW (never W) over the tensor group: the time
an action spends in those all-reduces is noted in its Event.
"""

import time
from dataclasses import dataclass, field

import numpy as np

from mpipipe.comm.backend import to_host
from mpipipe.comm.p2p import BufferPool, PointToPoint, Reduction
from mpipipe.nn.layers import cache_nbytes
from mpipipe.nn.losses import LOSSES
from mpipipe.schedules.actions import (ALLREDUCE, BW, F, RECOMPUTE, RECV_B, RECV_F, REDUCE_GRAD, RESHARD,
                                SEND_B, SEND_F, STASH_RELEASE, UNSHARD, B, W, Action, Event,
                                message_tag)
from mpipipe.nn.tensor_parallel import TensorGroup


@dataclass
class Chunk:
    """One of this rank's chunks: which stage of the model it is, and what it holds."""

    stage: int          # its stage number in the whole pipeline
    blocks: range       # the model's blocks it holds
    layers: object      # those blocks as a model.Stage (parameters in one flat buffer)
    optimizer: object   # the optimizer of those parameters


@dataclass
class Stashed:
    """One micro-batch's state on one chunk, from its F until its backward is done."""

    x: object                  # the stage's input
    cache: object              # what the backward needs; None under --recompute until rebuilt
    nbytes: int                # activation bytes held for this micro-batch
    owned: list = field(default_factory=list)   # receive buffers to recycle afterwards
    dy: object = None          # the output gradient, kept from B to W


class Engine:
    def __init__(self, setup, topology, chunks, xp, waiter, transport="direct", tensor=None):
        """Run `setup`'s schedule (config.Setup) as this rank of `topology`.

        `chunks[c]` is this rank's Chunk c; `xp` the array module its arrays
        live in; `waiter` how it waits (p2p.Waiter); `transport` how device
        arrays reach MPI ("direct" or "staged", see transport.py); `tensor`
        the tensor_parallel.TensorGroup the chunks' layers all-reduce in (its
        all-reduces are counted per step and timed inside each action)."""
        config = setup.config
        self.schedule, self.topology, self.chunks, self.xp = setup.schedule, topology, chunks, xp
        self.pp_index = topology.pp_index
        self.program = self.schedule.programs[self.pp_index]
        self.loss_fn, self.loss_denominator = LOSSES[setup.dataset.loss](), setup.loss_denominator
        self.shapes, self.microbatch_size = setup.shapes, setup.microbatch_size
        self.dtype, self.recompute = np.dtype(config.dtype), config.recompute
        self.nan_check, self.waiter = config.nan_check, waiter
        self.p2p = PointToPoint(topology.pipe, waiter, transport)
        self.tensor = tensor or TensorGroup(1, 0)
        if self.p2p.staged:
            self.tensor.staging = self.p2p.staging
        self.pool = BufferPool(xp)
        self.last_stage = self.schedule.num_stages - 1
        self.cache_bytes = {}          # chunk -> bytes one micro-batch's forward keeps
        # where each chunk's last weight gradient is done: its all-reduce can start there
        last_gradient = {}
        for index, action in enumerate(self.program):
            if action.kind in STASH_RELEASE:
                last_gradient[action.chunk] = index
        self.reduce_after = ({} if config.allreduce == "end" else
                             {index: chunk for chunk, index in last_gradient.items()})
        self.handlers = {F: self._forward, BW: self._backward, B: self._backward_input,
                         W: self._backward_weight, SEND_F: self._send, SEND_B: self._send,
                         RECV_F: self._receive, RECV_B: self._receive,
                         UNSHARD: lambda action: None, RESHARD: lambda action: None,
                         REDUCE_GRAD: lambda action: self._start_reduction(action.chunk)}

    def run_step(self, inputs, targets, on_start=None):
        """One training step. `inputs[mb]`/`targets[mb]`: this replica's micro-batches
        (used on the first / last stage); `on_start()` runs once all ranks are in
        the step (fault injection uses it). Returns this rank's share of the loss."""
        for chunk in self.chunks:
            chunk.layers.zero_grads()
        self.inputs, self.targets = inputs, targets
        self.inbox, self.outbox, self.grad_inbox, self.grad_outbox = {}, {}, {}, {}
        self.stash, self.loss = {}, 0.0
        self.reductions = {}           # chunk -> (p2p.Reduction, when it started)
        self.held = self.peak_held = self.held_bytes = self.peak_bytes = 0
        self.events, self.wait_time = [], 0.0
        self.sent = self.sent_bytes = 0             # pipeline messages of this step
        tensor_before = self.tensor.totals()
        self.finite_checks = []        # (stage, direction, action, 0-d bool array), in order
        self.waiter.barrier(self.topology.world,
                            "the other ranks to start the step (one is stuck or has died)")
        if on_start:
            on_start()
        self.t0 = time.perf_counter()
        for index, action in enumerate(self.program):
            self.action_start, self.action_tensor = time.perf_counter(), self.tensor.seconds
            self.handlers[action.kind](action)
            self.events.append(Event(self.pp_index, action, self.action_start - self.t0,
                                     time.perf_counter() - self.t0,
                                     self.tensor.seconds - self.action_tensor))
            if action.is_compute:
                self.p2p.reap()
            if index in self.reduce_after:
                self._start_reduction(self.reduce_after[index])
        self.p2p.finish()
        self.tensor_step = [now - before for now, before in zip(self.tensor.totals(), tensor_before)]
        self.first_non_finite = self._first_non_finite()
        self._allreduce_gradients()
        for chunk in self.chunks:
            chunk.optimizer.step(chunk.layers.flat_grads)
        # Every rank of a tensor group computes the same (replicated) loss: count it once.
        return self.loss if self.topology.tp_index == 0 else 0.0

    # -- compute ------------------------------------------------------------------------

    def _forward(self, action):
        key, stage = (action.chunk, action.microbatch), self._stage_of(action)
        x = self.inputs[action.microbatch] if stage == 0 else self.inbox.pop(key)
        y, cache = self.chunks[action.chunk].layers.forward(x)
        self._check_finite(y, stage, "forward", action)
        if self.recompute:
            cache = None                      # keep the input only; rebuild before backward
        entry = Stashed(x, cache, x.nbytes if self.recompute else self._cache_bytes(action, cache))
        if stage > 0:
            entry.owned.append(x)
        self.stash[key] = entry
        self.held += 1
        self.held_bytes += entry.nbytes
        self.peak_held = max(self.peak_held, self.held)
        self.peak_bytes = max(self.peak_bytes, self.held_bytes)
        if stage == self.last_stage:
            loss, dy = self.loss_fn(y, self.targets[action.microbatch], self.loss_denominator)
            self.loss += loss
            self.grad_inbox[key] = dy
        else:
            self._hand_on(self.inbox, self.outbox, action, stage + 1, y)

    def _backward(self, action):
        """BW: input and weight gradient together; the stash is freed at once."""
        key, stage = (action.chunk, action.microbatch), self._stage_of(action)
        entry = self.stash.pop(key)
        dy = self.grad_inbox.pop(key)
        cache = self._cache_of(action, entry)
        dx = self.chunks[action.chunk].layers.backward(dy, cache, need_dx=stage > 0)
        self._check_finite(dx, stage, "backward", action)
        self._release(entry.owned + ([dy] if stage < self.last_stage else []), entry.nbytes)
        if stage > 0:
            self._hand_on(self.grad_inbox, self.grad_outbox, action, stage - 1, dx)

    def _backward_input(self, action):
        """B: only the input gradient, which the previous stage is waiting for."""
        key, stage = (action.chunk, action.microbatch), self._stage_of(action)
        entry = self.stash[key]
        entry.dy = self.grad_inbox.pop(key)
        entry.cache = self._cache_of(action, entry)
        dx = self.chunks[action.chunk].layers.backward_input(entry.dy, entry.cache, need_dx=stage > 0)
        self._check_finite(dx, stage, "backward", action)
        if stage < self.last_stage:
            entry.owned.append(entry.dy)
        if stage > 0:
            self._hand_on(self.grad_inbox, self.grad_outbox, action, stage - 1, dx)

    def _backward_weight(self, action):
        """W: the weight gradient, deferred; frees the stash."""
        entry = self.stash.pop((action.chunk, action.microbatch))
        self.chunks[action.chunk].layers.backward_weight(entry.dy, entry.cache)
        self._release(entry.owned, entry.nbytes)

    def _cache_of(self, action, entry):
        """The forward's cache; under --recompute, run the forward again (traced as R)."""
        if entry.cache is not None:
            return entry.cache
        start, tensor_start = time.perf_counter(), self.tensor.seconds
        _, cache = self.chunks[action.chunk].layers.forward(entry.x)
        self.action_start, self.action_tensor = time.perf_counter(), self.tensor.seconds
        self.events.append(Event(self.pp_index, Action(RECOMPUTE, action.microbatch, action.chunk),
                                 start - self.t0, self.action_start - self.t0,
                                 self.action_tensor - tensor_start))
        return cache

    def _cache_bytes(self, action, cache):
        """Bytes a forward of this chunk keeps for its backward: the same for every
        micro-batch (they are the same size), so counted once per chunk."""
        if action.chunk not in self.cache_bytes:
            self.cache_bytes[action.chunk] = cache_nbytes(cache)
        return self.cache_bytes[action.chunk]

    def _check_finite(self, array, stage, direction, action):
        """--nan-check: note whether this array is all finite, without reading the answer
        yet (on a GPU reading it would wait for the device after every action)."""
        if self.nan_check and array is not None:
            self.finite_checks.append((stage, direction, action, self.xp.isfinite(array).all()))

    def _first_non_finite(self):
        """(stage, direction, action) of the step's first NaN/Inf, read once per step."""
        if not self.finite_checks:
            return None
        flags = to_host(self.xp.stack([flag for *_, flag in self.finite_checks]))
        for (stage, direction, action, _), finite in zip(self.finite_checks, flags):
            if not finite:
                return stage, direction, action
        return None

    # -- communication ------------------------------------------------------------------

    def _send(self, action):
        box = self.outbox if action.kind == SEND_F else self.grad_outbox
        array = box.pop((action.chunk, action.microbatch))
        self.sent, self.sent_bytes = self.sent + 1, self.sent_bytes + array.nbytes
        self.p2p.send(array, action.peer, message_tag(self.schedule, self.pp_index, action))

    def _receive(self, action):
        stage = self._stage_of(action)
        shape = self.shapes[stage] if action.kind == RECV_F else self.shapes[stage + 1]
        buffer = self.pool.take((self.microbatch_size, *shape), self.dtype)
        self.wait_time += self.p2p.recv(buffer, action.peer,
                                        message_tag(self.schedule, self.pp_index, action),
                                        str(action))
        box = self.inbox if action.kind == RECV_F else self.grad_inbox
        box[(action.chunk, action.microbatch)] = buffer

    def _start_reduction(self, index):
        """Start the data-parallel all-reduce of chunk `index`'s gradients (once a step).
        Every replica runs the same list, so they start their all-reduces in the same order."""
        data = self.topology.data
        if data is None or data.Get_size() == 1 or index in self.reductions:
            return
        staging = self.p2p.staging if self.p2p.staged else None
        started = time.perf_counter()
        self.reductions[index] = (Reduction(data, self.chunks[index].layers.flat_grads,
                                            self.waiter, staging), started)

    def _allreduce_gradients(self):
        """Complete every chunk's all-reduce (starting those not started yet), each traced
        as an ALLREDUCE event from its start to its completion."""
        for index in range(len(self.chunks)):
            self._start_reduction(index)
        for index, (reduction, started) in sorted(self.reductions.items()):
            reduction.finish()
            self.events.append(Event(self.pp_index, Action(ALLREDUCE, None, index),
                                     started - self.t0, time.perf_counter() - self.t0))

    # -- helpers ------------------------------------------------------------------------

    def _stage_of(self, action):
        return self.chunks[action.chunk].stage

    def _hand_on(self, local_box, outbox, action, to_stage, array):
        """Pass `array` to stage `to_stage`: in memory if this rank holds it, else via a send."""
        to_rank, to_chunk = self.schedule.place(to_stage)
        if to_rank == self.pp_index:
            local_box[(to_chunk, action.microbatch)] = array
        else:
            outbox[(action.chunk, action.microbatch)] = array

    def _release(self, buffers, nbytes):
        for buffer in buffers:
            self.pool.give_back(buffer)
        self.held -= 1
        self.held_bytes -= nbytes
