"""Embedded data sets, generated from a seed: nothing to download.

- spiral:  K interleaved spiral arms in the plane, one class per arm. A linear
           model cannot separate them, a deep MLP can: the loss curve and the
           accuracy mean something. Cross-entropy.
- teacher: inputs from a Gaussian, targets from a fixed random two-layer
           "teacher" network plus a little noise. Regression, MSE; any width,
           so it also serves the benchmarks.

Every rank generates the same data from the same seed, so no rank has to ship
inputs to stage 0 or labels to the last stage.
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class Dataset:
    name: str
    inputs: np.ndarray
    targets: np.ndarray
    loss: str          # name of the loss in losses.LOSSES
    input_dim: int
    output_dim: int

    def __len__(self):
        return len(self.inputs)


def spiral(samples=3000, classes=3, noise=0.2, seed=0, dtype="float64"):
    rng = np.random.default_rng([seed, 1])
    per_class = samples // classes
    radius = np.tile(np.linspace(0.05, 1.0, per_class), classes)
    label = np.repeat(np.arange(classes), per_class)
    angle = radius * 4.0 + label * (2 * np.pi / classes) + rng.normal(0, noise, radius.shape)
    inputs = np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1)
    order = rng.permutation(len(label))
    return Dataset("spiral", inputs[order].astype(dtype), label[order], "cross-entropy", 2, classes)


def teacher(samples=4096, input_dim=32, output_dim=8, hidden=64, noise=0.01, seed=0,
            dtype="float64"):
    rng = np.random.default_rng([seed, 2])
    inputs = rng.standard_normal((samples, input_dim))
    w1 = rng.standard_normal((input_dim, hidden)) / np.sqrt(input_dim)
    w2 = rng.standard_normal((hidden, output_dim)) / np.sqrt(hidden)
    targets = np.tanh(inputs @ w1) @ w2 + noise * rng.standard_normal((samples, output_dim))
    return Dataset("teacher", inputs.astype(dtype), targets.astype(dtype), "mse",
                   input_dim, output_dim)


DATASETS = {"spiral": spiral, "teacher": teacher}


def batch_indices(step, global_batch, num_samples, seed=0):
    """The sample indices of step `step`: epochs of seeded permutations, cut in order."""
    start = step * global_batch
    indices = []
    while len(indices) < global_batch:
        epoch, offset = divmod(start + len(indices), num_samples)
        order = np.random.default_rng([seed, 3, epoch]).permutation(num_samples)
        indices.extend(order[offset: offset + global_batch - len(indices)])
    return np.asarray(indices)
