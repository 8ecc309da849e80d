"""Exercise 3: how much of a step does a pipeline waste?

With P stages and m micro-batches, GPipe and 1F1B leave each rank idle for
part of the step: at the start it waits for the first micro-batch to reach
it, at the end for the last gradient to come back. That idle share is the
"bubble". Take equal stages and messages that cost nothing.

Grade it:  .venv/bin/mpipipe grade lessons/exercises ex3
(the grader compares with mpipipe's simulator playing out the GPipe schedule)
"""


def bubble_fraction(num_stages, num_microbatches):
    """The idle share of one step: (time a rank waits) / (length of the step), a float in [0, 1).

    For example bubble_fraction(1, 8) is 0.0 (one stage never waits) and
    bubble_fraction(4, 8) is 3/11 = 0.2727...

    Hint: count time in slots of one forward plus one backward. A rank
    computes in m slots. The step lasts P - 1 slots longer than that: the
    last stage starts P - 1 forwards late, and the first stage's last
    backward comes P - 1 backwards late. Beware of // (whole-number division).
    """
    raise NotImplementedError("write me: bubble_fraction")
