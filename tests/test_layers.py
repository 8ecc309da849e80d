"""Every hand-written backward against central finite differences (float64)."""

import numpy as np
import pytest

from mpipipe.nn.layers import GELU, LayerNorm, Linear, ReLU, Sequential, cache_nbytes
from mpipipe.nn.losses import MeanSquaredError, SoftmaxCrossEntropy

EPS = 1e-6


def numerical_grad(f, x):
    """Central differences of the scalar function f at x (x is perturbed in place)."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + EPS
        up = f()
        x[i] = old - EPS
        down = f()
        x[i] = old
        grad[i] = (up - down) / (2 * EPS)
    return grad


def rel_err(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)


def make_layers(rng):
    return {
        "linear": Linear(5, 4, rng),
        "relu": ReLU(),
        "gelu": GELU(),
        "layernorm": LayerNorm(5),
        "block": Sequential([Linear(5, 6, rng), GELU(), LayerNorm(6), Linear(6, 4, rng)]),
    }


@pytest.mark.parametrize("name", ["linear", "relu", "gelu", "layernorm", "block"])
def test_backward_matches_finite_differences(name):
    rng = np.random.default_rng(1)
    layer = make_layers(rng)[name]
    if isinstance(layer, LayerNorm):   # make gamma/beta non-trivial
        layer.params["gamma"][:] = rng.standard_normal(5)
        layer.params["beta"][:] = rng.standard_normal(5)
    x = rng.standard_normal((3, 5)) + (0.3 if name == "relu" else 0.0)
    y, _ = layer.forward(x)
    weights = rng.standard_normal(y.shape)   # loss = sum(weights * y): dL/dy = weights

    def loss():
        return float((layer.forward(x)[0] * weights).sum())

    _, cache = layer.forward(x)
    dx = layer.backward_input(weights, cache)
    assert rel_err(dx, numerical_grad(loss, x)) < 1e-6
    for p in _leaf_params(layer):
        p["grad"][...] = 0
    layer.backward_weight(weights, cache)
    for p in _leaf_params(layer):
        assert rel_err(p["grad"], numerical_grad(loss, p["param"])) < 1e-6, p["name"]


def _leaf_params(layer):
    layers = layer.layers if isinstance(layer, Sequential) else [layer]
    return [{"name": f"{type(l).__name__}.{k}", "param": l.params[k], "grad": l.grads[k]}
            for l in layers for k in l.params]


def test_fused_backward_equals_split_backward():
    rng = np.random.default_rng(2)
    block = Sequential([Linear(5, 6, rng), GELU(), LayerNorm(6), Linear(6, 3, rng), ReLU()])
    x, dy = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    _, cache = block.forward(x)
    dx_fused = block.backward(dy, cache)
    fused = [g.copy() for l in block.layers for g in l.grads.values()]
    for l in block.layers:
        for g in l.grads.values():
            g[...] = 0
    _, cache = block.forward(x)
    dx_split = block.backward_input(dy, cache)
    block.backward_weight(dy, cache)
    split = [g for l in block.layers for g in l.grads.values()]
    assert np.allclose(dx_fused, dx_split, rtol=1e-14, atol=0)
    for a, b in zip(fused, split):
        assert np.allclose(a, b, rtol=1e-14, atol=0)


def test_backward_weight_before_backward_input_is_refused():
    rng = np.random.default_rng(3)
    block = Sequential([Linear(2, 2, rng)])
    _, cache = block.forward(rng.standard_normal((1, 2)))
    with pytest.raises(RuntimeError, match="before backward_input"):
        block.backward_weight(np.ones((1, 2)), cache)


def test_need_dx_false_skips_the_input_gradient_but_not_the_weights():
    rng = np.random.default_rng(4)
    block = Sequential([Linear(3, 2, rng)])
    _, cache = block.forward(rng.standard_normal((2, 3)))
    assert block.backward(np.ones((2, 2)), cache, need_dx=False) is None
    assert np.abs(block.layers[0].grads["W"]).sum() > 0


@pytest.mark.parametrize("loss_cls", [SoftmaxCrossEntropy, MeanSquaredError])
def test_loss_gradient_matches_finite_differences(loss_cls):
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((6, 4))
    target = rng.integers(0, 4, 6) if loss_cls is SoftmaxCrossEntropy else rng.standard_normal((6, 4))
    loss_fn = loss_cls()
    _, grad = loss_fn(logits, target, denominator=10)
    assert rel_err(grad, numerical_grad(lambda: float(loss_fn(logits, target, 10)[0]), logits)) < 1e-6


def test_losses_against_textbook_values():
    logits = np.array([[0.0, 0.0], [np.log(3.0), 0.0]])
    labels = np.array([0, 1])
    # -log(1/2) and -log(1/4), averaged over 2 samples
    loss, _ = SoftmaxCrossEntropy()(logits, labels, denominator=2)
    assert abs(loss - (np.log(2) + np.log(4)) / 2) < 1e-15
    loss, _ = MeanSquaredError()(np.array([[1.0, 3.0]]), np.array([[0.0, 0.0]]), denominator=1)
    assert abs(loss - 5.0) < 1e-15


def test_micro_batch_losses_add_up_to_the_global_mean():
    rng = np.random.default_rng(6)
    logits, labels = rng.standard_normal((8, 3)), rng.integers(0, 3, 8)
    whole, _ = SoftmaxCrossEntropy()(logits, labels, denominator=8)
    parts = sum(SoftmaxCrossEntropy()(logits[i:i + 2], labels[i:i + 2], denominator=8)[0]
                for i in range(0, 8, 2))
    assert abs(whole - parts) < 1e-14


def test_gelu_is_the_tanh_formula():
    x = np.linspace(-3, 3, 13)
    expected = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    assert np.allclose(GELU().forward(x)[0], expected, rtol=1e-15)


def test_cache_nbytes_counts_shared_arrays_once():
    a = np.zeros(10)
    assert cache_nbytes({"x": a, "y": [a, (a,)]}) == a.nbytes
    assert cache_nbytes([a, np.zeros(5)]) == a.nbytes + 40
