"""Exercise 11: schedule golf. Design a schedule of your own; the grader scores it.

Every other exercise asks for a schedule from a paper. This one asks for the
shortest step you can find on one hole:

    P = 4 ranks, m = 8 micro-batches, one stage per rank
    F = B = W = 1: a micro-batch's forward, input gradient and weight
        gradient on one rank (a fused backward, BW, costs B + W = 2)
    memory budget: no rank may hold more than 4 micro-batches' activations
        at once (a micro-batch is held from its F until its W, or its BW)

No step can beat m(F+B+W) + (P-1)F = 27: every rank has its own 24 to do,
and the last rank cannot start before the first micro-batch has gone
through the 3 ranks before it. How close can you get?

Points (6), each band building on the one before:
    2  it runs: every action once, no rank waits forever (the validator says why not)
    1  within the memory budget on every rank
    1  it trains for real: mpiexec -n 4 mpipipe train --schedule-file ... --check
       gives the one-process losses and weights
    1  makespan within 10% of 27 (mpipipe's simulator, the costs above)
    1  within 2%

Return a list of 4 lists, one per rank, of Action("F", i), Action("B", i),
Action("W", i) or Action("BW", i) (the format of exercises 2 and 9), or the
name of a schedule file in PyTorch's CSV format beside this file (`mpipipe
export` writes one to start from; `mpipipe simulate --schedule-file` plays
one out and draws it).

Grade it:  .venv/bin/mpipipe grade lessons/exercises ex11
"""

from mpipipe.schedules.actions import Action


def golf_actions(num_ranks, num_microbatches):
    """Your schedule for the hole above (num_ranks = 4, num_microbatches = 8).

    Hint: start from exercise 2's 1F1B (it fits the budget: rank 0 holds 4)
    and read where `mpipipe simulate --schedule-file` shows each rank idle.
    A backward split into B and W lets a rank answer the B the rank before
    waits for at once and keep the W for a moment it would otherwise idle.
    Lesson 7 shows the family of schedules this leads to, and what they hold.
    """
    raise NotImplementedError("write me: golf_actions")
