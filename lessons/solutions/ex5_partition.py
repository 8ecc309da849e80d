"""Exercise 5, solution: a balanced contiguous partition."""

from functools import cache


def balanced_partition(param_counts, num_stages):
    """Blocks per stage, contiguous, making the heaviest stage as light as it can be.

    Try every size for the first stage; the rest is the same problem, smaller.
    Remembering the answers (cache) keeps that to len * stages subproblems.
    """
    counts = list(param_counts)
    if not 1 <= num_stages <= len(counts):
        raise ValueError(f"cannot cut {len(counts)} blocks into {num_stages} stages")

    @cache
    def best(start, stages):
        """(heaviest stage, sizes) for counts[start:] cut into `stages` stages."""
        if stages == 1:
            return sum(counts[start:]), (len(counts) - start,)
        options = []
        for size in range(1, len(counts) - start - stages + 2):   # leave a block per later stage
            first = sum(counts[start:start + size])
            heaviest_rest, sizes_rest = best(start + size, stages - 1)
            options.append((max(first, heaviest_rest), (size,) + sizes_rest))
        return min(options)

    return list(best(0, num_stages)[1])
