"""Losses that return their value and the gradient of the logits in one call.

Both take `scale`, the number of samples in the *global* batch. A micro-batch
returns sum(per-sample loss) / scale, so adding the micro-batch losses of every
pipeline replica gives exactly the mean over the global batch: micro-batching
and data parallelism change the order of the arithmetic, never the result.

The loss comes back as a 0-d array, not a Python float, so that on a GPU it
stays on the device until the engine reads it once per step.
"""

from .backend import array_module


class SoftmaxCrossEntropy:
    """Mean negative log-likelihood of integer class labels under softmax(logits).

    Logits of shape (..., classes) and labels of shape (...): a language model's
    (batch, time, vocabulary) counts every token as one sample.
    """

    name = "cross-entropy"

    def __call__(self, logits, labels, scale):
        shape = logits.shape
        loss, dlogits = self._flat(logits.reshape(-1, shape[-1]), labels.reshape(-1), scale)
        return loss, dlogits.reshape(shape)

    def _flat(self, logits, labels, scale):
        xp = array_module(logits)
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = xp.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        rows = xp.arange(len(labels))
        loss = (xp.log(total[:, 0]) - shifted[rows, labels]).sum() / scale
        dlogits = exp / total
        dlogits[rows, labels] -= 1.0
        return loss, dlogits / scale


class MeanSquaredError:
    """Per sample, the mean over outputs of (y - target)^2; then the mean over samples."""

    name = "mse"

    def __call__(self, y, target, scale):
        diff = y - target
        width = y.shape[1]
        loss = (diff * diff).sum() / (width * scale)
        return loss, diff * (2.0 / (width * scale))


LOSSES = {"cross-entropy": SoftmaxCrossEntropy, "mse": MeanSquaredError}
