"""A schedule from a building block: one micro-batch's passes, repeated.

Qi et al., "Pipeline Parallelism with Controllable Memory" (NeurIPS 2024),
describe a schedule by its building block: when each pass of ONE micro-batch
runs on each rank, in time slots of one pass each. The pipeline is that block
repeated, micro-batch k shifted by k * PERIOD slots. Their observation: a
micro-batch's activations on a rank live from its F to its W, so the peak
memory of the whole schedule is set by the block alone (its lifespans divided
by the period), whatever the number of micro-batches.

The V-shaped blocks (v_min.py, v_half.py) put two chunks on each rank, as ZB-V
does: per micro-batch a rank runs F and B on chunk 0 and on chunk 1 (4 passes
whose slots the block gives) and a W for each (2 passes). So PERIOD = 6: in
the steady state every slot is busy. Here the W's are not in the block: each
waits for the first slot no F or B takes after its B, in the order of the B's.

What the engine runs is each rank's passes in slot order. Empty slots are not
kept: a rank starts a pass as soon as its input is there, which is the
paper's "squeezing". (The paper's optional last step, moving warm-up passes
into earlier free slots when memory allows, is not done here; see the
schedules' docstrings for what that costs.)
"""

from collections import deque

from mpipipe.errors import ConfigError
from .actions import B, F, W, Action, Schedule
from .zbv import stage_map

PERIOD = 6      # slots per micro-batch per rank: F, B, W on each of 2 chunks
DOWN, UP = 0, 1  # chunk 0 carries a micro-batch down the V, chunk 1 back up


def schedule_from_block(name, num_ranks, num_microbatches, block):
    """Action lists for a V-shaped block; block(P, rank) = the slots of micro-batch 0's
    (F on chunk 0, F on chunk 1, B on chunk 1, B on chunk 0) on that rank."""
    P, m = num_ranks, num_microbatches
    programs = []
    for rank in range(P):
        f_down, f_up, b_up, b_down = block(P, rank)
        passes = ((f_down, F, DOWN), (f_up, F, UP), (b_up, B, UP), (b_down, B, DOWN))
        slots = {}
        for first, kind, chunk in passes:
            for mb in range(m):
                if first + PERIOD * mb in slots:     # two passes in one slot: not a block
                    raise ConfigError(f"{name}: rank {rank} has two passes in slot "
                                      f"{first + PERIOD * mb}: the block's slots must differ "
                                      f"modulo {PERIOD}")
                slots[first + PERIOD * mb] = Action(kind, mb, chunk)
        program, waiting_w = [], deque()
        for slot in range(max(slots) + 1):
            action = slots.get(slot)
            if action is not None:
                program.append(action)
                if action.kind == B:
                    waiting_w.append(action)
            elif waiting_w:                         # a free slot: the oldest W waiting
                done = waiting_w.popleft()
                program.append(Action(W, done.microbatch, done.chunk))
        program += [Action(W, done.microbatch, done.chunk) for done in waiting_w]
        programs.append(program)
    return Schedule(name, P, m, programs, chunks=2, stage_map=stage_map(P))

