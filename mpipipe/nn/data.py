"""Embedded data sets, generated from a seed: nothing to download.

- spiral:  K interleaved spiral arms in the plane, one class per arm. A linear
           model cannot separate them, a deep MLP can: the loss curve and the
           accuracy mean something. Cross-entropy.
- teacher: inputs from a Gaussian, targets from a fixed random two-layer
           "teacher" network plus a little noise. Regression, MSE; any width,
           so it also serves the benchmarks.
- arithmetic: character-level additions like "12+7=19", for the GPT. One pair
           of numbers in ten is never trained on: accuracy on the answers of
           those held-out sums says whether the model learned to add.
- text:    any text file, character level (`--text FILE`); the last tenth is
           held out.

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
    input_dim: int     # features, or the vocabulary size for token data
    output_dim: int
    vocab: str = ""    # token data: the characters, in id order
    held_out: tuple = None     # (inputs, targets) never trained on
    score_mask: np.ndarray = None  # held-out target positions that count for accuracy

    def __len__(self):
        return len(self.inputs)

    @property
    def tokens(self):
        """Time steps per sample: 1 for plain vectors, the sequence length for text."""
        return self.inputs.shape[1] if self.vocab else 1


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


ARITHMETIC_VOCAB = "0123456789+=."


def arithmetic(samples=None, max_operand=99, seed=0, dtype="float64", held_out_share=0.1):
    """Every sum a+b (0 <= a, b <= max_operand) as text, padded with '.' to one length."""
    rng = np.random.default_rng([seed, 4])
    pairs = [(a, b) for a in range(max_operand + 1) for b in range(max_operand + 1)]
    order = rng.permutation(len(pairs))
    cut = int(len(pairs) * held_out_share)
    width = len(f"{max_operand}+{max_operand}={2 * max_operand}") + 1
    lookup = {c: i for i, c in enumerate(ARITHMETIC_VOCAB)}

    def encode(indices):
        text = [f"{pairs[i][0]}+{pairs[i][1]}={sum(pairs[i])}".ljust(width, ".") for i in indices]
        ids = np.array([[lookup[c] for c in line] for line in text])
        answers = np.array([[j >= line.index("=") and c != "." for j, c in enumerate(line[1:])]
                            for line in text])
        return ids[:, :-1], ids[:, 1:], answers

    train_in, train_out, _ = encode(order[cut:])
    held_in, held_out, mask = encode(order[:cut])
    if samples is not None:
        train_in, train_out = train_in[:samples], train_out[:samples]
    return Dataset("arithmetic", train_in, train_out, "cross-entropy", len(ARITHMETIC_VOCAB),
                   len(ARITHMETIC_VOCAB), ARITHMETIC_VOCAB, (held_in, held_out), mask)


def text_file(path, seq_len=32, samples=None, seed=0, dtype="float64"):
    """Windows of `seq_len` characters from a text file; the last tenth held out."""
    with open(path, encoding="utf-8") as source:
        text = source.read()
    if len(text) < 10 * (seq_len + 1):
        raise ValueError(f"{path} has {len(text)} characters: too short for windows of {seq_len}")
    vocab = "".join(sorted(set(text)))
    ids = np.array([vocab.index(c) for c in text])
    cut = len(ids) * 9 // 10
    rng = np.random.default_rng([seed, 5])

    def windows(part, count):
        starts = rng.integers(0, len(part) - seq_len - 1, count)
        chunks = np.stack([part[s: s + seq_len + 1] for s in starts])
        return chunks[:, :-1], chunks[:, 1:]

    train_in, train_out = windows(ids[:cut], samples or 4096)
    held_in, held_out = windows(ids[cut:], 256)
    mask = np.ones(held_out.shape, dtype=bool)
    return Dataset("text", train_in, train_out, "cross-entropy", len(vocab), len(vocab), vocab,
                   (held_in, held_out), mask)


DATASETS = {"spiral": spiral, "teacher": teacher, "arithmetic": arithmetic, "text": text_file}


def batch_indices(step, global_batch, num_samples, seed=0):
    """The sample indices of step `step`: epochs of seeded permutations, cut in order."""
    start = step * global_batch
    indices = []
    while len(indices) < global_batch:
        epoch, offset = divmod(start + len(indices), num_samples)
        order = np.random.default_rng([seed, 3, epoch]).permutation(num_samples)
        indices.extend(order[offset: offset + global_batch - len(indices)])
    return np.asarray(indices)
