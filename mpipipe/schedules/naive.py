"""Naive model parallelism: the whole batch goes through the stages one after another.

    rank 0: F0 .  .  .  .  .  BW0
    rank 1: .  F0 .  .  .  BW0 .
    rank 2: .  .  F0 .  BW0 .  .

Only one rank works at a time, so each rank idles (P-1)/P of the step. This is
the picture that motivates everything else.
"""

from mpipipe.errors import ConfigError
from .actions import BW, F, Action, Schedule


def build(num_ranks, num_microbatches=1, chunks=1):
    if num_microbatches != 1:
        raise ConfigError("the naive schedule runs the whole batch as one micro-batch: "
                          "use --microbatches 1 (or gpipe / 1f1b to split the batch)")
    programs = [[Action(F, 0), Action(BW, 0)] for _ in range(num_ranks)]
    return Schedule("naive", num_ranks, 1, programs)
