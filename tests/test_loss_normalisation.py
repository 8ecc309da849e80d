"""The loss is the mean over every prediction of the global batch.

Checked against the losses written out in NumPy here, not against mpipipe's
losses or its one-process reference: those share mpipipe's denominator, so a
loss that is nine times too large (the GPT's 9 tokens forgotten) would pass
them all. Both the loss the run reports and the gradient the last stage starts
its backward with are compared.
"""

import numpy as np
import pytest
from mpi4py import MPI

from mpipipe import engine
from mpipipe.config import TrainConfig
from mpipipe.nn.data import batch_indices
from mpipipe.nn.model import build_stage
from mpipipe.train import run_training


def cross_entropy(logits, labels):
    """Mean negative log-likelihood over every predicted token, and its gradient."""
    flat, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    shifted = flat - flat.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    count = len(labels)
    loss = -np.log(probabilities[np.arange(count), labels]).sum() / count
    gradient = probabilities.copy()
    gradient[np.arange(count), labels] -= 1.0
    return loss, (gradient / count).reshape(logits.shape)


def mean_squared_error(y, target):
    """Mean over samples and outputs of the squared difference, and its gradient."""
    return ((y - target) ** 2).mean(), 2.0 * (y - target) / y.size


CASES = {
    "gpt": (dict(model="gpt", layers=1, hidden=8, heads=2, samples=64), cross_entropy),
    "spiral": (dict(data="spiral", layers=3, hidden=8, samples=90), cross_entropy),
    "teacher": (dict(data="teacher", layers=3, hidden=8, input_dim=5, output_dim=3,
                     samples=64), mean_squared_error),
}


@pytest.mark.parametrize("case", CASES)
def test_the_loss_and_its_first_gradient_are_the_global_batch_mean(case, monkeypatch):
    settings, reference = CASES[case]
    seen = []       # (targets, gradient) the engine's loss gave, micro-batch by micro-batch

    def recording(name):
        loss_fn = engine_losses[name]()

        def record(y, targets, denominator):
            loss, gradient = loss_fn(y, targets, denominator)
            seen.append((targets, gradient))
            return loss, gradient
        return lambda: record

    engine_losses = dict(engine.LOSSES)
    monkeypatch.setattr(engine, "LOSSES", {name: recording(name) for name in engine_losses})
    config = TrainConfig(**settings, global_batch=8, microbatches=2, steps=1, dtype="float64",
                         optimizer="sgd")
    run = run_training(config, MPI.COMM_SELF)

    setup, data = run.setup, run.setup.dataset
    rows = batch_indices(0, 8, len(data), config.seed)
    model = build_stage(setup.spec, range(setup.spec.num_blocks))    # the starting weights
    y, _ = model.forward(data.inputs[rows])
    loss, gradient = reference(y, data.targets[rows])
    assert run.summary.losses[0] == pytest.approx(loss, rel=1e-12)
    assert len(seen) == 2
    for microbatch, (targets, first_gradient) in enumerate(seen):
        mine = slice(4 * microbatch, 4 * (microbatch + 1))
        assert np.array_equal(targets, data.targets[rows][mine])
        assert np.allclose(first_gradient, gradient[mine], rtol=1e-12, atol=1e-15)
