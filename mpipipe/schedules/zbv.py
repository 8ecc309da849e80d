"""ZB-V (Qi et al., 2024): two chunks per rank, placed in a V.

With P ranks the model is cut into 2P stages. Rank r holds stage r (chunk 0,
on the way down) and stage 2P-1-r (chunk 1, on the way back up):

    stage:   0   1   2   3   4   5   6   7        (P = 4)
    rank:    0   1   2   3   3   2   1   0

So the first rank also holds the last stage and computes the loss, and the
turn at the bottom (stages P-1 and P, both on rank P-1) needs no message.
Every rank does the same work at both ends of a micro-batch's life, which
balances memory: each rank holds at most 2P chunk-micro-batches, each half a
stage's activations, the same bytes as 1F1B's P. With the backward split into
B and W the bubble nearly vanishes at that memory.

The order is found by the list scheduler in greedy.py, with the deeper chunk
served first so micro-batches drain before new ones enter.
"""

from mpipipe.errors import ConfigError
from .greedy import schedule_greedily

DEFAULT_CHUNKS = 2


def stage_map(num_ranks):
    return [[r, 2 * num_ranks - 1 - r] for r in range(num_ranks)]


def build(num_ranks, num_microbatches, chunks=DEFAULT_CHUNKS):
    if chunks != 2:
        raise ConfigError("zbv always has 2 chunks per rank (--virtual-stages 2)")
    P = num_ranks
    return schedule_greedily("zbv", P, num_microbatches, stage_map(P),
                         memory_limits=[2 * P] * P, deep_first=True)
