"""V-Half (Qi et al., NeurIPS 2024): a V with half of 1F1B's activation memory.

Two chunks per rank in a V, as in ZB-V and V-Min (rank r holds stage r and
stage 2P-1-r). The building block (building_block.py) leaves one free slot
between neighbouring ranks on the way down (f) and on the way back (B), which
makes it looser than V-Min's and lets the W's of one micro-batch fit between
the passes of the next whatever their lengths. f/F is the forward of chunk
0/1, b/B its backward (P = 4; W's fill the free slots, micro-batch k adds 6k):

    slot:   0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25
    rank 0: f . . . . . . . . . F  .  .  .  B  .  .  .  .  .  .  .  .  .  .  b
    rank 1: . . f . . . . . . F .  .  .  .  .  .  B  .  .  .  .  .  .  .  b  .
    rank 2: . . . . f . . . F . .  .  .  .  .  .  .  .  B  .  .  .  .  b  .  .
    rank 3: . . . . . . f F . . .  .  .  .  .  .  .  .  .  .  B  .  b  .  .  .

    rank r: f at 2r, F at 3P-2-r, B at 3P-1+y+2r, b at 6P-2+y-r

y = 3 when P is even, else 0, so that a rank's four slots differ modulo 6.
A rank holds chunk 0's activations for about 6P-3r slots and chunk 1's for
3r+2+y: about P chunk-micro-batches at a time, each half a stage, the paper's
peak of (P+2)//2 micro-batches' activations (1F1B: P).

Cost, with F = B = W (a rank's share; a chunk pass costs half): one flushed
step leaves each rank idle for (7P - 7 + y)/2 chunk passes, 7/12 of 1F1B's
6(P-1). The paper reports about 1/2 (bubble rate ~P/2m) after one more step
mpipipe does not take: moving warm-up passes into earlier free slots while
memory allows. Unlike V-Min, the steady state stays at F + B + W per micro-
batch for unequal costs as long as W + 2B >= 2F and W + 2F >= 2B (the paper's
condition); beyond it a micro-batch costs max(2B-2F-W, 2F-2B-W)/2 more.
The formulas hold for P >= 2 and m >= P (P = 1 runs too: one rank, both arms).
"""

from mpipipe.errors import ConfigError
from .building_block import schedule_from_block

DEFAULT_CHUNKS = 2


def block(P, rank):
    """Slots of micro-batch 0's f, F, B, b on `rank` (the picture above)."""
    y = 3 if P % 2 == 0 else 0
    return 2 * rank, 3 * P - 2 - rank, 3 * P - 1 + y + 2 * rank, 6 * P - 2 + y - rank


def build(num_ranks, num_microbatches, chunks=DEFAULT_CHUNKS):
    if chunks != 2:
        raise ConfigError("v-half always has 2 chunks per rank (--virtual-stages 2)")
    return schedule_from_block("v-half", num_ranks, num_microbatches, block)
