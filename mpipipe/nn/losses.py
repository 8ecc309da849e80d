"""Losses that return their value and the gradient of the logits in one call.

Both take `denominator`, the number of predictions in the *global* batch
(samples, times tokens for a language model). A micro-batch returns
sum(per-prediction loss) / denominator, so adding the micro-batch losses of every
pipeline replica gives exactly the mean over the global batch: micro-batching
and data parallelism change the order of the arithmetic, never the result.

The loss comes back as a 0-d array, not a Python float, so that on a GPU it
stays on the device until the engine reads it once per step.
"""

from mpipipe.comm.backend import array_module


class SoftmaxCrossEntropy:
    """Mean negative log-likelihood of integer class labels under softmax(logits).

    Logits of shape (..., classes) and labels of shape (...): a language model's
    (batch, time, vocabulary) counts every token as one sample.
    """

    name = "cross-entropy"

    def __call__(self, logits, labels, denominator):
        shape = logits.shape
        loss, dlogits = self._flat(logits.reshape(-1, shape[-1]), labels.reshape(-1), denominator)
        return loss, dlogits.reshape(shape)

    def _flat(self, logits, labels, denominator):
        xp = array_module(logits)
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = xp.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        rows = xp.arange(len(labels))
        loss = (xp.log(total[:, 0]) - shifted[rows, labels]).sum() / denominator
        dlogits = exp / total
        dlogits[rows, labels] -= 1.0
        return loss, dlogits / denominator


class MeanSquaredError:
    """Per sample, the mean over outputs of (y - target)^2; then the mean over samples."""

    name = "mse"

    def __call__(self, y, target, denominator):
        diff = y - target
        width = y.shape[1]
        loss = (diff * diff).sum() / (width * denominator)
        return loss, diff * (2.0 / (width * denominator))


LOSSES = {"cross-entropy": SoftmaxCrossEntropy, "mse": MeanSquaredError}
