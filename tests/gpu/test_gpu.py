"""The GPU path: CuPy-resident weights, CUDA-aware or host-staged messages.

Skipped, with the reason, where CuPy or a GPU is missing (CI has none). On a
GPU machine: `python -m pytest -q tests/gpu` (it starts its own mpiexec runs).
"""

import json
import subprocess
import sys

import pytest

from mpipipe.launcher import mpiexec_command


def _gpu_problem():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy sees no GPU"
    except Exception as error:
        return f"no usable GPU: {error}"
    return None


pytestmark = pytest.mark.skipif(_gpu_problem() is not None, reason=str(_gpu_problem()))

MODEL = ["--data", "teacher", "--input-dim", "64", "--output-dim", "64", "--hidden", "64",
         "--layers", "4", "--global-batch", "64", "--microbatches", "4", "--steps", "4",
         "--optimizer", "sgd", "--quiet", "--json"]


def train(ranks, *args, env=None):
    import os

    done = subprocess.run([*mpiexec_command(ranks), sys.executable, "-m", "mpipipe", "train",
                           *MODEL, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "zb-h1"])
@pytest.mark.parametrize("ranks", [2, 4])
def test_on_the_gpu_the_pipeline_equals_one_process(schedule, ranks):
    summary = train(ranks, "--device", "gpu", "--schedule", schedule, "--check")
    assert summary["check"]["passed"], summary["check"]
    assert all(d.startswith("gpu") for d in summary["device"])


def _cuda_aware_problem():
    """Why device pointers cannot go to this MPI library, or None."""
    import os

    from mpi4py import MPI  # noqa: F401  (loads libmpi, which the query looks for)

    from mpipipe.transport import query_mpi_library

    if os.environ.get("MPIPIPE_CUDA_AWARE") == "1":
        return None
    aware, how = query_mpi_library()
    return None if aware else f"the MPI library is not known to be CUDA-aware ({how})"


def test_staged_and_cuda_aware_give_the_same_numbers():
    # A device pointer given to an MPI that is not CUDA-aware ends in a segmentation
    # fault, so this needs a CUDA-aware library (the PyPI MPICH wheel is not one).
    problem = _cuda_aware_problem()
    if problem:
        pytest.skip(problem + "; MPIPIPE_CUDA_AWARE=1 forces the test")
    staged = train(2, "--device", "gpu", "--transport", "staged")
    direct = train(2, "--device", "gpu", env={"MPIPIPE_CUDA_AWARE": "1"})
    assert staged["transport"][0].startswith("staged") and direct["transport"][0].startswith("direct")
    assert staged["losses"] == direct["losses"]


def test_no_weights_leave_the_gpu_during_a_step(monkeypatch):
    """During steps, only the per-step scalars come back: the loss and the NaN flags."""
    import cupy
    from mpi4py import MPI

    from mpipipe.config import TrainConfig
    from mpipipe.engine import Engine
    from mpipipe.train import run_training

    copied = []
    original_get, original_run_step = cupy.ndarray.get, Engine.run_step
    in_step = []

    def counting_get(self, *args, **kwargs):
        if in_step:
            copied.append(self.size)
        return original_get(self, *args, **kwargs)

    def run_step(self, *args, **kwargs):
        in_step.append(True)
        try:
            return original_run_step(self, *args, **kwargs)
        finally:
            in_step.clear()

    monkeypatch.setattr(cupy.ndarray, "get", counting_get)
    monkeypatch.setattr(Engine, "run_step", run_step)
    run_training(TrainConfig(device="gpu", data="teacher", input_dim=64, output_dim=64,
                             hidden=64, layers=2, steps=3, microbatches=4, global_batch=64),
                 MPI.COMM_SELF)
    assert copied and max(copied) < 64 * 64      # never a weight matrix, only small flags
