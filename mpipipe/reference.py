"""The single-process run every pipeline must reproduce.

The whole model as one Stage, the whole global batch at once, the loss averaged
over it, one backward, one optimizer step. No schedule, no micro-batches, no
MPI: the independent reference behind `--check` and the equivalence tests.
"""

from .data import batch_indices
from .losses import LOSSES
from .model import build_stage
from .optim import make_optimizer


def train_sequential(plan):
    """Train `plan`'s model in one process; return (losses, flat parameters)."""
    c, spec, data = plan.config, plan.spec, plan.dataset
    model = build_stage(spec, range(spec.num_blocks))
    optimizer = make_optimizer(c.optimizer, model.flat_params, c.lr)
    loss_fn = LOSSES[data.loss]()
    losses = []
    for step in range(c.steps):
        rows = batch_indices(step, c.global_batch, len(data), c.seed)
        y, cache = model.forward(data.inputs[rows])
        loss, dy = loss_fn(y, data.targets[rows], plan.loss_scale)
        model.zero_grads()
        model.backward(dy, cache, need_dx=False)
        optimizer.step(model.flat_grads)
        losses.append(float(loss))
    return losses, model.flat_params.copy()


def relative_error(actual, expected):
    """max |a - e| / max |e|: one number for 'do these agree to round-off'."""
    import numpy as np

    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-300)
    return float(np.abs(actual - expected).max(initial=0.0)) / scale
