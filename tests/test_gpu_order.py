"""The GPU path's order of operations, checked on any machine with a CuPy stand-in.

Each test is one rule of transport.py, and fails if the rule is broken: the
stand-in (tests/cupy_standin.py) runs queued device work only when it is
waited for, so a buffer reused too early delivers the wrong message. The
numbers on a real GPU are checked by tests/gpu.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from mpipipe.comm.launcher import mpiexec_command
from mpipipe.comm.p2p import BufferPool, PointToPoint, Waiter, allreduce_sum
from mpipipe.comm.transport import HostStaging

from . import cupy_standin


@pytest.fixture
def cupy(monkeypatch):
    module, pinned = cupy_standin.install(monkeypatch)
    module.pinned = pinned
    return module


def test_staged_receives_back_to_back_each_keep_their_message(cupy):
    """GPipe's last stage receives m activations in a row: the host buffer of the first
    must not take the second message before its copy up to the device has run."""
    first, second = np.full(4, 1.0), np.full(4, 2.0)
    p2p = PointToPoint(cupy_standin.Messages([first, second]), Waiter(), "staged")
    a, b = cupy.empty((4,)), cupy.empty((4,))
    p2p.recv(a, 0, 1)
    p2p.recv(b, 0, 2)
    cupy_standin.stream().synchronize()
    assert np.array_equal(a.data, first) and np.array_equal(b.data, second)


def test_a_cuda_aware_receive_waits_for_the_kernels_reading_its_buffer(cupy):
    """A receive buffer given back while kernels queued to read it have not run yet must
    not be handed to the next receive before they have."""
    first, second = np.full(4, 1.0), np.full(4, 2.0)
    p2p = PointToPoint(cupy_standin.Messages([first, second]), Waiter(), "direct")
    pool = BufferPool(cupy)
    buffer = pool.take((4,), np.float64)
    p2p.recv(buffer, 0, 1)
    seen = []
    cupy_standin.stream().enqueue(lambda: seen.append(buffer.data.copy()))   # F reads it
    pool.give_back(buffer)
    again = pool.take((4,), np.float64)
    assert again is buffer                                  # reused, not reallocated
    p2p.recv(again, 0, 2)
    cupy_standin.stream().synchronize()
    assert np.array_equal(seen[0], first)


def test_a_device_buffer_is_sent_only_once_the_work_writing_it_has_run(cupy):
    comm = cupy_standin.Messages()
    array = cupy.empty((4,))
    array.set(np.ones(4))                                   # queued, not yet run
    PointToPoint(comm, Waiter(), "direct").send(array, 1, 0)
    assert comm.calls == [("Isend", "cupy", True)]          # the stream was idle by then


def test_device_gradients_are_reduced_with_what_cuda_aware_mpi_supports(cupy):
    """Open MPI lists the non-blocking collectives as unsupported on device memory:
    direct device buffers take the blocking Allreduce (after their stream finished),
    staged ones a non-blocking one on the host copy."""
    comm = cupy_standin.Messages()
    grads = cupy.empty((3,))
    grads.set(np.arange(3.0))
    allreduce_sum(comm, grads, Waiter())
    assert comm.calls == [("Allreduce", "cupy", True)]
    comm.calls.clear()
    allreduce_sum(comm, grads, Waiter(), HostStaging())
    assert comm.calls == [("Iallreduce", "numpy", True)]
    cupy_standin.stream().synchronize()
    assert np.array_equal(grads.data, np.arange(3.0))
    comm.calls.clear()
    host = np.arange(3.0)
    allreduce_sum(comm, host, Waiter())
    assert comm.calls == [("Iallreduce", "numpy", True)]


def test_a_cpu_run_never_allocates_pinned_memory(cupy):
    """--device cpu --transport staged must not make a CUDA context (or fail without a
    driver): page-locked buffers are for staging a GPU's arrays only."""
    p2p = PointToPoint(cupy_standin.Messages([np.ones(4)]), Waiter(), "staged")
    p2p.send(np.zeros(4), 1, 0)
    p2p.recv(np.zeros(4), 0, 1)
    p2p.finish()
    assert cupy.pinned == []
    p2p.send(cupy.empty((4,)), 1, 0)
    assert cupy.pinned == [4 * 8]


PICK_DEVICE = r"""
import json, sys
import mpipipe.comm.backend as backend
seen = []
real = backend.select_device
def recording(requested, local_rank):
    seen.append(["mpi4py.MPI" in sys.modules, local_rank])
    return real("cpu", local_rank)      # no GPU needed: the order is what is checked
backend.select_device = recording
from mpipipe.cli import main
main(["train", "--device", "auto", "--steps", "1", "--quiet", "--layers", "2"])
sys.stdout.write("calls " + json.dumps(seen) + "\n")   # one write: ranks' lines stay whole
"""


def test_the_gpu_is_chosen_before_mpi_starts():
    """Open MPI (smcuda, PSM2) wants the device set before MPI_Init: `mpipipe train`
    picks it from the launcher's local rank before mpi4py initialises MPI."""
    done = subprocess.run([*mpiexec_command(2), sys.executable, "-c", PICK_DEVICE],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MPIPIPE_PROGRESS": "0"})
    assert done.returncode == 0, done.stderr
    calls = [json.loads(found) for found in re.findall(r"calls (\[\[.*?\]\])", done.stdout)]
    assert sorted(call[0] for call in calls) == [[False, 0], [False, 1]]


def test_the_gpu_suite_fails_instead_of_skipping_when_a_gpu_is_required():
    """MPIPIPE_REQUIRE_GPU=1 on a machine without a GPU: every GPU test fails, saying why."""
    from .gpu.test_gpu import PROBLEM

    if PROBLEM is None:
        pytest.skip("this machine has a GPU: tests/gpu runs for real here")
    gpu = os.path.join(os.path.dirname(__file__), "gpu")
    lenient = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              gpu], capture_output=True, text=True, timeout=120,
                             env={k: v for k, v in os.environ.items()
                                  if k != "MPIPIPE_REQUIRE_GPU"})
    assert lenient.returncode == 0 and " skipped" in lenient.stdout, lenient.stdout
    strict = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             gpu], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "MPIPIPE_REQUIRE_GPU": "1"})
    assert strict.returncode == 1 and " skipped" not in strict.stdout, strict.stdout
    assert f"MPIPIPE_REQUIRE_GPU=1, but {PROBLEM}" in strict.stdout
