"""Which array library a rank computes with: NumPy on a CPU, CuPy on a GPU.

Every layer asks `array_module(x)` for the module that owns its input, so the
same code runs on either device. Nothing here imports CuPy unless asked to.
"""

import numpy as np

from mpipipe.errors import ConfigError


def array_module(array):
    """Return numpy or cupy, whichever owns `array`."""
    module = type(array).__module__
    if module.startswith("cupy"):
        import cupy

        return cupy
    return np


def select_device(requested, local_rank):
    """(device, xp, why) for this rank: 'cpu' with NumPy or 'gpu' with CuPy.

    On a GPU, rank k of a node takes visible device k mod (devices seen): with
    CUDA_VISIBLE_DEVICES set (as Slurm's --gpus-per-node does) the numbering
    is already the allocation's. "auto" takes a GPU when CuPy sees one.
    """
    if requested == "cpu":
        return "cpu", np, "--device cpu"
    try:
        import cupy
    except ImportError:
        if requested == "gpu":
            raise ConfigError("--device gpu needs CuPy: pip install 'mpipipe[gpu]' (the "
                              "cupy-cuda12x wheel; another CUDA wants another cupy wheel)") from None
        return "cpu", np, "CuPy is not installed"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:          # no driver, no device
        if requested == "gpu":
            raise ConfigError(f"--device gpu, but CuPy cannot use a GPU here: {error}") from None
        return "cpu", np, "no GPU usable by CuPy"
    if count == 0:
        if requested == "gpu":
            raise ConfigError("--device gpu, but CuPy sees no GPU")
        return "cpu", np, "no GPU visible"
    device = local_rank % count
    cupy.cuda.Device(device).use()
    return "gpu", cupy, f"GPU {device} of {count} visible (node-local rank {local_rank})"


def scatter_add(target, indices, values):
    """target[indices] += values, adding up repeated indices (np.add.at; on a GPU cupyx)."""
    if type(target).__module__.startswith("cupy"):
        import cupyx

        cupyx.scatter_add(target, indices, values)
    else:
        np.add.at(target, indices, values)


def to_host(array):
    """A NumPy copy of `array`, wherever it lives: the one way data leaves a GPU."""
    if hasattr(array, "get"):
        return array.get()
    return np.array(array)
