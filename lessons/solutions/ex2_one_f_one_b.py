"""Exercise 2, solution: 1F1B as data."""

from mpipipe.schedules.actions import Action


def one_f_one_b_actions(num_ranks, num_microbatches):
    """Per rank: warm-up forwards, then one forward one backward, then the backwards left."""
    schedule = []
    for rank in range(num_ranks):
        # Enough forwards to keep the ranks below busy until the first gradient returns;
        # never more than there are micro-batches.
        warmup = min(num_ranks - 1 - rank, num_microbatches)
        actions = [Action("F", i) for i in range(warmup)]
        for i in range(num_microbatches - warmup):
            actions.append(Action("F", warmup + i))
            actions.append(Action("BW", i))
        for i in range(num_microbatches - warmup, num_microbatches):
            actions.append(Action("BW", i))
        schedule.append(actions)
    return schedule
