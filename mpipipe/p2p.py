"""Moving activations and gradients between neighbouring stages.

Sends are non-blocking (Isend): the sender goes on computing while MPI moves
the data, and a send can never block a rank, which is what lets validate()
prove a schedule deadlock-free by looking at receives alone. Receives land in
buffers allocated once and reused (uppercase Recv: raw bytes, no pickling).

How a rank waits matters when ranks outnumber cores. MPICH's blocking Wait
spins: a rank waiting 2 s burns 2 s of a core that a busy rank could use. The
default here ("poll") tests the request in a loop that first yields the core
(sched_yield, for 0.5 ms: short waits stay short) and then sleeps, doubling the
sleep from 20 us up to 0.5 ms, so a rank in a long wait costs next to no CPU
and notices its message at most ~0.5 ms late. "block" uses MPI's own Wait.
`timeout` turns a wait that would hang into an error naming what was awaited.
"""

import os
import time

YIELD_PHASE = float(os.environ.get("MPIPIPE_YIELD_US", "500")) * 1e-6
MIN_SLEEP = 20e-6
MAX_SLEEP = float(os.environ.get("MPIPIPE_POLL_MAX_US", "500")) * 1e-6


class WaitTimeout(RuntimeError):
    """A receive or collective did not complete within --timeout seconds."""


def wait(request, mode="poll", timeout=None, what="a message"):
    """Complete `request`; return the seconds spent waiting."""
    start = time.perf_counter()
    if mode == "block" and timeout is None:
        request.Wait()
        return time.perf_counter() - start
    delay = 0.0
    while not request.Test():
        now = time.perf_counter()
        if timeout is not None and now - start > timeout:
            raise WaitTimeout(f"waited more than {timeout:g} s for {what}")
        if mode == "block":
            continue
        if now - start < YIELD_PHASE:
            os.sched_yield()    # short waits: give the core away, but stay runnable
        else:
            delay = min(max(2 * delay, MIN_SLEEP), MAX_SLEEP)
            time.sleep(delay)   # long waits: sleep, doubling up to MAX_SLEEP
    return time.perf_counter() - start


class BufferPool:
    """Reusable receive buffers, by shape and dtype: no allocation in the steady state."""

    def __init__(self, xp):
        self.xp = xp
        self.free = {}

    def take(self, shape, dtype):
        stack = self.free.get((tuple(shape), str(dtype)))
        return stack.pop() if stack else self.xp.empty(shape, dtype=dtype)

    def give_back(self, array):
        self.free.setdefault((array.shape, str(array.dtype)), []).append(array)


class PointToPoint:
    """Isend/Recv between the ranks of one pipeline communicator."""

    def __init__(self, comm, wait_mode="poll", timeout=None):
        self.comm, self.wait_mode, self.timeout = comm, wait_mode, timeout
        self.pending = []   # (request, array) of sends not yet known to be complete

    def send(self, array, peer, tag):
        """Start sending `array`; it must not be modified until the send completes."""
        self.pending.append((self.comm.Isend(array, dest=peer, tag=tag), array))

    def recv(self, buffer, peer, tag, what="a message"):
        """Receive into `buffer`; return the seconds spent waiting."""
        request = self.comm.Irecv(buffer, source=peer, tag=tag)
        return wait(request, self.wait_mode, self.timeout, f"{what} from rank {peer}")

    def reap(self):
        """Forget sends that have completed (lets their arrays be freed)."""
        self.pending = [(r, a) for r, a in self.pending if not r.Test()]

    def finish(self):
        """Complete every outstanding send (end of a step)."""
        for request, _ in self.pending:
            wait(request, self.wait_mode, self.timeout, "a send to complete")
        self.pending = []


def quiet_barrier(comm, mode="poll", timeout=None):
    """A barrier that does not spin: call it before a blocking collective that some
    ranks reach much later than others (MPICH's collectives spin while they wait)."""
    wait(comm.Ibarrier(), mode, timeout, "the other ranks at a barrier")
