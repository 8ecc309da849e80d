"""Tensor parallelism (Megatron-LM's): every layer's matrices split over T ranks.

A pipeline cuts the model between layers; tensor parallelism cuts inside them.
The T ranks of a tensor group each hold 1/T of every big matrix of a
transformer block and compute their share of every layer, talking twice per
block forward and twice backward. Everything rests on two conjugate
operations, f and g, each the other's mirror image:

    f  forward: identity         backward: Allreduce(dx)   (before a column-parallel layer)
    g  forward: Allreduce(y)     backward: identity        (after a row-parallel layer)

    column-parallel linear   y_t = f(x) @ W[:, part t] + b[part t]    q/k/v, the MLP's first
    row-parallel linear      y   = g(x_t @ W[part t, :]) + b          attention's output, the MLP's second

Why they fit together: a column-parallel layer gives rank t the columns of its
share (for q/k/v: whole heads; for the MLP: a slice of the 4D hidden units, on
which GELU acts element by element), so what follows runs on the slice with no
talk at all, until a row-parallel layer multiplies that slice by the matching
rows of the next matrix. Each rank then holds a partial sum of the output: g
adds the partials up. Backward, the mirror: the row-parallel layer's output
gradient is the same on every rank (g's backward is the identity), and the
column-parallel layer's input gradient is again a partial sum, one per share
of the columns: f adds those up. A row-parallel bias is added once, after g
(added before it, it would be counted T times). LayerNorm, the residual
additions, the embedding and the head are replicated: every rank computes
them on the same whole activations.

Zero-bubble schedules still work: f's Allreduce is part of the input gradient
(B), which the previous stage waits for anyway; the weight gradient (W) of a
shard needs only the shard's own input and output gradient, so W stays local
and can be deferred as before.

Weights are cut from the one-process model's (`shard_block` takes the block
model.build_block seeds), so tensor-parallel training equals one process to
round-off; `join_flat` puts the shards back together (for --check, the
held-out score, checkpoints).
"""

import time
from dataclasses import dataclass

import numpy as np

from .layers import Linear, Residual, Sequential, leaf_layers
from .transformer import CausalSelfAttention


# -- the conjugate pair, written out -------------------------------------------------------

def f_forward(x, group):
    """f, forward: every rank already holds the whole input; nothing to do."""
    return x


def f_backward(dx_partial, group):
    """f, backward: each rank's input gradient covers only its share of the columns;
    the input's gradient is their sum."""
    return group.allreduce(dx_partial)


def g_forward(y_partial, group):
    """g, forward: each rank multiplied only its rows; the output is the sum."""
    return group.allreduce(y_partial)


def g_backward(dy, group):
    """g, backward: the output gradient is the same on every rank; nothing to do."""
    return dy


# -- the tensor group ----------------------------------------------------------------------

class TensorGroup:
    """The T ranks holding the shards of one stage, and the Allreduce they share.

    Counts its all-reduces (calls, bytes, seconds inside them) so that a run
    can report them beside the pipeline's messages. Host arrays go through a
    non-blocking Iallreduce waited for by the rank's Waiter (which does not
    spin); device arrays through p2p.allreduce_sum's blocking Allreduce, the
    collective CUDA-aware libraries support on device memory. `comm` None: a
    group that only knows its shape (for cutting and joining weights).
    """

    def __init__(self, size, rank, comm=None, waiter=None, staging=None):
        self.size, self.rank, self.comm = size, rank, comm
        self.waiter, self.staging = waiter, staging
        self.calls, self.bytes, self.seconds = 0, 0, 0.0

    @classmethod
    def of(cls, comm, waiter, staging=None):
        return cls(comm.Get_size(), comm.Get_rank(), comm, waiter, staging)

    def allreduce(self, array):
        """The sum of `array` over the group, in place (it must be contiguous)."""
        if self.size == 1:
            return array
        if self.comm is None:
            raise RuntimeError("this tensor group only plans: it has no communicator")
        from mpipipe.comm.p2p import allreduce_sum

        start = time.perf_counter()
        allreduce_sum(self.comm, array, self.waiter, self.staging,
                      "the tensor-parallel all-reduce")
        self.seconds += time.perf_counter() - start
        self.calls += 1
        self.bytes += array.nbytes
        return array

    def totals(self):
        return self.calls, self.bytes, self.seconds


# -- how a parameter is cut ----------------------------------------------------------------

@dataclass(frozen=True)
class Split:
    """A parameter cut along `axis` among T ranks. With `groups` > 1 the axis holds
    that many parts side by side (q | k | v), and each part is cut: rank t gets
    slice t of every part."""

    axis: int
    groups: int = 1

    def shard(self, full, size, rank):
        parts = np.split(full, self.groups, axis=self.axis)
        return np.concatenate([np.split(part, size, axis=self.axis)[rank] for part in parts],
                              axis=self.axis)

    def join(self, shards):
        pieces = [np.split(shard, self.groups, axis=self.axis) for shard in shards]
        return np.concatenate([np.concatenate([p[g] for p in pieces], axis=self.axis)
                               for g in range(self.groups)], axis=self.axis)


# -- the layers ----------------------------------------------------------------------------

class ColumnParallelLinear(Linear):
    """y_t = f(x) @ W[:, part t] + b[part t]: this rank's share of the output columns."""

    def __init__(self, full, group, groups=1):
        self.n_in, self.n_out, self.group = full.n_in, full.n_out // group.size, group
        self.splits = {"W": Split(1, groups), "b": Split(0, groups)}
        self.params = {name: self.splits[name].shard(value, group.size, group.rank)
                       for name, value in full.params.items()}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def forward(self, x):
        x = f_forward(x, self.group)
        return x @ self.params["W"] + self.params["b"], x

    def backward_input(self, dy, cache, need_dx=True):
        if not need_dx:
            return None
        return f_backward(dy @ self.params["W"].T, self.group)

    def __repr__(self):
        return f"ColumnParallelLinear({self.n_in}, {self.n_out} of {self.n_out * self.group.size})"


class RowParallelLinear(Linear):
    """y = g(x_t @ W[part t, :]) + b: rows matching the previous layer's columns; the
    bias (whole on every rank) is added once, after the sum."""

    def __init__(self, full, group):
        self.n_in, self.n_out, self.group = full.n_in // group.size, full.n_out, group
        self.splits = {"W": Split(0)}       # b is replicated
        self.params = {"W": self.splits["W"].shard(full.params["W"], group.size, group.rank),
                       "b": full.params["b"].copy()}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def forward(self, x):
        return g_forward(x @ self.params["W"], self.group) + self.params["b"], x

    def backward_input(self, dy, cache, need_dx=True):
        return g_backward(dy, self.group) @ self.params["W"].T if need_dx else None

    # backward_weight is Linear's: dW = x_t^T dy (this rank's rows), db = sum of dy

    def __repr__(self):
        return f"RowParallelLinear({self.n_in} of {self.n_in * self.group.size}, {self.n_out})"


class TensorParallelAttention(CausalSelfAttention):
    """Attention with this rank's heads: q, k, v column-parallel (whole heads, so the
    softmax needs nothing from the other ranks), the output projection row-parallel.
    The forward and backward are CausalSelfAttention's, on H/T heads."""

    def __init__(self, full, group):
        if full.heads % group.size:
            raise ValueError(f"{full.heads} heads do not split among {group.size} tensor ranks")
        self.params, self.grads = {}, {}
        self.dim, self.heads = full.dim, full.heads // group.size
        self.qkv = ColumnParallelLinear(full.qkv, group, groups=3)
        self.out = RowParallelLinear(full.out, group)

    def __repr__(self):
        return f"TensorParallelAttention({self.dim}, heads={self.heads} of this rank)"


def shard_block(block, group):
    """Rank `group.rank`'s share of a transformer block (transformer.transformer_block):
    the same structure, its big matrices cut. Other blocks (the embedding, the head)
    stay whole: replicated."""
    if group.size == 1 or not is_transformer_block(block):
        return block
    attention, mlp = block.layers
    norm1, full_attention = attention.inner.layers
    norm2, up, activation, down = mlp.inner.layers
    return Sequential([
        Residual(Sequential([norm1, TensorParallelAttention(full_attention, group)])),
        Residual(Sequential([norm2, ColumnParallelLinear(up, group), activation,
                             RowParallelLinear(down, group)]))])


def is_transformer_block(block):
    return (isinstance(block, Sequential) and len(block.layers) == 2
            and all(isinstance(part, Residual) for part in block.layers))


def allreduces_per_block(recompute=False):
    """Tensor all-reduces one micro-batch costs a transformer block: g of attention and
    of the MLP forward, f of each backward; a recomputed forward pays its two again."""
    return 4 + (2 if recompute else 0)


# -- cutting and joining flat parameter vectors ------------------------------------------

def _slots(block):
    """(split or None, size, shape) of every parameter, in flat-buffer order."""
    return [(getattr(leaf, "splits", {}).get(name), value.size, value.shape)
            for leaf in leaf_layers(block) for name, value in leaf.params.items()]


def join_flat(full_block, shard_blocks, shard_flats):
    """The whole block's flat vector from its T shards' flat vectors (shard_blocks: the
    shards' structures, e.g. shard_block(full_block, TensorGroup(T, t)))."""
    pieces, offsets = [], [0] * len(shard_flats)
    columns = [_slots(shard) for shard in shard_blocks]
    for i, _ in enumerate(_slots(full_block)):
        arrays = []
        for t, flat in enumerate(shard_flats):
            split, size, shape = columns[t][i]
            arrays.append(np.asarray(flat[offsets[t]:offsets[t] + size]).reshape(shape))
            offsets[t] += size
        split = columns[0][i][0]
        pieces.append((split.join(arrays) if split else arrays[0]).ravel())
    return np.concatenate(pieces) if pieces else np.zeros(0)


def shard_flat(full_block, shard, full_flat, size, rank):
    """Rank `rank`'s flat vector of `shard` from the whole block's flat vector."""
    pieces, offset = [], 0
    for (_, full_size, full_shape), (split, _, _) in zip(_slots(full_block), _slots(shard)):
        whole = np.asarray(full_flat[offset:offset + full_size]).reshape(full_shape)
        offset += full_size
        pieces.append((split.shard(whole, size, rank) if split else whole).ravel())
    return np.concatenate(pieces) if pieces else np.zeros(0)
