"""The optimizers against their textbook update rules, written out by hand."""

import math

import numpy as np

from mpipipe.nn.optim import SGD, Adam


def test_sgd_momentum_matches_the_recurrence():
    p = np.array([1.0, -2.0])
    opt = SGD(p, lr=0.1, momentum=0.9)
    grads = [np.array([0.5, 1.0]), np.array([-1.0, 2.0]), np.array([0.25, 0.0])]
    v, expected = np.zeros(2), np.array([1.0, -2.0])
    for g in grads:
        opt.step(g)
        v = 0.9 * v + g
        expected = expected - 0.1 * v
    assert np.allclose(p, expected, rtol=0, atol=1e-15)


def test_plain_sgd():
    p = np.array([3.0])
    SGD(p, lr=0.5, momentum=0).step(np.array([2.0]))
    assert p[0] == 2.0


def test_adam_first_step_moves_each_weight_by_lr():
    """After one step m_hat = g and v_hat = g^2, so the step is lr * g/|g| (up to eps)."""
    p = np.array([1.0, 1.0, 1.0])
    Adam(p, lr=0.01).step(np.array([3.0, -0.2, 1e3]))
    assert np.allclose(p, [0.99, 1.01, 0.99], rtol=0, atol=1e-9)


def test_adam_matches_the_scalar_recurrence():
    p = np.array([0.5])
    opt = Adam(p, lr=0.1, betas=(0.8, 0.9), eps=1e-8)
    x, m, v = 0.5, 0.0, 0.0
    for t in range(1, 6):
        g = 2 * x                      # gradient of x^2
        opt.step(np.array([2 * p[0]]))
        m = 0.8 * m + 0.2 * g
        v = 0.9 * v + 0.1 * g * g
        x -= 0.1 * (m / (1 - 0.8**t)) / (math.sqrt(v / (1 - 0.9**t)) + 1e-8)
    assert abs(p[0] - x) < 1e-15


# Longer than several of the optimizers' cache-sized blocks, and not a multiple of one.
LONG = 3 * (1 << 16) + 12345


def test_sgd_on_a_long_buffer_is_the_whole_array_rule():
    rng = np.random.default_rng(1)
    p = rng.standard_normal(LONG)
    expected, v = p.copy(), np.zeros(LONG)
    opt = SGD(p, lr=0.01, momentum=0.9)
    for _ in range(3):
        g = rng.standard_normal(LONG)
        opt.step(g)
        v = 0.9 * v + g
        expected = expected - 0.01 * v
    assert np.array_equal(p, expected)


def test_adam_on_a_long_buffer_is_the_whole_array_rule():
    rng = np.random.default_rng(2)
    p = rng.standard_normal(LONG).astype(np.float32)
    expected = p.copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    opt = Adam(p, lr=0.001)
    for t in range(1, 4):
        g = rng.standard_normal(LONG).astype(np.float32)
        opt.step(g)
        m = 0.9 * m + (1 - 0.9) * g
        v = 0.999 * v + (1 - 0.999) * g * g
        expected = expected - 0.001 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    assert np.allclose(p, expected, rtol=1e-6, atol=0)
