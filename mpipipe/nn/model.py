"""A model is an ordered list of blocks; a stage is a contiguous run of them.

`ModelSpec` is the small, schedule-independent description a run (and later a
checkpoint) is built from. Block i always gets its weights from the random
stream (seed, i), so any partition into stages starts from the same weights as
the single-process model: that is what makes the pipeline comparable with it.
"""

from dataclasses import asdict, dataclass

import numpy as np

from .layers import GELU, LayerNorm, Linear, ReLU, Sequential, leaf_layers
from .tensor_parallel import TensorGroup, join_flat, shard_block, shard_flat
from .transformer import Embedding, lm_head, transformer_block

ACTIVATIONS = {"gelu": GELU, "relu": ReLU}


@dataclass(frozen=True)
class ModelSpec:
    """Either an MLP (kind "mlp"): `layers` blocks of Linear + activation (+ LayerNorm),
    the last one plain Linear; or a GPT (kind "gpt"): an embedding block, `layers`
    transformer blocks of width `hidden` with `heads` heads, and a head block
    (input_dim = output_dim = the vocabulary size, `seq_len` tokens per sample)."""

    input_dim: int
    output_dim: int
    hidden: int = 64
    layers: int = 8
    activation: str = "gelu"
    layernorm: bool = False
    last_activation: bool = False
    seed: int = 0
    dtype: str = "float64"
    kind: str = "mlp"
    heads: int = 4
    seq_len: int = 1

    def to_dict(self):
        return asdict(self)

    @property
    def num_blocks(self):
        """The units a partition cuts between: layers, plus embedding and head for a GPT."""
        return self.layers + 2 if self.kind == "gpt" else self.layers

    def boundary_shape(self, block):
        """Per-sample shape of the activation entering `block` (num_blocks: the output)."""
        if self.kind == "gpt":
            if block == 0:
                return (self.seq_len,)
            return (self.seq_len, self.output_dim if block == self.num_blocks else self.hidden)
        if block == 0:
            return (self.input_dim,)
        return (self.output_dim if block == self.num_blocks else self.hidden,)


def build_block(spec, index, tensor=None):
    """Block `index` of the model described by `spec`, with its own seeded weights; with
    a tensor group (tensor_parallel.TensorGroup) of T > 1 ranks, this rank's shard of it,
    cut from those same weights."""
    rng = np.random.default_rng([spec.seed, index])
    if spec.kind == "gpt":
        block = _gpt_block(spec, index, rng)
        return block if tensor is None else shard_block(block, tensor)
    n_in = spec.input_dim if index == 0 else spec.hidden
    last = index == spec.layers - 1
    n_out = spec.output_dim if last else spec.hidden
    layers = [Linear(n_in, n_out, rng, dtype=np.dtype(spec.dtype))]
    if not last or spec.last_activation:
        layers.append(ACTIVATIONS[spec.activation]())
        if spec.layernorm:
            layers.append(LayerNorm(n_out, dtype=np.dtype(spec.dtype)))
    return Sequential(layers)


def _gpt_block(spec, index, rng):
    dtype = np.dtype(spec.dtype)
    if index == 0:
        return Sequential([Embedding(spec.input_dim, spec.hidden, spec.seq_len, rng, dtype=dtype)])
    if index == spec.num_blocks - 1:
        return lm_head(spec.hidden, spec.output_dim, rng, dtype=dtype)
    return transformer_block(spec.hidden, spec.heads, rng, dtype=dtype)


def block_param_counts(spec):
    """Number of parameters in each block (for an MLP without building any weights)."""
    if spec.kind == "gpt":
        return [sum(p.size for leaf in leaf_layers(build_block(spec, i))
                    for p in leaf.params.values()) for i in range(spec.num_blocks)]
    counts = []
    for i in range(spec.layers):
        n_in = spec.input_dim if i == 0 else spec.hidden
        n_out = spec.output_dim if i == spec.layers - 1 else spec.hidden
        extra = 2 * n_out if spec.layernorm and (i < spec.layers - 1 or spec.last_activation) else 0
        counts.append(n_in * n_out + n_out + extra)
    return counts


def shard_param_count(spec, index, size=1, rank=0):
    """Parameters of tensor shard `rank` of `size` of block `index` (the whole block at
    size 1): what a checkpoint's stage file must hold for it."""
    block = build_block(spec, index, None if size == 1 else TensorGroup(size, rank))
    return sum(p.size for leaf in leaf_layers(block) for p in leaf.params.values())


class Stage(Sequential):
    """The blocks of one pipeline stage, with all parameters in one flat buffer.

    Each layer's parameter and gradient arrays become views into `flat_params`
    and `flat_grads`, so the data-parallel all-reduce is one call on
    `flat_grads` and the optimizer updates `flat_params` in one go.
    """

    def __init__(self, blocks, xp=np):
        super().__init__(blocks)
        leaves = list(leaf_layers(self))
        dtype = next((p.dtype for layer in leaves for p in layer.params.values()), np.float64)
        size = sum(p.size for layer in leaves for p in layer.params.values())
        self.flat_params = xp.zeros(size, dtype=dtype)
        self.flat_grads = xp.zeros(size, dtype=dtype)
        offset = 0
        for layer in leaves:
            for name, value in layer.params.items():
                view = slice(offset, offset + value.size)
                self.flat_params[view] = xp.asarray(value.ravel())
                layer.params[name] = self.flat_params[view].reshape(value.shape)
                layer.grads[name] = self.flat_grads[view].reshape(value.shape)
                offset += value.size

    def zero_grads(self):
        self.flat_grads[...] = 0

    def block_slices(self):
        """Where each block's parameters sit in the flat buffers (checkpoints store blocks,
        so a checkpoint can be loaded into any other partition)."""
        slices, offset = [], 0
        for block in self.layers:
            size = sum(p.size for leaf in leaf_layers(block) for p in leaf.params.values())
            slices.append(slice(offset, offset + size))
            offset += size
        return slices


def build_stage(spec, block_indices, xp=np, tensor=None):
    """The stage holding blocks `block_indices` (a range) of the model (this rank's
    shard of them, with a tensor group)."""
    return Stage([build_block(spec, i, tensor) for i in block_indices], xp=xp)


def join_block_shards(spec, index, shard_flats):
    """Block `index`'s whole flat parameters from its tensor shards' (in tensor-rank order)."""
    size = len(shard_flats)
    if size == 1:
        return np.asarray(shard_flats[0])
    return join_flat(build_block(spec, index),
                     [build_block(spec, index, TensorGroup(size, t)) for t in range(size)],
                     shard_flats)


def cut_block(spec, index, full_flat, size, rank):
    """Tensor rank `rank` of `size`: its share of block `index`'s whole flat parameters."""
    if size == 1:
        return np.asarray(full_flat)
    return shard_flat(build_block(spec, index), build_block(spec, index, TensorGroup(size, rank)),
                      full_flat, size, rank)


def join_stage_shards(spec, block_indices, shard_flats):
    """A stage's whole flat parameters from its T shards' flat vectors (block by block)."""
    shard_stages = [build_stage(spec, block_indices, tensor=TensorGroup(len(shard_flats), t))
                    for t in range(len(shard_flats))]
    pieces = []
    for b, index in enumerate(block_indices):
        pieces.append(join_block_shards(spec, index, [np.asarray(flat)[stage.block_slices()[b]]
                                                      for stage, flat in zip(shard_stages,
                                                                             shard_flats)]))
    return np.concatenate(pieces) if pieces else np.zeros(0)
