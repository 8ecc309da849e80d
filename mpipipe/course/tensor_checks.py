"""Checks of exercise 10: the conjugate pair f and g in a tensor-parallel MLP.

The student's `mlp_forward` and `mlp_backward_input` run on T = 1, 2 and 4
"ranks" at once: T threads, each with its shard of the same seeded weights,
whose `allreduce` adds up through a barrier, as a tensor group's Allreduce
does. The reference is the whole MLP in one piece, built from mpipipe's own
layers (Linear, GELU). A rank that calls allreduce more or less often than the
others would leave them waiting forever under MPI: here the barrier gives up
after a few seconds and the feedback says who called how often.
"""

import threading

import numpy as np

from mpipipe.nn.layers import GELU
from .base import Wrong, short
from .base import call as base_call

WAIT = 3.0   # seconds a rank waits at the all-reduce for the others
# (rows of x, width D, ranks T): the hidden layer is 4 D wide, cut into T parts
CASES = {1: [(3, 4, 1), (2, 6, 1)], "split": [(5, 8, 2), (2, 8, 4), (4, 6, 2)]}


class _Abandoned(BaseException):
    """This rank gave up waiting at the all-reduce for the others (a BaseException: neither
    call() nor the student's `except Exception` should take it for a mistake of theirs)."""


class TensorGroupOfThreads:
    """T threads standing in for the T ranks of a tensor group."""

    def __init__(self, size):
        self.size, self.barrier = size, threading.Barrier(size, timeout=WAIT)
        self.parts, self.calls = [None] * size, [0] * size

    def allreduce_of(self, rank):
        def allreduce(array):
            if not isinstance(array, np.ndarray):
                raise Wrong(f"allreduce takes a NumPy array, got {short(array)}")
            self.calls[rank] += 1
            self.parts[rank] = array.copy()
            try:
                self.barrier.wait()
                total = sum(self.parts)             # the same order on every rank
                self.barrier.wait()
            except threading.BrokenBarrierError:
                raise _Abandoned() from None
            return total
        return allreduce

    def run(self, work):
        """work(rank, allreduce) on every rank at once; the results in rank order."""
        results, problems = [None] * self.size, [None] * self.size

        def one(rank):
            try:
                results[rank] = work(rank, self.allreduce_of(rank))
            except (Wrong, _Abandoned) as problem:
                problems[rank] = problem
                self.barrier.abort()

        threads = [threading.Thread(target=one, args=(r,), daemon=True) for r in range(self.size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wrong = [p for p in problems if isinstance(p, Wrong)]
        if wrong:
            raise wrong[0]
        return results


def call(module, function_name, *args):
    """base.call, with arrays named by their shapes in the feedback (not printed whole)."""
    return base_call(module, function_name, *args, shown=lambda args: ", ".join(
        f"array{a.shape}" if isinstance(a, np.ndarray) else
        "allreduce" if callable(a) else "cache" for a in args))


def _mlp(n, width, size, seed):
    """Weights, their shards for `size` ranks, an input and an output gradient."""
    rng = np.random.default_rng(seed)
    hidden = 4 * width
    W1, b1 = rng.standard_normal((width, hidden)) / width ** 0.5, rng.standard_normal(hidden)
    W2, b2 = rng.standard_normal((hidden, width)) / hidden ** 0.5, rng.standard_normal(width)
    x, dy = rng.standard_normal((n, width)), rng.standard_normal((n, width))
    part = [slice(t * hidden // size, (t + 1) * hidden // size) for t in range(size)]
    shards = [(W1[:, p].copy(), b1[p].copy(), W2[p, :].copy(), b2.copy()) for p in part]
    return (W1, b1, W2, b2), shards, x, dy


def _whole(weights, x, dy):
    """The whole MLP in one piece (mpipipe's GELU): y and dx; and per part nothing else."""
    W1, b1, W2, b2 = weights
    gelu = GELU()
    a, cache = gelu.forward(x @ W1 + b1)
    return a @ W2 + b2, gelu.backward_input(dy @ W2.T, cache) @ W1.T


def _partial(shard, x, dy):
    """One rank's share, never added up: what a missing all-reduce leaves."""
    W1, b1, W2, b2 = shard
    gelu = GELU()
    a, cache = gelu.forward(x @ W1 + b1)
    return a @ W2 + b2, gelu.backward_input(dy @ W2.T, cache) @ W1.T


def _forward(module, shard, x, allreduce):
    W1, b1, W2, b2 = shard
    got = call(module, "mlp_forward", x, W1, b1, W2, b2, allreduce)
    if not (isinstance(got, tuple) and len(got) == 2):
        raise Wrong(f"mlp_forward returned {short(got)}: return (y, cache)")
    y, cache = got
    if not isinstance(y, np.ndarray) or y.shape != x.shape:
        raise Wrong(f"mlp_forward's y is {short(y)}: expected an array of shape {x.shape}, like x")
    return y, cache


def _differs(a, b):
    return not np.allclose(a, b, rtol=1e-9, atol=1e-9)


def _same_calls(group, what):
    counts = group.calls
    if len(set(counts)) > 1:
        told = ", ".join(f"rank {r} {c} time(s)" for r, c in enumerate(counts))
        raise Wrong(f"{what} on {group.size} ranks: {told} called allreduce: every rank of a "
                    f"tensor group must call it equally often, or the others wait forever")
    return counts[0]


def forward_on_one_rank(module):
    for n, width, size in CASES[1]:
        weights, shards, x, dy = _mlp(n, width, size, seed=n * width)
        [(y, _)] = TensorGroupOfThreads(1).run(lambda r, ar: _forward(module, shards[r], x, ar))
        expected, _ = _whole(weights, x, dy)
        if _differs(y, expected):
            raise Wrong(f"mlp_forward on 1 rank (nothing split) differs from GELU(x @ W1 + b1) "
                        f"@ W2 + b2 by {np.abs(y - expected).max():.3g}: get the plain MLP "
                        f"right first")


def forward_sums_once(module):
    for n, width, size in CASES["split"]:
        weights, shards, x, dy = _mlp(n, width, size, seed=n * width + size)
        group = TensorGroupOfThreads(size)
        results = group.run(lambda r, ar: _forward(module, shards[r], x, ar))
        calls = _same_calls(group, "mlp_forward")
        expected, _ = _whole(weights, x, dy)
        where = f"mlp_forward on {size} ranks (D={width})"
        for rank, (y, _) in enumerate(results):
            if not _differs(y, expected):
                continue
            if not _differs(y, expected + (size - 1) * weights[3]):
                raise Wrong(f"{where}: b2 is counted {size} times: every rank adds it before "
                            f"the sum. Add it once, after g's all-reduce")
            if not _differs(y, _partial(shards[rank], x, dy)[0]):
                raise Wrong(f"{where}: rank {rank}'s y is only its own share of the output: "
                            f"gelu(h) @ W2 with its rows of W2 is one term of a sum over the "
                            f"ranks, which g (an all-reduce) must add up")
            raise Wrong(f"{where}: rank {rank}'s y differs from the whole MLP's by "
                        f"{np.abs(y - expected).max():.3g} (allreduce called {calls} time(s))")
        if calls != 1:
            raise Wrong(f"{where} calls allreduce {calls} times: the forward needs one, g")


def _backward(module, shard, x, dy, allreduce, group, rank, forward_calls):
    W1, b1, W2, b2 = shard
    _, cache = _forward(module, shard, x, allreduce)
    forward_calls[rank] = group.calls[rank]
    dx = call(module, "mlp_backward_input", dy, cache, W1, W2, allreduce)
    if not isinstance(dx, np.ndarray) or dx.shape != x.shape:
        raise Wrong(f"mlp_backward_input returned {short(dx)}: expected an array of shape "
                    f"{x.shape}, like x")
    return dx


def _run_backward(module, size, shards, x, dy):
    group, forward_calls = TensorGroupOfThreads(size), [0] * size
    results = group.run(lambda r, ar: _backward(module, shards[r], x, dy, ar, group, r,
                                                forward_calls))
    group.calls = [total - before for total, before in zip(group.calls, forward_calls)]
    return results, _same_calls(group, "mlp_backward_input")


def backward_on_one_rank(module):
    for n, width, size in CASES[1]:
        weights, shards, x, dy = _mlp(n, width, size, seed=n * width)
        [dx], _ = _run_backward(module, 1, shards, x, dy)
        _, expected = _whole(weights, x, dy)
        if _differs(dx, expected):
            raise Wrong(f"mlp_backward_input on 1 rank (nothing split) differs from the MLP's "
                        f"input gradient by {np.abs(dx - expected).max():.3g}: dx = ((dy @ "
                        f"W2.T) * gelu_grad(h)) @ W1.T")


def backward_sums_once(module):
    for n, width, size in CASES["split"]:
        weights, shards, x, dy = _mlp(n, width, size, seed=n * width + size)
        results, calls = _run_backward(module, size, shards, x, dy)
        _, expected = _whole(weights, x, dy)
        where = f"mlp_backward_input on {size} ranks (D={width})"
        for rank, dx in enumerate(results):
            if not _differs(dx, expected):
                continue
            if not _differs(dx, _partial(shards[rank], x, dy)[1]):
                raise Wrong(f"{where}: rank {rank}'s dx is only what reaches x through its own "
                            f"hidden units: f's backward must add up the ranks' input gradients")
            if not _differs(dx, size * expected):
                raise Wrong(f"{where}: dx is {size} times too large: dy is already the same "
                            f"on every rank (g's backward is the identity); only the input "
                            f"gradient needs the sum")
            raise Wrong(f"{where}: rank {rank}'s dx differs from the whole MLP's input gradient "
                        f"by {np.abs(dx - expected).max():.3g} (allreduce called {calls} "
                        f"time(s) in the backward)")
        if calls != 1:
            raise Wrong(f"{where} calls allreduce {calls} times: the backward needs one, f's")
