"""Exercise 8, solution: the interleaved placement and warm-up."""


def rank_and_chunk(stage, num_ranks):
    """Stage s = chunk * P + rank: the chunks 0 of all ranks come first, then the chunks 1, ..."""
    return stage % num_ranks, stage // num_ranks


def warmup(rank, num_ranks, num_microbatches, num_chunks):
    """The first 2 (P - 1 - rank) + (V - 1) P forwards, in groups of P through the chunks."""
    P, m, V = num_ranks, num_microbatches, num_chunks
    count = min(m * V, 2 * (P - 1 - rank) + (V - 1) * P)
    forwards = []
    for k in range(count):
        group, within = divmod(k, P * V)          # which group of P micro-batches
        chunk, member = divmod(within, P)         # which chunk, which micro-batch of the group
        forwards.append((group * P + member, chunk))
    return forwards
