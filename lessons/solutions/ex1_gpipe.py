"""Exercise 1, solution: GPipe as data."""

from mpipipe.schedules.actions import Action


def gpipe_actions(num_ranks, num_microbatches):
    """Every rank: all forwards, then all backwards, micro-batches in order."""
    forwards = [Action("F", i) for i in range(num_microbatches)]
    backwards = [Action("BW", i) for i in range(num_microbatches)]
    # A new list per rank: [forwards + backwards] * num_ranks would share one.
    return [forwards + backwards for _rank in range(num_ranks)]
