"""Exercise 11, two answers: a 1F1B that fits (4 of 6 points), and a zero-bubble one that wins.

1F1B holds at most P = 4 micro-batches on rank 0, so it fits the budget, but
each rank idles (P-1)(F+B+W) = 9: makespan 33, 22% above the bound of 27.

Splitting each backward into B and W and holding back rank r's first r W's
(ZB-H1, exercise 9) lets each gradient climb one B per rank; the held-back
W's fill the waits. Each rank idles (P-1)(F+B-W) = 3: makespan 27, the bound.
It holds no more than 1F1B does, so it fits the same budget.
"""

from mpipipe.schedules.actions import Action


def one_f_one_b_that_fits(num_ranks, num_microbatches):
    programs = []
    for rank in range(num_ranks):
        warmup = min(num_ranks - 1 - rank, num_microbatches)
        program = [Action("F", i) for i in range(warmup)]
        for i in range(num_microbatches):
            if warmup + i < num_microbatches:
                program.append(Action("F", warmup + i))
            program.append(Action("BW", i))
        programs.append(program)
    return programs


def golf_actions(num_ranks, num_microbatches):
    programs = []
    for rank in range(num_ranks):
        warmup = min(num_ranks - 1 - rank, num_microbatches)
        program = [Action("F", i) for i in range(warmup)]
        next_w = 0
        for i in range(num_microbatches):
            if warmup + i < num_microbatches:
                program.append(Action("F", warmup + i))
            program.append(Action("B", i))
            if i >= rank:                       # rank r holds back its first r W's
                program.append(Action("W", next_w))
                next_w += 1
        program += [Action("W", i) for i in range(next_w, num_microbatches)]
        programs.append(program)
    return programs
