"""Interleaved 1F1B (Narayanan et al., 2021, Megatron-LM): V model chunks per rank.

With V chunks per rank, rank r holds stages r, r+P, r+2P, ... (chunk c is
stage c*P + r), so a micro-batch loops through the ranks V times. Each stage
is 1/V of a rank's share of the model, so the warm-up and cool-down bubbles
shrink by V: bubble time / ideal compute time = (P-1) / (V m). The price is V
times as many messages and more activations held during the longer warm-up.

The order is 1F1B's, over "virtual micro-batches": forward k (k = 0..mV-1)
runs micro-batch `(k // PV) P + k % P` on chunk `(k // P) % V`, i.e. a group of
P micro-batches goes through chunk 0, then the same group through chunk 1, ...
Backward k visits the chunks in reverse order. Rank r first runs
(P - r - 1) * 2 + (V - 1) * P forwards (all of them when m = P), then
alternates one forward and one backward, then drains the backwards.

Accepted: V >= 2 and m a multiple of P. A group of P micro-batches must leave
the last rank's chunk c exactly when the first rank wants to start them on
chunk c+1; with m not a multiple of P the last group is short and the
virtual-micro-batch numbering above no longer names real micro-batches.
"""

from mpipipe.errors import ConfigError
from .actions import BW, F, Action, Schedule

DEFAULT_CHUNKS = 2


def build(num_ranks, num_microbatches, chunks=DEFAULT_CHUNKS):
    P, m, V = num_ranks, num_microbatches, chunks
    if V < 2:
        raise ConfigError("interleaved needs --virtual-stages 2 or more (with 1 it is 1f1b)")
    if m % P:
        raise ConfigError(f"interleaved needs the micro-batches to be a multiple of the "
                          f"pipeline size: m={m}, P={P}; try --microbatches {P * max(1, m // P)}")
    total = m * V

    def forward(k):
        return Action(F, (k // (P * V)) * P + k % P, (k // P) % V)

    def backward(k):
        return Action(BW, (k // (P * V)) * P + k % P, V - 1 - (k // P) % V)

    programs = []
    for rank in range(P):
        warmup = total if m == P else min(total, (P - rank - 1) * 2 + (V - 1) * P)
        program = [forward(k) for k in range(warmup)]
        for i in range(total - warmup):
            program += [forward(warmup + i), backward(i)]
        program += [backward(i) for i in range(total - warmup, total)]
        programs.append(program)
    return Schedule("interleaved", P, m, programs, chunks=V)
