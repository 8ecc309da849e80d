"""Exercise 10: tensor parallelism's conjugate pair, f and g, in a transformer's MLP.

The MLP of a transformer block is

    y = GELU(x @ W1 + b1) @ W2 + b2        W1: (D, 4D), W2: (4D, D)

Tensor parallelism (Megatron-LM; mpipipe/nn/tensor_parallel.py, lesson 10)
shares it out among the T ranks of a tensor group. Rank t holds

    W1[:, part t], b1[part t]     column-parallel: a slice of the 4D hidden units
    W2[part t, :]                 row-parallel: the rows that meet those hidden units
    b2                            whole, the same on every rank

and every rank holds the whole input x. Two operations tie the ranks together,
each the other's mirror image:

    f   forward: identity            backward: all-reduce (the sum over the ranks)
    g   forward: all-reduce           backward: identity

One of them sits in front of the column-parallel layer, the other after the
row-parallel one. Work out which goes where: what does each rank hold after
its own matrix products, and what does the output need?

You are given `allreduce(array)`: it returns the sum of `array` over the T
ranks. Every rank must call it the same number of times, or the others wait
for it forever. The grader runs your functions on T = 1, 2 and 4 ranks at
once and compares with the whole MLP computed in one piece.

Grade it:  .venv/bin/mpipipe grade lessons/exercises ex10
"""

from mpipipe.nn.layers import GELU   # GELU().forward(h) -> (a, cache);
                                 # GELU().backward_input(da, cache) -> dh (mpipipe/nn/layers.py)


def mlp_forward(x, W1, b1, W2, b2, allreduce):
    """This rank's part of the forward; return (y, cache).

    x: (n, D), the whole input. W1, b1, W2: this rank's parts (shapes (D, 4D/T),
    (4D/T,), (4D/T, D)); b2: (D,), whole. y must be the whole MLP's output,
    the same on every rank. `cache` is anything your backward will need.

    Hint: after h = x @ W1 + b1 and GELU, each rank holds its own hidden units,
    and GELU(h) @ W2 is only this rank's share of a sum. Where does b2 go, so
    that it is counted once?
    """
    raise NotImplementedError("write me: mlp_forward")


def mlp_backward_input(dy, cache, W1, W2, allreduce):
    """dx, the gradient of the loss with respect to the input x (the same on every rank).

    dy: (n, D), the gradient with respect to y: the same on every rank.

    Hint: go back through the forward in reverse. Each rank's dx reaches x only
    through its own hidden units: what is missing from it?
    """
    raise NotImplementedError("write me: mlp_backward_input")
