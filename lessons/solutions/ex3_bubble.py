"""Exercise 3, solution: the bubble of GPipe and 1F1B."""


def bubble_fraction(num_stages, num_microbatches):
    """Idle share of a step: (P-1) / (m+P-1).

    Count in slots of one forward + one backward. A rank computes in m slots.
    The last stage starts its forwards P - 1 forwards late, and the last
    gradient reaches the first stage P - 1 backwards late, so the step lasts
    m + P - 1 slots and every rank idles P - 1 of them.
    """
    P, m = num_stages, num_microbatches
    return (P - 1) / (m + P - 1)
