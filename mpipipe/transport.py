"""How device arrays reach MPI: straight from GPU memory, or staged through the host.

- "direct": the array is handed to mpi4py as it is. For NumPy arrays that is
  the only way; for CuPy arrays it needs a CUDA-aware MPI library, and the
  producing CUDA stream must be synchronised first (mpi4py never does it, and
  an unfinished kernel would send stale bytes).
- "staged": the array is copied to a host buffer, which MPI sends; the
  receiver copies it up to its device buffer. Always works, costs two copies.

`choose(requested, device)` picks one and says why, for the run summary:
MPIPIPE_CUDA_AWARE=1/0 overrides everything (libraries answer wrongly), then
`--transport cuda-aware|staged`, then for "auto" the MPI library's own answer:
MPICH >= 4 exports MPIX_GPU_query_support, Open MPI MPIX_Query_cuda_support;
Cray MPICH and MVAPICH say it with MPICH_GPU_SUPPORT_ENABLED / MV2_USE_CUDA.
Without a clear yes, "auto" stages: a device pointer given to an MPI that is
not CUDA-aware usually ends in a segmentation fault, not an error message.
"""

import ctypes
import os

import numpy as np


TRANSPORTS = ("auto", "cuda-aware", "staged")


def query_mpi_library():
    """(True/False/None, how we know): does the loaded MPI library take CUDA pointers?"""
    for name, value in (("MPICH_GPU_SUPPORT_ENABLED", "1"), ("MV2_USE_CUDA", "1")):
        if os.environ.get(name) == value:
            return True, f"{name}={value}"
    library = _loaded_libmpi()
    if library is None:
        return None, "the MPI library could not be found to ask"
    if hasattr(library, "MPIX_GPU_query_support"):
        answer = ctypes.c_int(0)
        if library.MPIX_GPU_query_support(0, ctypes.byref(answer)) == 0:   # 0: CUDA
            return bool(answer.value), "MPIX_GPU_query_support"
    if hasattr(library, "MPIX_Query_cuda_support"):
        return bool(library.MPIX_Query_cuda_support()), "MPIX_Query_cuda_support"
    return None, "the MPI library has no CUDA query"


def _loaded_libmpi():
    """The libmpi this process has loaded (Linux: from /proc/self/maps)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "libmpi" in line.split()[-1]})
    except OSError:
        return None
    for path in paths:
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def choose(requested, device):
    """('direct' or 'staged', reason) for a `requested` transport of TRANSPORTS (config.py
    has checked it) on `device`."""
    if device == "cpu":
        if requested == "staged":     # a second host buffer: only useful to test the path
            return "staged", "--transport staged (host arrays copied through staging buffers)"
        return "direct", "host arrays go to MPI as they are"
    override = os.environ.get("MPIPIPE_CUDA_AWARE")
    if override in ("0", "1"):
        return ("direct" if override == "1" else "staged"), f"MPIPIPE_CUDA_AWARE={override}"
    if requested != "auto":
        return ("direct" if requested == "cuda-aware" else "staged"), f"--transport {requested}"
    aware, how = query_mpi_library()
    if aware:
        return "direct", f"the MPI library is CUDA-aware ({how})"
    return "staged", (f"the MPI library is not CUDA-aware ({how})" if aware is False
                      else f"not known to be CUDA-aware ({how})")


def is_device_array(array):
    return hasattr(array, "__cuda_array_interface__")


def synchronise(array):
    """Wait until the kernels that produced `array` have finished (before MPI reads it)."""
    if is_device_array(array):
        import cupy

        cupy.cuda.get_current_stream().synchronize()


class HostStaging:
    """Host buffers (page-locked on a GPU, for fast copies), reused by shape and dtype."""

    def __init__(self):
        self.free = {}

    def take(self, shape, dtype):
        stack = self.free.get((tuple(shape), str(dtype)))
        if stack:
            return stack.pop()
        return _pinned_empty(shape, dtype)

    def give_back(self, array):
        self.free.setdefault((array.shape, str(array.dtype)), []).append(array)

    def down(self, array):
        """A host copy of `array`, ready for MPI."""
        host = self.take(array.shape, array.dtype)
        if is_device_array(array):
            array.get(out=host)          # waits for the copy: the buffer is complete
        else:
            np.copyto(host, array)
        return host

    def up(self, host, array):
        """Copy a received host buffer into the device (or host) array `array`."""
        if is_device_array(array):
            array.set(host)
        else:
            np.copyto(array, host)
        self.give_back(host)


def _pinned_empty(shape, dtype):
    try:
        import cupy
    except ImportError:
        return np.empty(shape, dtype=dtype)
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    memory = cupy.cuda.alloc_pinned_memory(size)
    return np.frombuffer(memory, dtype=dtype, count=int(np.prod(shape))).reshape(shape)
