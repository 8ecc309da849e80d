"""Optimizers that update one flat parameter buffer from one flat gradient buffer.

Each stage (and the single-process reference model) keeps all its parameters in
one array, so an update is a handful of array operations. The updates are
elementwise, so a stage's slice of the model is updated exactly as the same
slice of the whole model would be: the pipeline and the reference agree.

On the CPU an update runs a cache-sized block at a time: each line of the rule
then reads its arrays from the cache, not from memory, and no temporary as large
as the model is allocated (a fresh one faults in its pages on every step). On
8 M float32 parameters that took SGD's step from 8.0-10.2 ms to 4.3-5.3 ms and
Adam's from 40-43 to 34-36 ms (docs/performance.md). Per block the rule is the
same elementwise arithmetic in the same order: bit for bit the whole-array result.
"""

from mpipipe.comm.backend import array_module

BLOCK = 1 << 16     # elements: 256 KiB of float32, several arrays of it fit in a core's L2


def blocks(array):
    """Slices that cover a flat array a block at a time (on a GPU: one slice, the whole
    array, since each slice there is a kernel launch and the device has no such cache)."""
    step = BLOCK if array_module(array).__name__ == "numpy" else max(array.size, 1)
    return [slice(start, start + step) for start in range(0, array.size, step)]


class SGD:
    """p -= lr * v, with v = momentum * v + g (plain SGD when momentum is 0)."""

    def __init__(self, params, lr=0.01, momentum=0.9):
        self.params, self.lr, self.momentum = params, lr, momentum
        self.velocity = array_module(params).zeros_like(params) if momentum else None

    def step(self, grads):
        for part in blocks(self.params):
            p, g = self.params[part], grads[part]
            if self.velocity is None:
                p -= self.lr * g
                continue
            v = self.velocity[part]
            v *= self.momentum
            v += g
            p -= self.lr * v

    def state(self):
        """Flat arrays (like the parameters) and scalars; see mpipipe/checkpoint/."""
        return {} if self.velocity is None else {"velocity": self.velocity}

    def load_state(self, state):
        if self.velocity is not None:
            self.velocity[...] = state["velocity"]


class Adam:
    """Adam (Kingma and Ba, 2015) with bias correction."""

    def __init__(self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-8):
        xp = array_module(params)
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m, self.v, self.t = xp.zeros_like(params), xp.zeros_like(params), 0

    def step(self, grads):
        xp = array_module(self.params)
        b1, b2 = self.betas
        self.t += 1
        for part in blocks(self.params):
            p, g, m, v = self.params[part], grads[part], self.m[part], self.v[part]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            m_hat = m / (1 - b1**self.t)
            v_hat = v / (1 - b2**self.t)
            p -= self.lr * m_hat / (xp.sqrt(v_hat) + self.eps)

    def state(self):
        return {"m": self.m, "v": self.v, "t": self.t}

    def load_state(self, state):
        self.m[...], self.v[...], self.t = state["m"], state["v"], int(state["t"])


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def make_optimizer(name, params, lr):
    return OPTIMIZERS[name](params, lr=lr)
