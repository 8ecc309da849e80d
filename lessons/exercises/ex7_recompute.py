"""Exercise 7: recomputation, memory for time.

Between a micro-batch's forward and its backward a stage keeps what its
backward will need: the "stash". Take a stage of `num_blocks` blocks, each
Linear(width, width) followed by GELU, in float32 (4 bytes a number), and a
micro-batch of `microbatch_size` rows. What does each layer keep?

    Linear  y = x W + b        its backward needs x (for the weight gradient)
    GELU    y = 0.5 x (1 + t), t = tanh(...)
                               its backward needs x and t

With recomputation (`mpipipe train --recompute`) a stage keeps much less, and
pays for it in time: before each backward it runs the forward again.

Grade it:  .venv/bin/mpipipe grade lessons/exercises ex7
(the grader compares with what mpipipe's engine stashes on real layers, and
with the simulator's step time)
"""


def stash_bytes(num_blocks, microbatch_size, width, recompute):
    """Bytes a stage keeps for one micro-batch between its forward and its backward.

    Without recompute: everything its layers' backwards will need. With
    recompute: only what it needs to run its forward again. For example
    stash_bytes(1, 2, 3, recompute=True) is 24: the stage's input, 2 x 3
    numbers of 4 bytes.

    Hint: every array here has microbatch_size x width numbers. Count the
    arrays one block keeps (see the table above; an array that is the output
    of one layer and the input of the next is kept once), then multiply.
    """
    raise NotImplementedError("write me: stash_bytes")


def step_time(num_ranks, num_microbatches, forward, backward, recompute):
    """The time of one 1F1B step with equal stages and messages that cost nothing.

    `forward` and `backward` are the times one rank takes for one
    micro-batch's forward and for its (whole) backward. With recompute, each
    backward first runs that micro-batch's forward once more.

    For example step_time(1, 3, 1.0, 2.0, recompute=False) is 9.0: one rank,
    three forwards and three backwards, no waiting.

    Hint: exercise 3 counts the step in slots of one forward plus one
    backward: m slots of work and P - 1 slots of waiting. What does
    recomputation add to one slot?
    """
    raise NotImplementedError("write me: step_time")
