"""mpipipe's hand-written layers, losses and optimizers against PyTorch's autograd and
torch.optim: an independent implementation of the same formulas (float64).

PyTorch is a benchmark dependency, not a runtime or test one: without it these tests
skip (CI installs it and runs this file in the PyTorch stage).
"""

import numpy as np
import pytest

from mpipipe.nn.layers import GELU, LayerNorm, Linear, Sequential
from mpipipe.nn.losses import MeanSquaredError, SoftmaxCrossEntropy
from mpipipe.nn.optim import SGD, Adam

torch = pytest.importorskip("torch")
F = pytest.importorskip("torch.nn.functional")

LONG = 3 * (1 << 16) + 777      # spans several of the optimizers' blocks


def close(ours, theirs, rtol=1e-10):
    theirs = theirs.detach().numpy()
    assert ours.shape == theirs.shape
    assert np.allclose(ours, theirs, rtol=rtol, atol=1e-12), np.abs(ours - theirs).max()


def test_a_block_and_both_losses_match_autograd():
    """Linear -> GELU(tanh) -> LayerNorm -> Linear, then MSE and cross-entropy: the
    output, the input gradient and every parameter gradient, split and fused."""
    rng = np.random.default_rng(3)
    block = Sequential([Linear(7, 9, rng), GELU(), LayerNorm(9), Linear(9, 5, rng)])
    first, norm, last = block.layers[0], block.layers[2], block.layers[3]
    norm.params["gamma"][...] = rng.uniform(0.5, 1.5, 9)
    norm.params["beta"][...] = rng.standard_normal(9)
    x = rng.standard_normal((6, 7))
    target, labels = rng.standard_normal((6, 5)), rng.integers(0, 5, 6)

    t = {name: torch.tensor(value, requires_grad=True) for name, value in
         [("x", x), ("W1", first.params["W"]), ("b1", first.params["b"]),
          ("gamma", norm.params["gamma"]), ("beta", norm.params["beta"]),
          ("W2", last.params["W"]), ("b2", last.params["b"])]}
    h = F.gelu(t["x"] @ t["W1"] + t["b1"], approximate="tanh")
    h = F.layer_norm(h, (9,), t["gamma"], t["beta"], eps=1e-5)
    y = h @ t["W2"] + t["b2"]

    for loss_fn, theirs_fn in [
            (MeanSquaredError(), lambda y: F.mse_loss(y, torch.tensor(target))),
            (SoftmaxCrossEntropy(), lambda y: F.cross_entropy(y, torch.tensor(labels)))]:
        for fused in (True, False):
            for layer in (first, norm, last):
                for g in layer.grads.values():
                    g[...] = 0
            out, cache = block.forward(x)
            close(out, y)
            loss, dy = loss_fn(out, target if isinstance(loss_fn, MeanSquaredError) else labels,
                               len(x))
            theirs = theirs_fn(y)
            close(np.asarray(loss), theirs)
            grads = torch.autograd.grad(theirs, list(t.values()), retain_graph=True)
            if fused:
                dx = block.backward(dy, cache)
            else:
                dx = block.backward_input(dy, cache)
                block.backward_weight(dy, cache)
            ours = [dx, first.grads["W"], first.grads["b"], norm.grads["gamma"],
                    norm.grads["beta"], last.grads["W"], last.grads["b"]]
            for mine, reference in zip(ours, grads):
                close(mine, reference)


def same_steps(make_ours, make_theirs, seed, rtol):
    """Four steps of our optimizer and of torch.optim's on one long buffer, the same
    gradients for both; the parameters must agree."""
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(LONG)
    reference = torch.nn.Parameter(torch.tensor(p))
    ours, theirs = make_ours(p), make_theirs([reference])
    for _ in range(4):
        g = rng.standard_normal(LONG)
        ours.step(g)
        reference.grad = torch.tensor(g)
        theirs.step()
    close(p, reference, rtol=rtol)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_is_torch_optim_sgd(momentum):
    same_steps(lambda p: SGD(p, lr=0.05, momentum=momentum),
               lambda params: torch.optim.SGD(params, lr=0.05, momentum=momentum), 4, 1e-12)


def test_adam_is_torch_optim_adam():
    same_steps(lambda p: Adam(p, lr=0.01),
               lambda params: torch.optim.Adam(params, lr=0.01, betas=(0.9, 0.999), eps=1e-8),
               5, 1e-9)
