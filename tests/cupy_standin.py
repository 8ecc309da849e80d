"""A stand-in for the few CuPy calls the transport makes, queueing work as CUDA does.

Nothing a "device" call queues runs until its stream is synchronised or an
event recorded after it is waited for, and `ndarray.set` reads its host buffer
only when the queued copy runs, as CUDA's asynchronous copy from pinned memory
does. So a test can check the *order* of the transport's calls on any machine:
a buffer reused too early shows up as a wrong number. The numbers themselves
are checked on a real GPU (tests/gpu).

`install(monkeypatch)` puts it in sys.modules as `cupy` for one test.
"""

import sys
import types

import numpy as np


class Stream:
    def __init__(self):
        self.queued, self.ran = [], 0

    def enqueue(self, work):
        self.queued.append(work)

    def run_until(self, index):
        while self.ran < index:
            self.queued[self.ran]()
            self.ran += 1

    def synchronize(self):
        self.run_until(len(self.queued))

    @property
    def idle(self):
        return self.ran == len(self.queued)


STREAM = Stream()


class Event:
    def __init__(self, block=False, disable_timing=False):
        self.stream, self.mark = None, 0

    def record(self, stream=None):
        self.stream = stream or STREAM
        self.mark = len(self.stream.queued)

    def synchronize(self):
        if self.stream is not None:
            self.stream.run_until(self.mark)

    @property
    def done(self):
        return self.stream is None or self.stream.ran >= self.mark


class ndarray:
    """A device array: its contents change only when queued work runs."""

    def __init__(self, shape, dtype=np.float64):
        self.data = np.zeros(shape, dtype=dtype)

    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    nbytes = property(lambda self: self.data.nbytes)
    __cuda_array_interface__ = property(lambda self: {"shape": self.data.shape})

    def set(self, host):
        STREAM.enqueue(lambda: np.copyto(self.data, host))    # reads `host` when it runs

    def get(self, out=None):
        STREAM.synchronize()
        if out is None:
            return self.data.copy()
        np.copyto(out, self.data)
        return out


ndarray.__module__ = "cupy"     # what mpipipe.comm.backend.array_module looks at


def empty(shape, dtype=np.float64):
    return ndarray(shape, dtype)


def install(monkeypatch):
    """Make `import cupy` give this stand-in; return (module, the pinned allocations)."""
    global STREAM
    STREAM = Stream()
    pinned = []

    def alloc_pinned_memory(size):
        pinned.append(size)
        return bytearray(size)

    module = types.ModuleType("cupy")
    module.ndarray, module.empty = ndarray, empty
    module.cuda = types.SimpleNamespace(Event=Event, get_current_stream=lambda: STREAM,
                                        alloc_pinned_memory=alloc_pinned_memory)
    monkeypatch.setitem(sys.modules, "cupy", module)
    return module, pinned


def stream():
    return STREAM


class Messages:
    """A communicator whose receives deliver the given messages in turn, as MPI does:
    the bytes are in the buffer once the request completes (device memory included,
    as a CUDA-aware library writes it). Records the collectives it is asked for."""

    def __init__(self, messages=()):
        self.messages, self.calls = list(messages), []

    def Irecv(self, buffer, source=None, tag=None):
        message = self.messages.pop(0)
        target = buffer.data if isinstance(buffer, ndarray) else buffer
        return _Done(lambda: np.copyto(target, message))

    def Isend(self, buffer, dest=None, tag=None):
        self.calls.append(("Isend", type(buffer).__module__, STREAM.idle))
        return _Done(lambda: None)

    def Ibarrier(self):
        return _Done(lambda: None)

    def Iallreduce(self, send, buffer, op=None):
        self.calls.append(("Iallreduce", type(buffer).__module__, STREAM.idle))
        return _Done(lambda: None)          # one rank: the sum is the buffer itself

    def Allreduce(self, send, buffer, op=None):
        self.calls.append(("Allreduce", type(buffer).__module__, STREAM.idle))


class _Done:
    def __init__(self, complete):
        self.complete = complete

    def Test(self):
        if self.complete:
            self.complete()
            self.complete = None
        return True

    Wait = Test
