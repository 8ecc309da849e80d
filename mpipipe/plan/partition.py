"""Cut a model's blocks into contiguous stages.

A partition is a list of block counts, one per stage, e.g. [3, 3, 2] for 8
blocks on 3 stages. Three ways to choose one:

- uniform: equal block counts, the first stages take the remainder
  (the last stage also computes the loss, so it gets the lighter share);
- params:  minimise the largest stage's parameter count (a proxy for time);
- explicit: a list the user gives, checked.
"""

from mpipipe.errors import ConfigError


def uniform(num_blocks, num_stages):
    _check_enough(num_blocks, num_stages)
    base, extra = divmod(num_blocks, num_stages)
    return [base + (1 if s < extra else 0) for s in range(num_stages)]


def balanced_by_params(param_counts, num_stages):
    """Contiguous split minimising the heaviest stage (dynamic programming, O(S L^2))."""
    n = len(param_counts)
    _check_enough(n, num_stages)
    prefix = [0]
    for c in param_counts:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    # best[s][i]: the lightest possible heaviest stage when the first i blocks form s stages
    best = [[inf] * (n + 1) for _ in range(num_stages + 1)]
    cut = [[0] * (n + 1) for _ in range(num_stages + 1)]
    best[0][0] = 0
    for s in range(1, num_stages + 1):
        for i in range(s, n + 1):
            for j in range(s - 1, i):
                cost = max(best[s - 1][j], prefix[i] - prefix[j])
                if cost < best[s][i]:
                    best[s][i], cut[s][i] = cost, j
    sizes, i = [], n
    for s in range(num_stages, 0, -1):
        sizes.append(i - cut[s][i])
        i = cut[s][i]
    return sizes[::-1]


def explicit(sizes, num_blocks, num_stages):
    sizes = list(sizes)
    if len(sizes) != num_stages:
        raise ConfigError(f"partition {sizes} has {len(sizes)} entries for {num_stages} stages")
    if any(s < 1 for s in sizes):
        raise ConfigError(f"partition {sizes}: every stage needs at least one block")
    if sum(sizes) != num_blocks:
        raise ConfigError(f"partition {sizes} covers {sum(sizes)} blocks, the model has {num_blocks}")
    return sizes


def make_partition(how, param_counts, num_stages):
    """`how` is 'uniform', 'params', or a list of block counts."""
    if how == "uniform":
        return uniform(len(param_counts), num_stages)
    if how == "params":
        return balanced_by_params(param_counts, num_stages)
    if isinstance(how, (list, tuple)):
        return explicit(how, len(param_counts), num_stages)
    raise ConfigError(f"unknown partition {how!r}: use uniform, params or a list like 3,3,2")


def block_ranges(sizes):
    """[3, 3, 2] -> [range(0, 3), range(3, 6), range(6, 8)]."""
    ranges, start = [], 0
    for size in sizes:
        ranges.append(range(start, start + size))
        start += size
    return ranges


def _check_enough(num_blocks, num_stages):
    if num_stages < 1:
        raise ConfigError(f"need at least one stage, got {num_stages}")
    if num_blocks < num_stages:
        raise ConfigError(
            f"{num_stages} pipeline stages but the model has only {num_blocks} layers: "
            f"use --layers {num_stages} or more, or fewer stages (pp x virtual stages)")
