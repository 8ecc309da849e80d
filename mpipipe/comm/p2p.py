"""Moving activations and gradients between neighbouring stages.

Sends are non-blocking (Isend): the sender goes on computing while MPI moves
the data, and a send can never block a rank, which is what lets validate()
prove a schedule deadlock-free by looking at receives alone. Receives land in
buffers allocated once and reused (uppercase Recv: raw bytes, no pickling).

How a rank waits matters when ranks outnumber cores. MPICH's blocking Wait
spins: a rank waiting 2 s burns 2 s of a core that a busy rank could use. The
default here ("poll") tests the request in a loop that first yields the core
(sched_yield: short waits stay short) and then sleeps, doubling the sleep from
20 us up to 0.5 ms, so a rank in a long wait costs next to no CPU and notices
its message at most ~0.5 ms late. How long to yield before sleeping depends on
whether the node has a core per rank (`yield_phase`): 10 ms if it has (nobody
else wants the core, and a sleeping rank answers late), 0.5 ms if ranks
outnumber cores (the core is better given to a rank that computes).
MPIPIPE_YIELD_US overrides it. "block" uses MPI's own Wait.
`timeout` turns a wait that would hang into an error naming what was awaited.
A `Waiter` holds these three settings (mode, timeout, patience), so every wait
of a rank (receives, sends, barriers, all-reduces) behaves the same.
"""

import os
import time
from dataclasses import dataclass

from .transport import HostStaging, ReusePool, fence, is_device_array, synchronise

MIN_SLEEP = 20e-6
MAX_SLEEP = float(os.environ.get("MPIPIPE_POLL_MAX_US", "500")) * 1e-6


class WaitTimeout(RuntimeError):
    """A receive or collective did not complete within --timeout seconds."""


def yield_phase(ranks_on_node):
    """Seconds a waiting rank yields before it starts to sleep (see the module docstring)."""
    if "MPIPIPE_YIELD_US" in os.environ:
        return float(os.environ["MPIPIPE_YIELD_US"]) * 1e-6
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 10e-3 if ranks_on_node <= (cores or 1) else 0.5e-3


DEFAULT_YIELD = 0.5e-3


@dataclass(frozen=True)
class Waiter:
    """How this rank waits: `mode` poll or block, a `timeout` in seconds (None: forever),
    and `patience`, the seconds a polling wait yields before it sleeps."""

    mode: str = "poll"
    timeout: float | None = None
    patience: float = DEFAULT_YIELD

    @classmethod
    def for_node(cls, mode, timeout, ranks_on_node):
        """The waiter for a rank whose node runs `ranks_on_node` ranks."""
        return cls(mode, timeout, yield_phase(ranks_on_node))

    def wait(self, request, what="a message"):
        """Complete `request`; return the seconds spent waiting."""
        start = time.perf_counter()
        if self.mode == "block" and self.timeout is None:
            request.Wait()
            return time.perf_counter() - start
        delay = 0.0
        while not request.Test():
            now = time.perf_counter()
            if self.timeout is not None and now - start > self.timeout:
                raise WaitTimeout(f"waited more than {self.timeout:g} s for {what}")
            if self.mode == "block":
                continue
            if now - start < self.patience:
                os.sched_yield()    # short waits: give the core away, but stay runnable
            else:
                delay = min(max(2 * delay, MIN_SLEEP), MAX_SLEEP)
                time.sleep(delay)   # long waits: sleep, doubling up to MAX_SLEEP
        return time.perf_counter() - start

    def barrier(self, comm, what="the other ranks at a barrier"):
        """A barrier that does not spin: use it before a blocking collective that some
        ranks reach much later than others (MPICH's collectives spin while they wait)."""
        self.wait(comm.Ibarrier(), what)


class BufferPool(ReusePool):
    """Receive buffers on the rank's device, reused by shape and dtype. A buffer given
    back goes to the next receive only once the kernels queued to read it have run."""

    def __init__(self, xp):
        super().__init__(lambda shape, dtype: xp.empty(shape, dtype=dtype))

    def give_back(self, array):
        super().give_back(array, fence(array))


class PointToPoint:
    """Isend/Recv between the ranks of one pipeline communicator.

    With transport "staged" every array goes through a host buffer (see
    transport.py); with "direct" it goes to MPI as it is, after its CUDA
    stream has finished writing it.
    """

    def __init__(self, comm, waiter=Waiter(), transport="direct"):
        self.comm, self.waiter = comm, waiter
        self.staged = transport == "staged"
        self.staging = HostStaging()
        self.pending = []   # (request, array, staged host copy or None) of unfinished sends

    def send(self, array, peer, tag):
        """Start sending `array`; it must not be modified until the send completes."""
        if self.staged:
            host = self.staging.down(array)
            self.pending.append((self.comm.Isend(host, dest=peer, tag=tag), array, host))
        else:
            synchronise(array)
            self.pending.append((self.comm.Isend(array, dest=peer, tag=tag), array, None))

    def recv(self, buffer, peer, tag, what="a message"):
        """Receive into `buffer`; return the seconds spent waiting."""
        target = (self.staging.pool_for(buffer).take(buffer.shape, buffer.dtype) if self.staged
                  else buffer)
        request = self.comm.Irecv(target, source=peer, tag=tag)
        seconds = self.waiter.wait(request, f"{what} from rank {peer}")
        if self.staged:
            self.staging.up(target, buffer)
        return seconds

    def reap(self):
        """Forget sends that have completed (lets their arrays be freed)."""
        still = []
        for request, array, host in self.pending:
            if not request.Test():
                still.append((request, array, host))
            elif host is not None:
                self.staging.give_back(host, array)
        self.pending = still

    def finish(self):
        """Complete every outstanding send (end of a step)."""
        for request, array, host in self.pending:
            self.waiter.wait(request, "a send to complete")
            if host is not None:
                self.staging.give_back(host, array)
        self.pending = []


class Reduction:
    """A sum of `array` over the ranks of `comm`, in place: started now, finished by
    `finish()`, so that it can run while the rank goes on computing.

    Host arrays: Iallreduce, waited for without spinning. Device arrays go through
    a host buffer when `staging` is given; else to the library as they are, with
    the blocking Allreduce, done at once: CUDA-aware libraries support it on device
    memory, while Open MPI lists the non-blocking collectives as unsupported there.
    A quiet barrier first, so that no rank spins in it while a late one computes.
    """

    def __init__(self, comm, array, waiter, staging=None, what="the data-parallel all-reduce"):
        from mpi4py import MPI

        self.array, self.waiter, self.staging, self.what = array, waiter, staging, what
        self.device, self.request = is_device_array(array), None
        if self.device and staging is None:
            synchronise(array)
            waiter.barrier(comm, what)
            comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
            return
        self.host = staging.down(array) if self.device else array
        self.request = comm.Iallreduce(MPI.IN_PLACE, self.host, op=MPI.SUM)

    def finish(self):
        if self.request is None:
            return
        self.waiter.wait(self.request, self.what)
        self.request = None
        if self.device:
            self.staging.up(self.host, self.array)


def allreduce_sum(comm, array, waiter, staging=None, what="the data-parallel all-reduce"):
    """Sum `array` over the ranks of `comm`, in place (a Reduction, finished at once)."""
    Reduction(comm, array, waiter, staging, what).finish()
