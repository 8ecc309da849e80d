"""Exercise 9, solution: ZB-H1."""

from mpipipe.schedules.actions import Action


def zb_h1_actions(num_ranks, num_microbatches):
    """1F1B with B for BW; rank r holds back its first r W's and runs them after its last B."""
    P, m = num_ranks, num_microbatches
    schedule = []
    for rank in range(P):
        warmup = min(P - 1 - rank, m)
        # Rank r holds at most P - r micro-batches in 1F1B; r W's held back bring it to P,
        # 1F1B's peak on rank 0, and let its B's answer the rank before without delay.
        held_back = rank
        actions = [Action("F", i) for i in range(warmup)]
        next_w = 0
        for i in range(m):
            if warmup + i < m:
                actions.append(Action("F", warmup + i))
            actions.append(Action("B", i))
            if i >= held_back:
                actions.append(Action("W", next_w))
                next_w += 1
        actions += [Action("W", i) for i in range(next_w, m)]
        schedule.append(actions)
    return schedule
