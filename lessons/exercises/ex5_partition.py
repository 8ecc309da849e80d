"""Exercise 5: cut a model into balanced stages.

A pipeline runs as fast as its slowest stage. Each stage is a contiguous
run of the model's blocks (layers); the work of a stage is roughly its
parameter count. Choose the cut that makes the heaviest stage as light
as possible.

Grade it:  .venv/bin/mpipipe grade lessons/exercises ex5
"""


def balanced_partition(param_counts, num_stages):
    """Blocks per stage, in order, with the heaviest stage as light as possible.

    param_counts[i] is the number of parameters of block i. Return a list of
    num_stages whole numbers, each at least 1, adding up to len(param_counts):
    the number of consecutive blocks each stage takes. Among all such lists,
    return one whose heaviest stage (the largest sum of its blocks' counts)
    is smallest. You may assume 1 <= num_stages <= len(param_counts).

    For example balanced_partition([10, 1, 1, 1, 1, 10], 3) returns
    [1, 4, 1]: stages of 10, 4 and 10 parameters. Equal block counts,
    [2, 2, 2], would give stages of 11, 2 and 11.

    Hint: try every size for the first stage; what remains is the same
    problem with one stage fewer (recursion). Remember answers you already
    found (functools.cache) so it stays fast.
    """
    raise NotImplementedError("write me: balanced_partition")
