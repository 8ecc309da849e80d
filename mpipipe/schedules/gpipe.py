"""GPipe (Huang et al., 2019): all forwards, then all backwards.

    rank 0: F0 F1 F2 F3 .  .  .  .  .  .  BW0 BW1 BW2 BW3
    rank 1: .  F0 F1 F2 F3 .  .  .  .  BW0 BW1 BW2 BW3 .
    ...

Splitting the batch into m micro-batches lets the stages overlap, and the idle
fraction falls to (P-1)/(m+P-1). The price: every rank holds the activations
of all m micro-batches at the turn from forward to backward.
"""

from .actions import BW, F, Action, Schedule


def build(num_ranks, num_microbatches, chunks=1):
    m = num_microbatches
    programs = []
    for _rank in range(num_ranks):
        forwards = [Action(F, i) for i in range(m)]
        backwards = [Action(BW, i) for i in range(m)]
        programs.append(forwards + backwards)
    return Schedule("gpipe", num_ranks, m, programs)
