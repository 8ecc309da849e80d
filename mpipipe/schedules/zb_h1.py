"""ZB-H1 (Qi et al., 2023, "Zero Bubble Pipeline Parallelism"): 1F1B with the backward split.

The backward is split into B (input gradient: the previous stage waits for it)
and W (weight gradient: only the optimizer needs it). Rank r runs 1F1B's
order with B in place of BW, but holds back its first r weight gradients and
runs them after its last B:

    rank 0: F0 F1 F2 F3 .  .  .  B0 W0 F4 B1 W1 F5 B2 W2 ... B7 W7
    rank 3: .  .  .  F0 B0 F1 B1 F2 B2 F3 B3 W0 F4 B4 W1 ... B7 W4 W5 W6 W7

Why it helps: the later ranks answer each B before doing W work, so
gradients climb the pipeline one B (not B + W) per hop, and the cool-down
gaps of 1F1B are filled with the held-back W's. With F = B = W and
m >= P the bubble per rank falls from 1F1B's (P-1)(F+B+W) to (P-1)(F+B-W),
and no rank ever holds more than P micro-batches: 1F1B's peak on rank 0.
"""

from .actions import B, F, W, Action, Schedule


def build(num_ranks, num_microbatches, chunks=1):
    P, m = num_ranks, num_microbatches
    programs = []
    for rank in range(P):
        warmup = min(P - 1 - rank, m)
        held_back = rank            # how many W's this rank postpones to the end
        program = [Action(F, i) for i in range(warmup)]
        next_w = 0
        for i in range(m):
            if warmup + i < m:
                program.append(Action(F, warmup + i))
            program.append(Action(B, i))
            if i >= held_back:
                program.append(Action(W, next_w))
                next_w += 1
        program += [Action(W, i) for i in range(next_w, m)]
        programs.append(program)
    return Schedule("zb-h1", P, m, programs)
