"""Exercise 10, solution: the conjugate pair in a transformer's MLP.

f sits in front of the column-parallel layer (its backward adds up the
input gradients of the T slices), g after the row-parallel one (its forward
adds up the partial outputs); b2 is added once, after g.
"""

from mpipipe.nn.layers import GELU


def mlp_forward(x, W1, b1, W2, b2, allreduce):
    """f (identity), this rank's hidden units, their share of the output, g (the sum), b2."""
    a, gelu_cache = GELU().forward(x @ W1 + b1)
    y = allreduce(a @ W2) + b2
    return y, gelu_cache


def mlp_backward_input(dy, cache, W1, W2, allreduce):
    """g's backward (identity), back through this rank's hidden units, f's backward (the sum)."""
    dh = GELU().backward_input(dy @ W2.T, cache)
    return allreduce(dh @ W1.T)
