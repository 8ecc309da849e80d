"""Layers with hand-written gradients, split the way zero-bubble schedules need.

Every layer has three passes:

    forward(x)                 -> (y, cache)   cache holds what the backward needs
    backward_input(dy, cache)  -> dx           the gradient that travels to the previous stage
                                               (need_dx=False: not wanted, may return None)
    backward_weight(dy, cache)                 adds dL/dparams into self.grads

`backward(dy, cache)` does both at once (what GPipe and 1F1B use). Keeping the
input gradient (on the critical path between stages) apart from the weight
gradient (needed only by the optimizer) is what lets a schedule defer the
weight gradient into time that would otherwise be a bubble.

Parameters and gradients are held in dicts of arrays. `model.Stage` later
replaces them with views into one flat buffer per stage, so one Allreduce and
one optimizer update cover the whole stage.
"""

import math

import numpy as np

from mpipipe.comm.backend import array_module


class Layer:
    """A layer without parameters: subclasses override what they need."""

    def __init__(self):
        self.params = {}
        self.grads = {}

    def forward(self, x):
        raise NotImplementedError

    def backward_input(self, dy, cache, need_dx=True):
        raise NotImplementedError

    def backward_weight(self, dy, cache):
        """Layers without parameters have no weight gradient."""

    def backward(self, dy, cache, need_dx=True):
        """Fused backward: weight gradient, then input gradient (unless not needed)."""
        self.backward_weight(dy, cache)
        return self.backward_input(dy, cache, need_dx)

    def children(self):
        """Layers inside this one (composites override it)."""
        return []

    def __repr__(self):
        return type(self).__name__ + "()"


class Linear(Layer):
    """y = x @ W + b, with W of shape (n_in, n_out); x may have leading axes (batch, time)."""

    def __init__(self, n_in, n_out, rng, dtype=np.float64, gain=math.sqrt(2.0)):
        super().__init__()
        self.n_in, self.n_out = n_in, n_out
        std = gain / math.sqrt(n_in)
        self.params = {
            "W": (rng.standard_normal((n_in, n_out)) * std).astype(dtype),
            "b": np.zeros(n_out, dtype=dtype),
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def forward(self, x):
        return x @ self.params["W"] + self.params["b"], x

    def backward_input(self, dy, cache, need_dx=True):
        return dy @ self.params["W"].T if need_dx else None

    def backward_weight(self, dy, cache):
        x = cache.reshape(-1, self.n_in)
        dy = dy.reshape(-1, self.n_out)
        self.grads["W"] += x.T @ dy
        self.grads["b"] += dy.sum(axis=0)

    def __repr__(self):
        return f"Linear({self.n_in}, {self.n_out})"


class ReLU(Layer):
    def forward(self, x):
        mask = x > 0
        return x * mask, mask

    def backward_input(self, dy, cache, need_dx=True):
        return dy * cache


class GELU(Layer):
    """GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""

    C = math.sqrt(2.0 / math.pi)
    K = 0.044715

    def forward(self, x):
        xp = array_module(x)
        t = xp.tanh(self.C * (x + self.K * (x * x * x)))   # x**3 is ~100x slower in float32
        return 0.5 * x * (1.0 + t), (x, t)

    def backward_input(self, dy, cache, need_dx=True):
        x, t = cache
        dt = self.C * (1.0 + 3.0 * self.K * (x * x))
        return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dt)


class LayerNorm(Layer):
    """Normalise the last axis to zero mean, unit variance, then scale and shift."""

    def __init__(self, n, dtype=np.float64, eps=1e-5):
        super().__init__()
        self.n, self.eps = n, eps
        self.params = {"gamma": np.ones(n, dtype=dtype), "beta": np.zeros(n, dtype=dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def forward(self, x):
        xp = array_module(x)
        mu = x.mean(axis=-1, keepdims=True)
        inv_std = 1.0 / xp.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + self.eps)
        xhat = (x - mu) * inv_std
        return xhat * self.params["gamma"] + self.params["beta"], (xhat, inv_std)

    def backward_input(self, dy, cache, need_dx=True):
        xhat, inv_std = cache
        g = dy * self.params["gamma"]
        return inv_std * (g - g.mean(axis=-1, keepdims=True)
                          - xhat * (g * xhat).mean(axis=-1, keepdims=True))

    def backward_weight(self, dy, cache):
        xhat, _ = cache
        self.grads["gamma"] += (dy * xhat).reshape(-1, self.n).sum(axis=0)
        self.grads["beta"] += dy.reshape(-1, self.n).sum(axis=0)

    def __repr__(self):
        return f"LayerNorm({self.n})"


class Sequential(Layer):
    """Layers applied in order; itself a layer, so blocks and stages compose.

    The split backward needs each child's output gradient again in
    backward_weight, so backward_input records them in the cache.
    """

    def __init__(self, layers):
        super().__init__()
        self.layers = list(layers)

    def forward(self, x):
        caches = []
        for layer in self.layers:
            x, cache = layer.forward(x)
            caches.append(cache)
        return x, {"caches": caches, "dys": None}

    def backward_input(self, dy, cache, need_dx=True):
        dys = [None] * len(self.layers)
        for i in reversed(range(len(self.layers))):
            dys[i] = dy
            dy = self.layers[i].backward_input(dy, cache["caches"][i], need_dx=(i > 0 or need_dx))
        cache["dys"] = dys
        return dy

    def backward_weight(self, dy, cache):
        if cache["dys"] is None:
            raise RuntimeError("backward_weight before backward_input")
        for layer, child_dy, child_cache in zip(self.layers, cache["dys"], cache["caches"]):
            layer.backward_weight(child_dy, child_cache)

    def backward(self, dy, cache, need_dx=True):
        for i in reversed(range(len(self.layers))):
            dy = self.layers[i].backward(dy, cache["caches"][i], need_dx=(i > 0 or need_dx))
        return dy

    def children(self):
        return self.layers

    def __repr__(self):
        return "Sequential(" + ", ".join(map(repr, self.layers)) + ")"


class Residual(Layer):
    """y = x + inner(x): the skip connection of a transformer block.

    The gradient reaches x twice, through the skip and through `inner`; the
    weight gradient is the inner layers' alone.
    """

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        y, cache = self.inner.forward(x)
        return x + y, cache

    def backward_input(self, dy, cache, need_dx=True):
        return dy + self.inner.backward_input(dy, cache)

    def backward_weight(self, dy, cache):
        self.inner.backward_weight(dy, cache)

    def backward(self, dy, cache, need_dx=True):
        return dy + self.inner.backward(dy, cache)

    def children(self):
        return [self.inner]

    def __repr__(self):
        return f"Residual({self.inner!r})"


def leaf_layers(layer):
    """The layers that hold parameters' arrays, depth first, in order."""
    children = layer.children()
    if not children:
        yield layer
    for child in children:
        yield from leaf_layers(child)


def cache_nbytes(cache):
    """Bytes held by the arrays in a (nested) cache; shared arrays counted once."""
    seen = {}
    stack = [cache]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif hasattr(item, "nbytes"):
            seen[id(item)] = item.nbytes
    return sum(seen.values())
