"""The transformer's layers against finite differences, and a block against a hand-written one."""

import math

import numpy as np
import pytest

from mpipipe.nn.layers import Residual, Sequential, leaf_layers, Linear
from mpipipe.nn.transformer import CausalSelfAttention, Embedding, lm_head, transformer_block

from .test_layers import numerical_grad, rel_err


def check_gradients(layer, x, rng, check_dx=True):
    y, _ = layer.forward(x)
    weights = rng.standard_normal(y.shape)

    def loss():
        return float((layer.forward(x)[0] * weights).sum())

    _, cache = layer.forward(x)
    dx = layer.backward_input(weights, cache)
    if check_dx:
        assert rel_err(dx, numerical_grad(loss, x)) < 1e-6
    for leaf in leaf_layers(layer):
        for g in leaf.grads.values():
            g[...] = 0
    layer.backward_weight(weights, cache)
    for leaf in leaf_layers(layer):
        for name, param in leaf.params.items():
            assert rel_err(leaf.grads[name], numerical_grad(loss, param)) < 1e-6, (leaf, name)


@pytest.mark.parametrize("heads", [1, 2])
def test_attention_gradients(heads):
    rng = np.random.default_rng(1)
    check_gradients(CausalSelfAttention(4, heads, rng), rng.standard_normal((2, 3, 4)), rng)


def test_attention_is_causal():
    rng = np.random.default_rng(2)
    attention = CausalSelfAttention(4, 2, rng)
    x = rng.standard_normal((1, 5, 4))
    later = x.copy()
    later[0, 3:] += 10.0                       # change only tokens 3 and 4
    a, b = attention.forward(x)[0], attention.forward(later)[0]
    assert np.allclose(a[0, :3], b[0, :3]) and not np.allclose(a[0, 3:], b[0, 3:])


def test_embedding_gradients_and_repeated_tokens():
    rng = np.random.default_rng(3)
    embedding = Embedding(5, 3, 4, rng)
    ids = np.array([[1, 1, 4], [0, 1, 2]])     # token 1 three times: its gradient adds up
    y, cache = embedding.forward(ids)
    dy = rng.standard_normal(y.shape)
    embedding.backward_weight(dy, cache)
    expected_tok = np.zeros((5, 3))
    for b in range(2):
        for t in range(3):
            expected_tok[ids[b, t]] += dy[b, t]
    assert np.allclose(embedding.grads["tok"], expected_tok)
    assert np.allclose(embedding.grads["pos"][:3], dy.sum(axis=0))
    assert embedding.backward_input(dy, cache) is None


def test_block_and_head_gradients():
    rng = np.random.default_rng(4)
    check_gradients(transformer_block(4, 2, rng), rng.standard_normal((2, 3, 4)), rng)
    check_gradients(lm_head(4, 6, rng), rng.standard_normal((2, 3, 4)), rng)


def test_block_equals_the_formula_written_out():
    """x1 = x + attn(ln1(x)); y = x1 + W2 gelu(W1 ln2(x1)): computed here without the layers."""
    rng = np.random.default_rng(5)
    block = transformer_block(4, 2, rng)
    x = rng.standard_normal((2, 3, 4))
    attention = block.layers[0].inner.layers[1]
    mlp_in, mlp_out = block.layers[1].inner.layers[1], block.layers[1].inner.layers[3]

    def ln(a):
        return (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + 1e-5)

    def attend(a):
        qkv = a @ attention.qkv.params["W"] + attention.qkv.params["b"]
        out = np.zeros_like(a)
        for h in range(2):
            q, k, v = (qkv[..., i * 4 + 2 * h: i * 4 + 2 * h + 2] for i in range(3))
            s = q @ k.transpose(0, 2, 1) / math.sqrt(2) + np.triu(np.full((3, 3), -np.inf), 1)
            w = np.exp(s - s.max(-1, keepdims=True))
            out[..., 2 * h: 2 * h + 2] = (w / w.sum(-1, keepdims=True)) @ v
        return out @ attention.out.params["W"] + attention.out.params["b"]

    def gelu(a):
        return 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a ** 3)))

    x1 = x + attend(ln(x))
    hidden = gelu(ln(x1) @ mlp_in.params["W"] + mlp_in.params["b"])
    expected = x1 + hidden @ mlp_out.params["W"] + mlp_out.params["b"]
    assert np.allclose(block.forward(x)[0], expected, rtol=1e-12, atol=1e-12)


def test_residual_split_backward_equals_fused():
    rng = np.random.default_rng(6)
    layer = Residual(Sequential([Linear(3, 3, rng)]))
    x, dy = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    _, cache = layer.forward(x)
    fused = layer.backward(dy, cache)
    grad = layer.inner.layers[0].grads["W"].copy()
    layer.inner.layers[0].grads["W"][...] = 0
    _, cache = layer.forward(x)
    split = layer.backward_input(dy, cache)
    layer.backward_weight(dy, cache)
    assert np.allclose(fused, split) and np.allclose(grad, layer.inner.layers[0].grads["W"])


def test_the_gpt_learns_to_add():
    """600 steps on one rank must lower the held-out loss below 1.25 and get over a third
    of the answer digits of sums it never saw right.

    Why these numbers: uniform guessing over the 13 characters costs ln 13 = 2.56
    nats per token; the digits of the two operands are random, so even a perfect
    adder pays about ln 10 for each of them, which puts the floor near 0.75; a
    model that learned the format but not addition pays ln 10 on the answer digits
    too, about 1.6. Below 1.25 it must be adding. Guessing an answer digit is
    right one time in ten.
    """
    from mpi4py import MPI

    from mpipipe.config import TrainConfig
    from mpipipe.train import run_training

    run = run_training(TrainConfig(model="gpt", layers=2, hidden=32, heads=4, global_batch=32,
                                   microbatches=2, steps=600, dtype="float32"), MPI.COMM_SELF)
    assert run.summary.held_out_loss < 1.25, run.summary.held_out_loss
    assert run.summary.held_out_accuracy > 0.35, run.summary.held_out_accuracy
