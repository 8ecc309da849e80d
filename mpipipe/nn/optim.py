"""Optimizers that update one flat parameter buffer from one flat gradient buffer.

Each stage (and the single-process reference model) keeps all its parameters in
one array, so an update is a handful of whole-array operations. The updates are
elementwise, so a stage's slice of the model is updated exactly as the same
slice of the whole model would be: the pipeline and the reference agree.
"""

from mpipipe.comm.backend import array_module


class SGD:
    """p -= lr * v, with v = momentum * v + g (plain SGD when momentum is 0)."""

    def __init__(self, params, lr=0.01, momentum=0.9):
        self.params, self.lr, self.momentum = params, lr, momentum
        self.velocity = array_module(params).zeros_like(params) if momentum else None

    def step(self, grads):
        if self.velocity is None:
            self.params -= self.lr * grads
            return
        self.velocity *= self.momentum
        self.velocity += grads
        self.params -= self.lr * self.velocity

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
        self.m *= b1
        self.m += (1 - b1) * grads
        self.v *= b2
        self.v += (1 - b2) * grads * grads
        m_hat = self.m / (1 - b1**self.t)
        v_hat = self.v / (1 - b2**self.t)
        self.params -= self.lr * m_hat / (xp.sqrt(v_hat) + self.eps)

    def state(self):
        return {"m": self.m, "v": self.v, "t": self.t}

    def load_state(self, state):
        self.m[...], self.v[...], self.t = state["m"], state["v"], int(state["t"])


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def make_optimizer(name, params, lr):
    return OPTIMIZERS[name](params, lr=lr)
