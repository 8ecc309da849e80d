"""ZB-H2 (Qi et al., 2023): spend activation memory to remove the bubble.

Where ZB-H1 keeps 1F1B's memory (P micro-batches in flight on rank 0), ZB-H2
lets every rank hold up to 2P - 1. The first rank then keeps doing forwards
through what was the warm-up bubble, and W's fill the cool-down, so in the
steady state no rank waits: the bubble per iteration is (P-1)(F+B-2W), zero
when F = B = W.

Zero holds only between iterations that overlap. Within one flushed step the
schedule is a parallelogram: the last rank cannot start before the first
micro-batch reaches it, and the first rank runs out of work before the last
rank is done. The paper removes those edges by letting the next step start
before the optimizer step is known to be safe ("post-validation"); mpipipe
flushes every step, so its measured bubble is the parallelogram's. The
simulator reports both the flushed makespan and the steady-state time.

The order is found by the list scheduler in greedy.py (B first, then F while
fewer than 2P-1 micro-batches are in flight, then W).
"""

from .greedy import schedule_greedily


def build(num_ranks, num_microbatches, chunks=1):
    P = num_ranks
    return schedule_greedily("zb-h2", P, num_microbatches, [[r] for r in range(P)],
                         memory_limits=[2 * P - 1] * P)
