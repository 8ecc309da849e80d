"""Which array library a rank computes with: NumPy on a CPU, CuPy on a GPU.

Every layer asks `array_module(x)` for the module that owns its input, so the
same code runs on either device. Nothing here imports CuPy unless asked to.
"""

import numpy as np


def array_module(array):
    """Return numpy or cupy, whichever owns `array`."""
    module = type(array).__module__
    if module.startswith("cupy"):
        import cupy

        return cupy
    return np


def get_xp(device="cpu"):
    """The array module for a device name ('cpu' or 'gpu')."""
    if device == "cpu":
        return np
    if device == "gpu":
        import cupy

        return cupy
    raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'gpu'")
