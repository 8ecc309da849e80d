"""Looped breadth-first (Lamy-Poirier, 2023): GPipe over virtual stages.

Rank r holds chunks like the interleaved schedule (stage c*P + r), but runs
*all* micro-batches through chunk 0, then all through chunk 1, ..., then the
backwards in reverse: breadth-first where interleaved 1F1B is depth-first.
It keeps GPipe's simplicity and its memory appetite (every rank holds all m
micro-batches of every chunk at the turn), and has the small bubble of
interleaving when m >= P: (P-1) / (V m + P - 1) of the step, like GPipe's
with V m micro-batches.

Accepted: V >= 2 and any m >= P (with fewer micro-batches than ranks the
first rank would wait for chunk 0 of micro-batch 0 to come round).
"""

from mpipipe.errors import ConfigError
from .actions import BW, F, Action, Schedule

DEFAULT_CHUNKS = 2


def build(num_ranks, num_microbatches, chunks=DEFAULT_CHUNKS):
    P, m, V = num_ranks, num_microbatches, chunks
    if V < 2:
        raise ConfigError("looped-bfs needs --virtual-stages 2 or more (with 1 it is gpipe)")
    if m < P:
        raise ConfigError(f"looped-bfs needs at least as many micro-batches as ranks (m={m}, P={P})")
    forwards = [Action(F, i, c) for c in range(V) for i in range(m)]
    backwards = [Action(BW, i, c) for c in reversed(range(V)) for i in range(m)]
    return Schedule("looped-bfs", P, m, [forwards + backwards for _ in range(P)], chunks=V)
