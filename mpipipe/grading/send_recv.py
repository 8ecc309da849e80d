"""Exercise 6: Send and Recv, graded under `mpiexec -n 2` with every message watched."""

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .base import Result, Wrong, call, load_exercise, short

# -- ex6: Send and Recv, under mpiexec -n 2 -------------------------------------------------

# (source, dest, tag, shape, dtype): one case per point. The second goes the
# other way and in float32, so a hard-coded rank or a float64 buffer shows.
SEND_RECV_CASES = [
    (0, 1, 7, (4, 3), "float64"),
    (1, 0, 3, (2, 5), "float32"),
]
RANKS = 2


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
        return self._comm.Recv(buf, self._any_source(source), tag, status)

    def Irecv(self, buf, source=None, tag=None):
        self._check_recv("Irecv", source, tag)
        return self._comm.Irecv(buf, self._any_source(source), tag)

    @staticmethod
    def _any_source(source):
        from mpi4py import MPI

        return MPI.ANY_SOURCE if source is None else source

    def _lowercase(self, *args, **kwargs):
        self._wrong("use the uppercase Send and Recv: lowercase send/recv pickle the array into "
                    "a Python object, Send and Recv hand MPI the array's own memory")

    send = recv = isend = irecv = sendrecv = _lowercase

    def __getattr__(self, name):   # Get_rank, Get_size, ...: the real communicator's
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
        if not watched.problem:
            raise
    if watched.problem:
        raise Wrong(f"{text}: {watched.problem}")
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


def grade_send_recv_on_this_rank(path, verdict_folder):
    """What each rank runs under mpiexec: the cases in step with the other rank, verdict to a file.

    After each case the ranks agree whether all passed, so they stop at the
    same case and the verdict names the first case that failed on any rank.
    """
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    verdict = Path(verdict_folder) / f"rank{comm.Get_rank()}"
    passed, feedback = 0, None
    try:
        module = load_exercise(path)
    except Wrong as wrong:
        feedback = str(wrong)
    write_verdict(verdict, passed, feedback)
    for case in SEND_RECV_CASES:
        if feedback is None:
            try:
                check_send_recv_case(module, comm, *case)
            except Wrong as wrong:
                feedback = str(wrong)
                write_verdict(verdict, passed, feedback)
        if not every_rank_passed(comm, feedback is None):
            break
        passed += 1
        write_verdict(verdict, passed, feedback)
    return 0


def write_verdict(verdict, passed, feedback):
    verdict.with_suffix(".tmp").write_text(json.dumps({"passed": passed, "feedback": feedback}))
    verdict.with_suffix(".tmp").replace(verdict.with_suffix(".json"))   # whole, even if killed next


def every_rank_passed(comm, passed, grace=2.0):
    """True if every rank passed the case. A rank that failed waits `grace` seconds for
    the others, then ends the job: one of them may wait for a message it never sent."""
    import time

    import numpy as np
    from mpi4py import MPI

    mine, everyone = np.array([int(passed)]), np.zeros(1, dtype=int)
    request = comm.Iallreduce(mine, everyone, op=MPI.MIN)
    give_up = time.monotonic() + grace
    while not request.Test():
        if not passed and time.monotonic() > give_up:
            comm.Abort(1)
        time.sleep(0.001)
    return bool(everyone[0])


def find_mpiexec():
    """The mpiexec next to this Python (the MPI wheel in a venv puts it there), else on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


def grade_send_recv(exercise, path, seconds):
    """Run the checks under `mpiexec -n 2`, stopped after `seconds`: never a hung grader."""
    mpiexec = find_mpiexec()
    if mpiexec is None:
        return Result(exercise.name, 0, exercise.max_points,
                      "cannot grade: no mpiexec next to this Python or on PATH "
                      "(install the project with its MPI: pip install -e '.[mpich]')")
    verdict_folder = tempfile.mkdtemp(prefix="mpipipe-grade-")
    command = [mpiexec, "-n", str(RANKS), sys.executable, "-m", "mpipipe.grade",
               "--under-mpi", str(path), verdict_folder]
    if shutil.which("timeout"):   # ends the MPI job the clean way (SIGTERM to mpiexec)
        command = ["timeout", "-k", "5", f"{seconds:g}"] + command
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent.parent),
                                                      env.get("PYTHONPATH")]))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 10,
                              env=env, stdin=subprocess.DEVNULL)
        errors, timed_out = done.stderr, done.returncode in (124, 137)
    except subprocess.TimeoutExpired:
        errors, timed_out = "", True
    verdicts = [json.loads(file.read_text())
                for file in sorted(Path(verdict_folder).glob("rank*.json"))]
    shutil.rmtree(verdict_folder, ignore_errors=True)
    failures = sorted((v["passed"], v["feedback"]) for v in verdicts if v["feedback"])
    if failures:   # the earliest case that failed on any rank
        passed, feedback = failures[0]
        return Result(exercise.name, passed, exercise.max_points, feedback)
    passed = min(v["passed"] for v in verdicts) if len(verdicts) == RANKS else 0
    if timed_out:
        return Result(exercise.name, passed, exercise.max_points,
                      f"pass_activation did not finish within {seconds:g} s under mpiexec -n "
                      f"{RANKS}: some rank is waiting for a message that never comes")
    if len(verdicts) < RANKS:
        last = (errors.strip().splitlines() or ["no output"])[-1]
        return Result(exercise.name, 0, exercise.max_points, f"the MPI run failed: {last}")
    return Result(exercise.name, passed, exercise.max_points)
