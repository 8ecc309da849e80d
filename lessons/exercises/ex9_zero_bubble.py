"""Exercise 9: zero bubble (ZB-H1), where the weight gradients go.

A backward does two things: B, the gradient with respect to the stage's
input, which the previous stage is waiting for; and W, the gradient with
respect to the stage's weights, which only the optimizer needs, at the end
of the step. Split in two, a W can wait, and fill time the rank would
otherwise spend idle.

ZB-H1 (Qi et al., 2023) keeps 1F1B's order with B in place of BW, and moves
the W's. Done right, with F, B and W the times of one micro-batch's forward,
B and W on one rank, every rank idles (P-1)(F+B-W) per step instead of
1F1B's (P-1)(F+B+W), and holds no more activations than 1F1B's first rank.

Same format as exercise 2, with three kinds of action: Action("F", i),
Action("B", i) and Action("W", i). A micro-batch's activations are held from
its F until its W.

Grade it:  .venv/bin/mpipipe grade lessons/exercises ex9
(the grader plays your lists out in mpipipe's simulator under several costs)
"""

from mpipipe.schedules.actions import Action


def zb_h1_actions(num_ranks, num_microbatches):
    """ZB-H1: per rank, 1F1B's order with B for BW, and each W where it does no harm.

    Return a list of num_ranks lists, one per rank, holding every F, B and W
    of micro-batches 0 .. num_microbatches - 1 once.

    Start from exercise 2: 1F1B with Action("B", i) in place of
    Action("BW", i) and Action("W", i) right after it. That runs, but every
    W delays the B the rank before is waiting for. Then let rank r hold
    back some of its W's: run a W only once the rank is that many backwards
    ahead, and run the held-back ones after its last B.

    Hint: how many W's may rank r hold back? It holds a micro-batch until
    its W, and 1F1B's rank r holds at most P - r micro-batches, rank 0 P.
    At the end of the step, the last gradient should climb from rank P - 1
    to rank 0 at one B per rank, with every rank filling its wait with the
    W's it held back.
    """
    raise NotImplementedError("write me: zb_h1_actions")
