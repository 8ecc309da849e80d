"""1F1B (PipeDream-Flush, Narayanan et al., 2021): one forward, one backward.

For P = 4 ranks and m = 8 micro-batches (unit forward, backward twice as long):

    rank 0: F0 F1 F2 F3 .  .  .  BW0 F4 BW1 F5 BW2 F6 BW3 F7 BW4 .  BW5 .  BW6 .  BW7
    rank 3: .  .  .  F0 BW0 F1 BW1 F2 BW2 F3 BW3 F4 BW4 ...

Rank r does three phases:
  warm-up   P-1-r forwards, enough to fill the pipeline below it;
  steady    alternate one forward and one backward;
  cool-down the backwards still owed.
The bubble is GPipe's, (P-1)/(m+P-1), but a backward frees a micro-batch's
activations as soon as a new one arrives, so rank r never holds more than
min(P-r, m) of them, instead of m.
"""

from .actions import BW, F, Action, Schedule


def build(num_ranks, num_microbatches, chunks=1):
    P, m = num_ranks, num_microbatches
    programs = []
    for rank in range(P):
        warmup = min(P - 1 - rank, m)
        program = [Action(F, i) for i in range(warmup)]
        for i in range(m - warmup):
            program.append(Action(F, warmup + i))
            program.append(Action(BW, i))
        program += [Action(BW, i) for i in range(m - warmup, m)]
        programs.append(program)
    return Schedule("1f1b", P, m, programs)
