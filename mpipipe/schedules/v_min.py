"""V-Min (Qi et al., NeurIPS 2024): a V with a third of 1F1B's activation memory.

Two chunks per rank in a V, as in ZB-V: rank r holds stage r (chunk 0, on the
way down) and stage 2P-1-r (chunk 1, on the way back up). The building block
(see building_block.py) is the tightest one: every pass of a micro-batch
starts the slot after its input is made, so a micro-batch is in the pipeline
for as short a time as it can be. With f/F the forward of chunk 0/1 and b/B
its backward (P = 4; W's fill the free slots, micro-batch k adds 6k):

    slot:   0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15
    rank 0: f . . . . . . F B . .  .  .  .  .  b
    rank 1: . f . . . . F . . B .  .  .  .  b  .
    rank 2: . . f . . F . . . . B  .  .  b  .  .
    rank 3: . . . f F . . . . . .  B  b  .  .  .

    rank r: f at r, F at 2P-1-r, B at 2P+x+r, b at 4P+x-1-r

x = 2 when 3 divides P, else 0: it keeps the four slots of a rank different
modulo 6 (2P is a multiple of 6 exactly then), so that repeated blocks never
collide. A rank holds chunk 0's activations for 4P+x-2r slots and chunk 1's
for 2r+2+x, about 4P/6 chunk-micro-batches at a time, each half a stage: the
paper's peak of (P+4)//3 micro-batches' activations (1F1B: P).

Cost, with F = B = W (a rank's share; a chunk pass costs half): one flushed
step leaves each rank idle for (4P - 5 + x) chunk passes, about 2/3 of 1F1B's
6(P-1), the paper's bubble rate of about 2P/3m. The price of the tight block:
its F's and B's run in lock step, so in the steady state each of a rank's four
F and B passes takes as long as the slower of F and B, and a micro-batch costs
max(3 max(F, B), F + B + W) per rank (P >= 3), not F + B + W. V-Min wants F
and B equally long (the paper asks for F = B = W).
The formulas hold for P >= 2 and m >= P (P = 1 runs too: one rank, both arms).
"""

from mpipipe.errors import ConfigError
from .building_block import schedule_from_block

DEFAULT_CHUNKS = 2


def block(P, rank):
    """Slots of micro-batch 0's f, F, B, b on `rank` (the picture above)."""
    x = 2 if P % 3 == 0 else 0
    return rank, 2 * P - 1 - rank, 2 * P + x + rank, 4 * P + x - 1 - rank


def build(num_ranks, num_microbatches, chunks=DEFAULT_CHUNKS):
    if chunks != 2:
        raise ConfigError("v-min always has 2 chunks per rank (--virtual-stages 2)")
    return schedule_from_block("v-min", num_ranks, num_microbatches, block)
