"""Run one rank's lowered action list: the pipeline on MPI.

The engine is a loop over the rank's actions; each kind has a small handler.
Between handlers, arrays wait in dicts keyed by (chunk, micro-batch):

    inbox       activations that arrived (or stage 0's input), waiting for F
    outbox      activations F produced, waiting for SEND_F
    grad_inbox  gradients that arrived (or the loss gradient), waiting for BW/B
    grad_outbox input gradients BW/B produced, waiting for SEND_B
    stash       what F saved for the backward (see Stashed)

A step: zero the gradients, run the list, finish the sends, all-reduce the
gradients across data-parallel replicas, let the optimizer step. Every action
is timed (start, end, relative to the step's start, which a barrier aligns
across ranks) so the measured timeline can be drawn like the planned one.
"""

import time
from dataclasses import dataclass, field

from .backend import to_host
from .layers import cache_nbytes
from .p2p import BufferPool, PointToPoint, wait, yield_phase
from .transport import synchronise
from .schedules.actions import (BW, F, RECOMPUTE, RECV_B, RECV_F, SEND_B, SEND_F, B, W, Action,
                                message_tag)
from .simulate import Event


@dataclass
class Stashed:
    """One micro-batch's state on one chunk, from its F until its backward is done."""

    x: object                  # the stage's input
    cache: object              # what the backward needs; None under --recompute until rebuilt
    nbytes: int                # activation bytes held for this micro-batch
    owned: list = field(default_factory=list)   # receive buffers to recycle afterwards
    dy: object = None          # the output gradient, kept from B to W


class Engine:
    def __init__(self, schedule, topology, stages, optimizers, loss_fn, shapes,
                 microbatch_size, dtype, xp, wait_mode="poll", timeout=None, recompute=False,
                 nan_check=True, transport="direct"):
        """`stages[chunk]` is this rank's Stage for each chunk; `shapes[s]` is the
        per-sample shape of the activation entering stage s (shapes[-1]: the output)."""
        self.schedule, self.topology = schedule, topology
        self.rank = topology.pp_index
        self.program = schedule.programs[self.rank]
        self.stages, self.optimizers = stages, optimizers
        self.loss_fn, self.shapes = loss_fn, shapes
        self.microbatch_size, self.dtype = microbatch_size, dtype
        self.wait_mode, self.timeout, self.recompute = wait_mode, timeout, recompute
        self.nan_check, self.xp = nan_check, xp
        self.patience = yield_phase(topology.node.Get_size()) if topology.node else 0.5e-3
        self.p2p = PointToPoint(topology.pipe, wait_mode, timeout, self.patience, transport)
        self.pool = BufferPool(xp)
        self.last_stage = schedule.num_stages - 1
        self.handlers = {F: self._forward, BW: self._backward, B: self._backward_input,
                         W: self._backward_weight, SEND_F: self._send, SEND_B: self._send,
                         RECV_F: self._receive, RECV_B: self._receive}

    def run_step(self, inputs, targets, scale, on_start=None):
        """One training step. `inputs[mb]`/`targets[mb]`: this replica's micro-batches
        (used on the first / last stage); `scale`: samples (x tokens) in the global
        batch, which the loss is averaged over; `on_start()`
        runs once all ranks are in the step (fault injection uses it)."""
        for stage in self.stages:
            stage.zero_grads()
        self.inputs, self.targets, self.scale = inputs, targets, scale
        self.inbox, self.outbox, self.grad_inbox, self.grad_outbox = {}, {}, {}, {}
        self.stash, self.loss = {}, 0.0
        self.held = self.peak_held = self.held_bytes = self.peak_bytes = 0
        self.events, self.wait_time = [], 0.0
        self.finite_checks = []        # (stage, direction, action, 0-d bool array), in order
        wait(self.topology.world.Ibarrier(), self.wait_mode, self.timeout,
             "the other ranks to start the step (one is stuck or has died)", self.patience)
        if on_start:
            on_start()
        self.t0 = time.perf_counter()
        for action in self.program:
            self.action_start = time.perf_counter()
            self.handlers[action.kind](action)
            self.events.append(Event(self.rank, action, self.action_start - self.t0,
                                     time.perf_counter() - self.t0))
            if action.is_compute:
                self.p2p.reap()
        self.p2p.finish()
        self.first_non_finite = self._first_non_finite()
        self._allreduce_gradients()
        for stage, optimizer in zip(self.stages, self.optimizers):
            optimizer.step(stage.flat_grads)
        return self.loss

    # -- compute ------------------------------------------------------------------------

    def _forward(self, action):
        key, stage = (action.chunk, action.microbatch), self._stage_of(action)
        x = self.inputs[action.microbatch] if stage == 0 else self.inbox.pop(key)
        y, cache = self.stages[action.chunk].forward(x)
        self._check_finite(y, stage, "forward", action)
        if self.recompute:
            cache = None                      # keep the input only; rebuild before backward
        entry = Stashed(x, cache, x.nbytes if self.recompute else cache_nbytes(cache))
        if stage > 0:
            entry.owned.append(x)
        self.stash[key] = entry
        self.held += 1
        self.held_bytes += entry.nbytes
        self.peak_held = max(self.peak_held, self.held)
        self.peak_bytes = max(self.peak_bytes, self.held_bytes)
        if stage == self.last_stage:
            loss, dy = self.loss_fn(y, self.targets[action.microbatch], self.scale)
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
        dx = self.stages[action.chunk].backward(dy, cache, need_dx=stage > 0)
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
        dx = self.stages[action.chunk].backward_input(entry.dy, entry.cache, need_dx=stage > 0)
        self._check_finite(dx, stage, "backward", action)
        if stage < self.last_stage:
            entry.owned.append(entry.dy)
        if stage > 0:
            self._hand_on(self.grad_inbox, self.grad_outbox, action, stage - 1, dx)

    def _backward_weight(self, action):
        """W: the weight gradient, deferred; frees the stash."""
        entry = self.stash.pop((action.chunk, action.microbatch))
        self.stages[action.chunk].backward_weight(entry.dy, entry.cache)
        self._release(entry.owned, entry.nbytes)

    def _cache_of(self, action, entry):
        """The forward's cache; under --recompute, run the forward again (traced as R)."""
        if entry.cache is not None:
            return entry.cache
        start = time.perf_counter()
        _, cache = self.stages[action.chunk].forward(entry.x)
        self.action_start = time.perf_counter()
        self.events.append(Event(self.rank, Action(RECOMPUTE, action.microbatch, action.chunk),
                                 start - self.t0, self.action_start - self.t0))
        return cache

    def _check_finite(self, array, stage, direction, action):
        """--nan-check: note whether this array is all finite, without reading the answer
        yet (on a GPU reading it would wait for the device after every action)."""
        if self.nan_check and array is not None:
            self.finite_checks.append((stage, direction, str(action), self.xp.isfinite(array).all()))

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
        self.p2p.send(array, action.peer, message_tag(self.schedule, self.rank, action))

    def _receive(self, action):
        stage = self._stage_of(action)
        shape = self.shapes[stage] if action.kind == RECV_F else self.shapes[stage + 1]
        buffer = self.pool.take((self.microbatch_size, *shape), self.dtype)
        self.wait_time += self.p2p.recv(buffer, action.peer,
                                        message_tag(self.schedule, self.rank, action), str(action))
        box = self.inbox if action.kind == RECV_F else self.grad_inbox
        box[(action.chunk, action.microbatch)] = buffer

    def _allreduce_gradients(self):
        data = self.topology.data
        if data is None or data.Get_size() == 1:
            return
        from mpi4py import MPI

        for stage in self.stages:
            grads = stage.flat_grads
            buffer = self.p2p.staging.down(grads) if self.p2p.staged else grads
            synchronise(buffer)
            request = data.Iallreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
            wait(request, self.wait_mode, self.timeout, "the data-parallel all-reduce",
                 self.patience)
            if self.p2p.staged:
                self.p2p.staging.up(buffer, grads)

    # -- helpers ------------------------------------------------------------------------

    def _stage_of(self, action):
        return self.schedule.stage(self.rank, action.chunk)

    def _hand_on(self, local_box, outbox, action, to_stage, array):
        """Pass `array` to stage `to_stage`: in memory if this rank holds it, else via a send."""
        to_rank, to_chunk = self.schedule.place(to_stage)
        if to_rank == self.rank:
            local_box[(to_chunk, action.microbatch)] = array
        else:
            outbox[(action.chunk, action.microbatch)] = array

    def _release(self, buffers, nbytes):
        for buffer in buffers:
            self.pool.give_back(buffer)
        self.held -= 1
        self.held_bytes -= nbytes
