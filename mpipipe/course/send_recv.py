"""Exercise 6: Send and Recv, checked on two real MPI ranks with every message watched.

The checks run on every rank (under_mpi.py runs them: in `mpiexec -n 2` for
`mpipipe grade`, or in each rank's pytest under pytest-mpi). The student's
function gets a WatchedComm instead of the communicator: each Send and Recv is
checked before MPI sees it, and a receive gives up after RECV_PATIENCE
seconds, so a message that would never arrive becomes feedback, not a hang.
"""

import math
import time

from .base import NeverArrived, Wrong, call, short
from .steps import Step

# (source, dest, tag, shape, dtype): one step each. The second goes the other
# way and in float32, so a hard-coded rank or a float64 buffer shows.
SEND_RECV_CASES = [
    (0, 1, 7, (4, 3), "float64"),
    (1, 0, 3, (2, 5), "float32"),
]
RANKS = 2
RECV_PATIENCE = 3.0   # seconds: a few numbers from the next rank arrive in well under 1 ms


class WatchedComm:
    """The real communicator, but each Send and Recv is checked before MPI runs it.

    A Recv with the wrong source or tag would wait forever; checked here, it
    becomes a message for the student instead of a hung job.
    """

    def __init__(self, comm, source, dest, tag):
        self._comm, self.source, self.dest, self.tag = comm, source, dest, tag
        self.rank = comm.Get_rank()
        self.sent = self.received = False
        self.problem = None   # kept, in case the student's code catches the exception
        self.waited = None    # the same for a receive that gave up (see PatientRequest)

    def _wrong(self, text):
        self.problem = self.problem or text
        raise Wrong(self.problem)

    def Send(self, buf, dest, tag=0):
        self._check_send("Send", dest, tag)
        return self._comm.Send(buf, dest, tag)

    def Isend(self, buf, dest, tag=0):
        self._check_send("Isend", dest, tag)
        return self._comm.Isend(buf, dest, tag)

    def Recv(self, buf, source=None, tag=None, status=None):
        self._check_recv("Recv", source, tag)
        PatientRequest(self._comm.Irecv(buf, self._any_source(source), tag), self).Wait(status)

    def Irecv(self, buf, source=None, tag=None):
        self._check_recv("Irecv", source, tag)
        return PatientRequest(self._comm.Irecv(buf, self._any_source(source), tag), self)

    @staticmethod
    def _any_source(source):
        from mpi4py import MPI

        return MPI.ANY_SOURCE if source is None else source

    def _lowercase(self, *args, **kwargs):
        self._wrong("use the uppercase Send and Recv: lowercase send/recv pickle the array into "
                    "a Python object, Send and Recv hand MPI the array's own memory")

    send = recv = isend = irecv = sendrecv = _lowercase

    ALLOWED = ("Get_rank", "Get_size", "rank", "size")

    def __getattr__(self, name):
        """Get_rank and Get_size are the real communicator's; nothing else is needed, and
        a call the grader does not watch (a Barrier on one rank) could hang the job."""
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self.ALLOWED:
            self._wrong(f"comm.{name} is not needed here: pass_activation uses comm.Get_rank, "
                        f"comm.Send and comm.Recv")
        return getattr(self._comm, name)

    def _check_send(self, method, dest, tag):
        if self.rank != self.source:
            self._wrong(f"rank {self.rank} calls {method}, but only rank {self.source} (source) "
                        f"sends")
        if dest != self.dest:
            self._wrong(f"rank {self.rank} sends to rank {dest}, but dest is rank {self.dest}")
        if tag != self.tag:
            self._wrong(f"rank {self.rank} sends with tag {tag}, but this message's tag is "
                        f"{self.tag}: pass tag=tag to {method}, or rank {self.dest} waits forever")
        self.sent = True

    def _check_recv(self, method, source, tag):
        from mpi4py import MPI

        if self.rank != self.dest:
            self._wrong(f"rank {self.rank} calls {method}, but only rank {self.dest} (dest) "
                        f"receives")
        if source not in (None, self.source, MPI.ANY_SOURCE):
            self._wrong(f"rank {self.rank} receives from rank {source}, but the message comes from "
                        f"rank {self.source} (source): it would wait forever")
        if tag is None or tag == MPI.ANY_TAG:
            self._wrong(f"rank {self.rank} calls {method} without tag={self.tag}: it would take "
                        f"the next message from rank {self.source} whatever its tag, maybe "
                        f"another micro-batch's")
        if tag != self.tag:
            self._wrong(f"rank {self.rank} waits for tag {tag}, but the message has tag "
                        f"{self.tag}: it would wait forever")
        self.received = True


class PatientRequest:
    """A receive that gives up after RECV_PATIENCE seconds instead of waiting forever."""

    def __init__(self, request, watched):
        self.request, self.watched = request, watched

    def Wait(self, status=None):
        give_up = time.monotonic() + RECV_PATIENCE
        try:
            while not self.request.Test(status):
                if time.monotonic() > give_up:
                    w = self.watched
                    w.waited = (f"rank {w.rank} waited {RECV_PATIENCE:g} s for the message from "
                                f"rank {w.source} with tag {w.tag}, and it never came")
                    raise NeverArrived(w.waited)
                time.sleep(0.001)
        finally:
            if not self.request.Test():   # gave up (or was stopped): take the receive back
                self.request.Cancel()
                self.request.Wait()

    wait = Wait

    def Test(self, status=None):
        return self.request.Test(status)

    test = Test


def check_send_recv_case(module, comm, source, dest, tag, shape, dtype):
    """Run one pass_activation on this rank and check what it did and returned."""
    import numpy as np

    rank = comm.Get_rank()
    sent = ((np.arange(math.prod(shape)) + 0.5) * (tag + 1)).reshape(shape).astype(dtype)
    array = sent.copy() if rank == source else np.full(shape, -1, dtype)
    text = f"pass_activation(comm, array, source={source}, dest={dest}, tag={tag})"
    watched = WatchedComm(comm, source, dest, tag)
    got = None
    try:
        got = call(module, "pass_activation", watched, array, source, dest, tag)
    except Wrong:
        if not (watched.problem or watched.waited):
            raise
    if watched.problem:
        raise Wrong(f"{text}: {watched.problem}")
    if watched.waited:
        raise NeverArrived(f"{text}: {watched.waited}")
    if rank == source and not watched.sent:
        raise Wrong(f"{text}: rank {rank} returned without calling Send; rank {dest} would wait "
                    f"forever")
    if rank != dest:
        if got is not None:
            raise Wrong(f"{text} returned {short(got)} on rank {rank}: only rank {dest} (dest) "
                        f"returns the array, the others return None")
        return
    if not watched.received:
        raise Wrong(f"{text}: rank {rank} returned without calling Recv")
    if not isinstance(got, np.ndarray):
        raise Wrong(f"{text} returned {short(got)} on rank {rank}: expected the NumPy array "
                    f"received")
    if got.dtype != sent.dtype or got.shape != sent.shape:
        raise Wrong(f"{text}: rank {source} sent {sent.dtype} of shape {sent.shape}, rank {dest} "
                    f"returned {got.dtype} of shape {got.shape}: make the buffer like `array` "
                    f"(numpy.empty_like)")
    if not np.array_equal(got, sent):
        raise Wrong(f"{text}: rank {dest} returned other values than rank {source} sent "
                    f"({got.ravel()[:3]}... instead of {sent.ravel()[:3]}...)")


def send_recv_step(source, dest, tag, shape, dtype):
    def check(module, comm):
        check_send_recv_case(module, comm, source, dest, tag, shape, dtype)
    return Step(f"passes_{dtype}_from_rank_{source}_to_rank_{dest}", 1, check)


SEND_RECV_STEPS = [send_recv_step(*case) for case in SEND_RECV_CASES]
