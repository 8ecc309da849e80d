"""How device arrays reach MPI: straight from GPU memory, or staged through the host.

- "direct": the array is handed to mpi4py as it is. For NumPy arrays that is
  the only way; for CuPy arrays it needs a CUDA-aware MPI library.
- "staged": the array is copied to a host buffer, which MPI sends; the
  receiver copies it up to its device buffer. Always works, costs two copies.

Two rules make the GPU path correct by construction (mpi4py never
synchronises a GPU for us, and CuPy queues work without waiting for it):

1. A device buffer goes to MPI only once the work that wrote it has finished
   (`synchronise` before a send; `array.get()` blocks until its copy is done).
2. A buffer is handed out again (to a receive, or as a staging buffer) only
   once the work queued while it was in use has finished: whoever gives a
   buffer back gives a `fence` with it (an event recorded on the stream after
   that work), and `ReusePool.take` waits for the fence. A host buffer whose
   copy up to the device (`array.set`, asynchronous from pinned memory) is
   still queued is not overwritten by the next receive; a device buffer that
   kernels still read is not overwritten by the next CUDA-aware receive.

`choose(requested, device)` picks the transport and says why, for the run
summary: MPIPIPE_CUDA_AWARE=1/0 overrides everything (libraries answer
wrongly), then `--transport cuda-aware|staged`, then for "auto" the MPI
library's own answer (MPICH >= 4: MPIX_GPU_query_support; Open MPI:
MPIX_Query_cuda_support). Only a library that cannot be asked is judged by
the environment hints a module file may export (MPICH_GPU_SUPPORT_ENABLED=1 on
Cray, MV2_USE_CUDA=1 for MVAPICH): a hint must not override a library that
says no. Without a clear yes, "auto" stages: a device pointer given to an MPI
that is not CUDA-aware usually ends in a segmentation fault, not an error.
"""

import ctypes
import os

import numpy as np

TRANSPORTS = ("auto", "cuda-aware", "staged")
ENVIRONMENT_HINTS = (("MPICH_GPU_SUPPORT_ENABLED", "1"), ("MV2_USE_CUDA", "1"))


def query_mpi_library():
    """(True/False/None, how we know): does the loaded MPI library take CUDA pointers?"""
    library = _loaded_libmpi()
    if library is not None and hasattr(library, "MPIX_GPU_query_support"):
        answer = ctypes.c_int(0)
        if library.MPIX_GPU_query_support(0, ctypes.byref(answer)) == 0:   # 0: CUDA
            return bool(answer.value), "MPIX_GPU_query_support"
    if library is not None and hasattr(library, "MPIX_Query_cuda_support"):
        return bool(library.MPIX_Query_cuda_support()), "MPIX_Query_cuda_support"
    for name, value in ENVIRONMENT_HINTS:     # the library cannot be asked: its module's hint
        if os.environ.get(name) == value:
            return True, f"{name}={value}, and the library cannot be asked"
    if library is None:
        return None, "the MPI library could not be found to ask"
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


def fence(array):
    """A mark after the device work queued so far on the current stream (None for host
    arrays: their work is done when the call returns)."""
    if not is_device_array(array):
        return None
    import cupy

    event = cupy.cuda.Event(block=True, disable_timing=True)   # block: a wait yields the core
    event.record(cupy.cuda.get_current_stream())
    return event


class ReusePool:
    """Buffers by shape and dtype, reused: no allocation in the steady state. A buffer
    comes back with its fence and is handed out again only once the fence is passed."""

    def __init__(self, allocate):
        self.allocate = allocate        # (shape, dtype) -> a new buffer
        self.free = {}

    def take(self, shape, dtype):
        stack = self.free.get((tuple(shape), str(np.dtype(dtype))))
        if not stack:
            return self.allocate(tuple(shape), dtype)
        buffer, mark = stack.pop()
        if mark is not None:
            mark.synchronize()          # the work queued while it was in use is done
        return buffer

    def give_back(self, buffer, mark=None):
        self.free.setdefault((buffer.shape, str(buffer.dtype)), []).append((buffer, mark))


class HostStaging:
    """Host buffers for staged messages (page-locked when they stage a GPU's arrays, for
    fast copies; plain NumPy otherwise, so a CPU run never touches CUDA)."""

    def __init__(self):
        self.pinned = ReusePool(_pinned_empty)
        self.plain = ReusePool(lambda shape, dtype: np.empty(shape, dtype=dtype))

    def pool_for(self, array):
        return self.pinned if is_device_array(array) else self.plain

    def down(self, array):
        """A host copy of `array`, complete when this returns, ready for MPI."""
        host = self.pool_for(array).take(array.shape, array.dtype)
        if is_device_array(array):
            array.get(out=host)          # blocks until the copy is done
        else:
            np.copyto(host, array)
        return host

    def up(self, host, array):
        """Copy a received host buffer into the device (or host) array `array`, and take the
        buffer back once that copy, queued on the stream, has run."""
        if is_device_array(array):
            array.set(host)              # from pinned memory: only queued
        else:
            np.copyto(array, host)
        self.pool_for(array).give_back(host, fence(array))

    def give_back(self, host, array):
        """A host buffer that staged `array` and that MPI is done with."""
        self.pool_for(array).give_back(host)


def _pinned_empty(shape, dtype):
    import cupy

    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    memory = cupy.cuda.alloc_pinned_memory(size)
    return np.frombuffer(memory, dtype=dtype, count=int(np.prod(shape))).reshape(shape)
