"""Exercise 2: the 1F1B schedule, as data.

GPipe holds the activations of all m micro-batches on every rank until the
backwards start. 1F1B starts each backward as early as it can, so a rank
never holds more than it needs to keep the pipeline busy: rank r holds at
most min(P - r, m) micro-batches (P ranks, m micro-batches). The bubble
stays GPipe's.

Same format as exercise 1: one list of Action("F", i) / Action("BW", i)
per rank.

Grade it:  .venv/bin/mpipipe grade lessons/exercises ex2
"""

from mpipipe.schedules.actions import Action


def one_f_one_b_actions(num_ranks, num_microbatches):
    """1F1B: per rank, a warm-up of forwards, then one forward one backward, then the rest.

    Return a list of num_ranks lists, one per rank. Rank r's list has three parts:
      1. warm-up:   F0 ... F(w-1), where w = min(num_ranks - 1 - r, num_microbatches);
      2. steady:    for i = 0, 1, ..., num_microbatches - w - 1: F(w + i), then BW(i);
      3. cool-down: BW for every micro-batch whose backward is still missing, in order.

    For example rank 0 of one_f_one_b_actions(4, 6) is
        F0 F1 F2 F3 BW0 F4 BW1 F5 BW2 BW3 BW4 BW5
    and rank 3, the last, has no warm-up: F0 BW0 F1 BW1 ... F5 BW5.

    Hint: why P - 1 - r? The last rank can run a backward right after its
    forward; each rank above it must have one more forward in flight to keep
    the rank below busy while the first gradient climbs back. The grader
    says which rank would wait forever if the order is wrong.
    """
    raise NotImplementedError("write me: one_f_one_b_actions")
