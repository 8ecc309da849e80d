"""Exercise 7, solution: what recomputation saves and what it costs."""

BYTES_PER_NUMBER = 4   # float32


def stash_bytes(num_blocks, microbatch_size, width, recompute):
    """Per micro-batch: every layer's backward inputs, or (recompute) only the stage's input."""
    array = microbatch_size * width * BYTES_PER_NUMBER
    if recompute:
        return array                    # the input, to run the forward again
    # A block keeps its Linear's input, its GELU's input and the GELU's tanh: three arrays.
    return 3 * num_blocks * array


def step_time(num_ranks, num_microbatches, forward, backward, recompute):
    """m + P - 1 slots of forward + backward; recompute puts one more forward in every slot."""
    slot = forward + backward + (forward if recompute else 0.0)
    return (num_microbatches + num_ranks - 1) * slot
