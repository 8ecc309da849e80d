"""The single-process run every pipeline must reproduce.

The whole model as one Stage, the whole global batch at once, the loss averaged
over it, one backward, one optimizer step. No schedule, no micro-batches, no
MPI: the independent reference behind `--check` and the equivalence tests.
"""

from dataclasses import dataclass

import numpy as np

from .data import batch_indices
from .losses import LOSSES
from .model import build_stage
from .optim import make_optimizer


def train_sequential(setup):
    """Train `setup`'s model (config.Setup) in one process; return (losses, flat parameters)."""
    c, spec, data = setup.config, setup.spec, setup.dataset
    model = build_stage(spec, range(spec.num_blocks))
    optimizer = make_optimizer(c.optimizer, model.flat_params, c.lr)
    loss_fn = LOSSES[data.loss]()
    losses = []
    for step in range(c.steps):
        rows = batch_indices(step, c.global_batch, len(data), c.seed)
        y, cache = model.forward(data.inputs[rows])
        loss, dy = loss_fn(y, data.targets[rows], setup.loss_denominator)
        model.zero_grads()
        model.backward(dy, cache, need_dx=False)
        optimizer.step(model.flat_grads)
        losses.append(float(loss))
    return losses, model.flat_params.copy()


def relative_error(actual, expected):
    """max |a - e| / max |e|: one number for 'do these agree to round-off'."""
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-300)
    return float(np.abs(actual - expected).max(initial=0.0)) / scale


def check_tolerance(dtype):
    """How close --check wants the pipeline to the single-process run."""
    return 1e-9 if dtype == "float64" else 1e-4


@dataclass
class Check:
    """--check's verdict: the pipeline's losses and weights against the one-process run."""

    loss_rel_err: float
    weight_rel_err: float
    tolerance: float
    passed: bool


def check_against_one_process(setup, losses, weights, first_step=0):
    """Train `setup` in one process and compare: `losses` of the steps from `first_step`
    on, and the final flat `weights` of every replica."""
    ref_losses, ref_weights = train_sequential(setup)
    loss_error = relative_error(losses, ref_losses[first_step:])
    weight_error = max(relative_error(w, ref_weights) for w in weights)
    tolerance = check_tolerance(setup.config.dtype)
    return Check(loss_error, weight_error, tolerance,
                 loss_error < tolerance and weight_error < tolerance)
