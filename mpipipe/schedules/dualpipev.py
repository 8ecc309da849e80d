"""DualPipeV: DeepSeek's DualPipe cut in half, two chunks per rank in a V.

DualPipe (DeepSeek-V3 technical report, 2024) feeds micro-batches into the
pipeline from both ends at once and keeps two copies of the model. Its V
variant keeps one copy: with P ranks the model is cut into 2P stages placed in
a V, as in ZB-V (rank r holds stage r, chunk 0, on the way down and stage
2P-1-r, chunk 1, on the way back up), so the first rank also computes the loss.

Its signature is the overlapped pair "F&B": in the steady state a rank runs
the forward of one chunk and the full backward of the other together, so that
one's communication hides behind the other's compute. One process computes
one thing at a time, so mpipipe runs a pair as its two actions one after the
other (and draws them as a pair); lower() moves the messages of both around it.

Rank r runs eight phases, each named by what it repeats n times (0 and 1 are
the chunks; B a full backward unless split into B and W for zero bubble):

  1. nF0        2(P-1-r) forwards on chunk 0: fill the way down
  2. nF0F1      r+1 times F0, F1: the first micro-batches turn at the V's bottom
  3. nB1W1F1    P-1-r times: B1 split, its W1 at once, then F1 (zero bubble)
  4. nF0B1F1B0  m-2P+r+1 times the pairs F0&B1, F1&B0: the steady state (the
                last rank runs its very first F0, B1 apart: a smaller bubble)
  5. nB1F1B0    P-1-r times: B1, then the pair F1&B0
  6. nB1B0      r+1 times B1, B0; from the middle on split into B and W
  7. nWB0       P-1-r times: a deferred W, then B0 split
  8. nW         r+1 deferred W's

Accepted: any m >= 2P. Phase 4 must run at least once on rank 0
(m - 2P + 1 >= 1): with fewer micro-batches the phases would have to shrink in
a way DualPipe does not define.

Costs (docs/schedules.md, "DualPipeV in detail"): every rank holds at most 2P+1 chunk-micro-batches
of activations; with a pair costing F + B, one flushed step leaves each rank
idle for (P-2) f + max(P f, (P-1) i) + (P-1) max(0, i - w) in chunk costs (f
forward, i input gradient, w weight gradient), which is DualPipe's
(PP/2-1)(F&B + B - 3W) for PP = 2P stages when f = i >= w;
tests/test_dualpipev.py holds the simulator to it.
"""

from collections import deque

from mpipipe.errors import ConfigError
from .actions import BW, B, F, W, Action, Schedule
from .zbv import stage_map

DEFAULT_CHUNKS = 2
DOWN, UP = 0, 1       # chunk 0 carries micro-batches down the V, chunk 1 back up


def build(num_ranks, num_microbatches, chunks=DEFAULT_CHUNKS):
    P, m = num_ranks, num_microbatches
    if chunks != 2:
        raise ConfigError("dualpipev always has 2 chunks per rank (--virtual-stages 2)")
    if m < 2 * P:
        raise ConfigError(f"dualpipev needs at least 2 x ranks micro-batches: m={m}, P={P}; "
                          f"try --microbatches {2 * P}")
    programs = [_phases(rank, P, m) for rank in range(P)]
    return Schedule("dualpipev", P, m, programs, chunks=2, stage_map=stage_map(P))


class _Rank:
    """One rank's list as it is written: the next micro-batch of each kind and chunk,
    and the weight gradients a split backward left to do."""

    def __init__(self):
        self.actions = []
        self.next_forward, self.next_backward = [0, 0], [0, 0]
        self.deferred = deque()       # (micro-batch, chunk) of the W's still to run

    def forward(self, chunk, paired=False):
        self.actions.append(Action(F, self.next_forward[chunk], chunk, pairs_with_next=paired))
        self.next_forward[chunk] += 1

    def backward(self, chunk, split=False):
        mb = self.next_backward[chunk]
        self.next_backward[chunk] += 1
        self.actions.append(Action(B if split else BW, mb, chunk))
        if split:
            self.deferred.append((mb, chunk))

    def weight(self):
        mb, chunk = self.deferred.popleft()
        self.actions.append(Action(W, mb, chunk))

    def pair(self, forward_chunk, backward_chunk):
        """F&B: a forward and the other chunk's full backward, overlapped."""
        self.forward(forward_chunk, paired=True)
        self.backward(backward_chunk)


def _phases(rank, P, m):
    me = _Rank()
    for _ in range(2 * (P - 1 - rank)):                 # 1. nF0
        me.forward(DOWN)
    for _ in range(rank + 1):                           # 2. nF0F1
        me.forward(DOWN)
        me.forward(UP)
    for _ in range(P - 1 - rank):                       # 3. nB1W1F1
        me.backward(UP, split=True)
        me.weight()
        me.forward(UP)
    for i in range(m - 2 * P + rank + 1):               # 4. nF0B1F1B0
        if i == 0 and rank == P - 1:
            me.forward(DOWN)
            me.backward(UP)
        else:
            me.pair(DOWN, UP)
        me.pair(UP, DOWN)
    for _ in range(P - 1 - rank):                       # 5. nB1F1B0
        me.backward(UP)
        me.pair(UP, DOWN)
    split = False                                       # 6. nB1B0, split from the middle on
    middle = (rank + 1) // 2
    for i in range(rank + 1):
        split = split or (i == middle and rank % 2 == 1)
        me.backward(UP, split)
        split = split or (i == middle and rank % 2 == 0)
        me.backward(DOWN, split)
    for _ in range(P - 1 - rank):                       # 7. nWB0
        me.weight()
        me.backward(DOWN, split=True)
    for _ in range(rank + 1):                           # 8. nW
        me.weight()
    return me.actions
