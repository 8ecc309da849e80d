"""Run one rank's lowered action list: the pipeline on MPI.

The engine is a loop over the rank's actions; each kind has a small handler.
Between handlers, arrays wait in dicts keyed by (chunk, micro-batch):

    inbox       activations that arrived (or stage 0's input), waiting for F
    outbox      activations F produced, waiting for SEND_F
    grad_inbox  gradients that arrived (or the loss gradient), waiting for BW/B
    grad_outbox input gradients BW/B produced, waiting for SEND_B
    stash       what F saved for the backward: the micro-batch's activations

A step: zero the gradients, run the list, finish the sends, all-reduce the
gradients across data-parallel replicas, let the optimizer step. Every action
is timed (start, end, relative to the step's start, which a barrier aligns
across ranks) so the measured timeline can be drawn like the planned one.
"""

import time

from .layers import cache_nbytes
from .p2p import BufferPool, PointToPoint, wait
from .schedules.actions import (BW, F, RECV_B, RECV_F, SEND_B, SEND_F, B, W, message_tag)
from .simulate import Event


class Engine:
    def __init__(self, schedule, topology, stages, optimizers, loss_fn, widths,
                 microbatch_size, dtype, xp, wait_mode="poll", timeout=None):
        """`stages[chunk]` is this rank's Stage for each chunk; `widths[s]` is the
        width of the activation entering stage s (widths[num_stages] = model output)."""
        self.schedule, self.topology = schedule, topology
        self.rank = topology.pp_index
        self.program = schedule.programs[self.rank]
        self.stages, self.optimizers = stages, optimizers
        self.loss_fn, self.widths = loss_fn, widths
        self.microbatch_size, self.dtype = microbatch_size, dtype
        self.wait_mode, self.timeout = wait_mode, timeout
        self.p2p = PointToPoint(topology.pipe, wait_mode, timeout)
        self.pool = BufferPool(xp)
        self.last_stage = schedule.num_stages - 1
        self.handlers = {F: self._forward, BW: self._backward, B: self._backward_input,
                         W: self._backward_weight, SEND_F: self._send, SEND_B: self._send,
                         RECV_F: self._receive, RECV_B: self._receive}

    def run_step(self, inputs, targets, scale):
        """One training step. `inputs[mb]`/`targets[mb]`: this replica's micro-batches
        (used on the first / last stage); `scale`: the global batch size."""
        for stage in self.stages:
            stage.zero_grads()
        self.inputs, self.targets, self.scale = inputs, targets, scale
        self.inbox, self.outbox, self.grad_inbox, self.grad_outbox = {}, {}, {}, {}
        self.stash, self.loss = {}, 0.0
        self.held = self.peak_held = self.held_bytes = self.peak_bytes = 0
        self.events, self.wait_time = [], 0.0
        wait(self.topology.world.Ibarrier(), self.wait_mode, self.timeout, "the step barrier")
        t0 = time.perf_counter()
        for action in self.program:
            start = time.perf_counter()
            self.handlers[action.kind](action)
            self.events.append(Event(self.rank, action, start - t0, time.perf_counter() - t0))
            if action.is_compute:
                self.p2p.reap()
        self.p2p.finish()
        self._allreduce_gradients()
        for stage, optimizer in zip(self.stages, self.optimizers):
            optimizer.step(stage.flat_grads)
        return self.loss

    # -- compute ------------------------------------------------------------------------

    def _forward(self, action):
        key, stage = (action.chunk, action.microbatch), self._stage_of(action)
        x = self.inputs[action.microbatch] if stage == 0 else self.inbox.pop(key)
        y, cache = self.stages[action.chunk].forward(x)
        owned = [x] if stage > 0 else []       # receive buffers to recycle after backward
        nbytes = cache_nbytes(cache)
        self.stash[key] = [cache, owned, nbytes, None]
        self.held += 1
        self.held_bytes += nbytes
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
        cache, owned, nbytes, _ = self.stash.pop(key)
        dy = self.grad_inbox.pop(key)
        dx = self.stages[action.chunk].backward(dy, cache, need_dx=stage > 0)
        self._release(owned + ([dy] if stage < self.last_stage else []), nbytes)
        if stage > 0:
            self._hand_on(self.grad_inbox, self.grad_outbox, action, stage - 1, dx)

    def _backward_input(self, action):
        """B: only the input gradient, which the previous stage is waiting for."""
        key, stage = (action.chunk, action.microbatch), self._stage_of(action)
        entry = self.stash[key]
        dy = self.grad_inbox.pop(key)
        dx = self.stages[action.chunk].backward_input(dy, entry[0], need_dx=stage > 0)
        entry[3] = dy                           # W needs it later
        if stage < self.last_stage:
            entry[1].append(dy)
        if stage > 0:
            self._hand_on(self.grad_inbox, self.grad_outbox, action, stage - 1, dx)

    def _backward_weight(self, action):
        """W: the weight gradient, deferred; frees the stash."""
        cache, owned, nbytes, dy = self.stash.pop((action.chunk, action.microbatch))
        self.stages[action.chunk].backward_weight(dy, cache)
        self._release(owned, nbytes)

    # -- communication ------------------------------------------------------------------

    def _send(self, action):
        box = self.outbox if action.kind == SEND_F else self.grad_outbox
        array = box.pop((action.chunk, action.microbatch))
        self.p2p.send(array, action.peer, message_tag(self.schedule, self.rank, action))

    def _receive(self, action):
        stage = self._stage_of(action)
        width = self.widths[stage] if action.kind == RECV_F else self.widths[stage + 1]
        buffer = self.pool.take((self.microbatch_size, width), self.dtype)
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
            request = data.Iallreduce(MPI.IN_PLACE, stage.flat_grads, op=MPI.SUM)
            wait(request, self.wait_mode, self.timeout, "the data-parallel all-reduce")

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
