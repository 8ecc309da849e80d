"""The single-process run every pipeline must reproduce.

The whole model as one Stage, the whole global batch at once, the loss averaged
over it, one backward, one optimizer step. No schedule, no micro-batches, no
MPI: the independent reference behind `--check` and the equivalence tests.

Why --check replays the last step of a long run instead of following it to
the end: training is chaotic. The pipeline adds the same numbers in another
order, so the two runs differ by round-off from the first step, and the
training makes such differences grow by a few per cent a step (measured with
the GPT in float64: 1e-15 after 100 steps, 6e-8 after 300, pp = 2, tensor
parallelism or not). So the check follows the whole run only while it is
short (TRAJECTORY_STEPS); beyond that it compares the first steps, and then
replays the last one in one process from the run's own weights and optimizer
state: every step of the pipeline must be the one-process step, to round-off,
however long the run.
"""

from dataclasses import dataclass

import numpy as np

from mpipipe.nn.data import batch_indices
from mpipipe.nn.losses import LOSSES
from mpipipe.nn.model import build_stage
from mpipipe.nn.optim import make_optimizer
from .config import CHECK_TRAJECTORY_STEPS as TRAJECTORY_STEPS


def train_sequential(setup, steps=None):
    """Train `setup`'s model (config.Setup) in one process for `steps` steps (default:
    all); return (losses, flat parameters)."""
    c, spec = setup.config, setup.spec
    model = build_stage(spec, range(spec.num_blocks))
    optimizer = make_optimizer(c.optimizer, model.flat_params, c.lr)
    losses = [one_step(setup, model, optimizer, step)
              for step in range(c.steps if steps is None else steps)]
    return losses, model.flat_params.copy()


def one_step(setup, model, optimizer, step):
    """Step `step` of the one-process training: the whole global batch at once."""
    c, data = setup.config, setup.dataset
    rows = batch_indices(step, c.global_batch, len(data), c.seed)
    y, cache = model.forward(data.inputs[rows])
    loss, dy = LOSSES[data.loss]()(y, data.targets[rows], setup.loss_denominator)
    model.zero_grads()
    model.backward(dy, cache, need_dx=False)
    optimizer.step(model.flat_grads)
    return float(loss)


def replay_step(setup, step, params, state):
    """Step `step` of the one-process training from the given flat weights and optimizer
    state (flat arrays like the weights, and scalars): (its loss, the weights after it)."""
    spec = setup.spec
    model = build_stage(spec, range(spec.num_blocks))
    model.flat_params[...] = params
    optimizer = make_optimizer(setup.config.optimizer, model.flat_params, setup.config.lr)
    optimizer.load_state(state)
    loss = one_step(setup, model, optimizer, step)
    return loss, model.flat_params.copy()


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
    trajectory_steps: int | None = None   # a long run: the steps followed; the last replayed


def check_against_one_process(setup, losses, weights, first_step=0, before_last=None):
    """Compare with one process: `losses` of the steps from `first_step` on, and the
    final flat `weights` of every replica. A run longer than TRAJECTORY_STEPS with
    `before_last` = (flat weights, optimizer state) before its last step: its first
    steps' losses, then its last step replayed from that state (see above)."""
    c = setup.config
    tolerance = check_tolerance(c.dtype)
    followed = TRAJECTORY_STEPS[c.dtype]
    if before_last is None or c.steps <= followed:
        ref_losses, ref_weights = train_sequential(setup)
        loss_error = relative_error(losses, ref_losses[first_step:])
        weight_error = max(relative_error(w, ref_weights) for w in weights)
        followed = None
    else:
        ref_losses, _ = train_sequential(setup, followed)
        early = ref_losses[first_step:]
        last_loss, last_weights = replay_step(setup, c.steps - 1, *before_last)
        loss_error = max(relative_error(losses[:len(early)], early),
                         relative_error(losses[-1:], [last_loss]))
        weight_error = max(relative_error(w, last_weights) for w in weights)
    return Check(loss_error, weight_error, tolerance,
                 loss_error < tolerance and weight_error < tolerance, followed)
