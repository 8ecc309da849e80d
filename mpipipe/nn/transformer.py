"""The layers of a small decoder-only transformer (GPT), with hand-written gradients.

    Embedding                token + position embeddings: ids (B, T) -> (B, T, D)
    CausalSelfAttention      multi-head attention where token t sees tokens <= t
    transformer_block(D, H)  x + attn(ln(x)), then x + mlp(ln(x))   (pre-norm, as GPT-2)
    lm_head(D, V)            ln(x) @ W: logits over the vocabulary

Arrays are (batch, time, features). As everywhere in mpipipe, each layer has
forward / backward_input / backward_weight, so a transformer runs under every
schedule, zero-bubble ones included. Attention's input gradient needs the
gradients of q, k and v; they are kept in the cache so that backward_weight
can turn them into weight gradients later without recomputing them.
"""

import math

import numpy as np

from mpipipe.comm.backend import array_module, scatter_add
from .layers import GELU, LayerNorm, Layer, Linear, Residual, Sequential


class Embedding(Layer):
    """ids -> tok[ids] + pos[:T]. Its input is integers, so it has no input gradient."""

    def __init__(self, vocab, dim, max_len, rng, dtype=np.float64):
        super().__init__()
        self.vocab, self.dim, self.max_len = vocab, dim, max_len
        self.params = {"tok": (rng.standard_normal((vocab, dim)) * 0.1).astype(dtype),
                       "pos": (rng.standard_normal((max_len, dim)) * 0.1).astype(dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def forward(self, ids):
        T = ids.shape[1]
        return self.params["tok"][ids] + self.params["pos"][:T], ids

    def backward_input(self, dy, cache, need_dx=True):
        return None

    def backward_weight(self, dy, cache):
        ids = cache
        scatter_add(self.grads["tok"], ids.reshape(-1), dy.reshape(-1, self.dim))
        self.grads["pos"][: ids.shape[1]] += dy.sum(axis=0)

    def __repr__(self):
        return f"Embedding({self.vocab}, {self.dim})"


class CausalSelfAttention(Layer):
    """softmax(q k^T / sqrt(d) + causal mask) v, over H heads, then an output projection."""

    def __init__(self, dim, heads, rng, dtype=np.float64):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} does not split into {heads} heads")
        self.dim, self.heads = dim, heads
        self.qkv = Linear(dim, 3 * dim, rng, dtype=dtype, gain=1.0)
        self.out = Linear(dim, dim, rng, dtype=dtype, gain=1.0)

    def children(self):
        return [self.qkv, self.out]

    def _split(self, a):          # (B, T, D) -> (B, H, T, D/H)
        B, T, _ = a.shape
        return a.reshape(B, T, self.heads, -1).transpose(0, 2, 1, 3)

    def _merge(self, a):          # (B, H, T, D/H) -> (B, T, D)
        B, H, T, d = a.shape
        return a.transpose(0, 2, 1, 3).reshape(B, T, H * d)

    def forward(self, x):
        xp = array_module(x)
        T = x.shape[1]
        qkv, qkv_cache = self.qkv.forward(x)
        q, k, v = (self._split(part) for part in xp.split(qkv, 3, axis=-1))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])
        scores = scores + xp.triu(xp.full((T, T), -xp.inf, dtype=x.dtype), k=1)
        scores = scores - scores.max(axis=-1, keepdims=True)
        p = xp.exp(scores)
        p /= p.sum(axis=-1, keepdims=True)
        merged = self._merge(p @ v)
        y, out_cache = self.out.forward(merged)
        return y, {"q": q, "k": k, "v": v, "p": p, "qkv": qkv_cache, "out": out_cache,
                   "dqkv": None}

    def backward_input(self, dy, cache, need_dx=True):
        xp = array_module(dy)
        q, k, v, p = cache["q"], cache["k"], cache["v"], cache["p"]
        do = self._split(self.out.backward_input(dy, cache["out"]))
        dp = do @ v.transpose(0, 1, 3, 2)
        dv = p.transpose(0, 1, 3, 2) @ do
        ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True)) / math.sqrt(q.shape[-1])
        dq, dk = ds @ k, ds.transpose(0, 1, 3, 2) @ q
        cache["dqkv"] = xp.concatenate([self._merge(dq), self._merge(dk), self._merge(dv)], axis=-1)
        return self.qkv.backward_input(cache["dqkv"], cache["qkv"], need_dx)

    def backward_weight(self, dy, cache):
        if cache["dqkv"] is None:
            raise RuntimeError("backward_weight before backward_input")
        self.out.backward_weight(dy, cache["out"])
        self.qkv.backward_weight(cache["dqkv"], cache["qkv"])

    def backward(self, dy, cache, need_dx=True):
        dx = self.backward_input(dy, cache, need_dx)   # W needs dq, dk, dv: input side first
        self.backward_weight(dy, cache)
        return dx

    def __repr__(self):
        return f"CausalSelfAttention({self.dim}, heads={self.heads})"


def transformer_block(dim, heads, rng, dtype=np.float64):
    """Pre-norm block: x + attention(ln(x)), then x + mlp(ln(x)) with a 4x wide GELU MLP."""
    attention = Residual(Sequential([LayerNorm(dim, dtype=dtype),
                                     CausalSelfAttention(dim, heads, rng, dtype=dtype)]))
    mlp = Residual(Sequential([LayerNorm(dim, dtype=dtype), Linear(dim, 4 * dim, rng, dtype=dtype),
                               GELU(), Linear(4 * dim, dim, rng, dtype=dtype, gain=1.0)]))
    return Sequential([attention, mlp])


def lm_head(dim, vocab, rng, dtype=np.float64):
    """The last LayerNorm and the (untied) projection onto the vocabulary."""
    return Sequential([LayerNorm(dim, dtype=dtype), Linear(dim, vocab, rng, dtype=dtype, gain=1.0)])
