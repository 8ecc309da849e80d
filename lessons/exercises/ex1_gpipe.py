"""Exercise 1: the GPipe schedule, as data.

In mpipipe a schedule is plain data: one list of actions per rank, in the
order that rank runs them. Action("F", 3) is the forward of micro-batch 3
through the rank's stage; Action("BW", 3) is its backward. Rank r holds
stage r. You write only the computation: the messages between ranks are
added for you, and the grader proves your lists can run before anything runs.

Grade it:  .venv/bin/mpipipe grade lessons/exercises ex1
"""

from mpipipe.schedules.actions import Action


def gpipe_actions(num_ranks, num_microbatches):
    """GPipe: every rank runs all its forwards, then all its backwards.

    Return a list of num_ranks lists, one per rank. Each holds
    Action("F", i) for i = 0, 1, ..., num_microbatches - 1, then
    Action("BW", i) for the same i, in the same order.

    For example gpipe_actions(2, 2) returns
        [[F0, F1, BW0, BW1],      (rank 0)
         [F0, F1, BW0, BW1]]      (rank 1)
    where F0 means Action("F", 0) and BW1 means Action("BW", 1).

    Hint: build one rank's list with two list comprehensions and join them
    with +. Every rank's list looks the same, because a rank's stage is its
    place in the outer list, not something written in its actions.
    """
    raise NotImplementedError("write me: gpipe_actions")
