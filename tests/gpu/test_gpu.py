"""The GPU path on a real GPU: CuPy-resident weights, staged or CUDA-aware messages.

Every test trains under mpiexec with `--device gpu` and checks against the
one-process run (`--check`), or counts what crosses between host and device.
Without a usable GPU the tests skip with the reason (CI has none);
MPIPIPE_REQUIRE_GPU=1 turns every such skip into a failure, so a GPU machine
cannot pass by skipping. `tests/gpu/run_on_gpu.sh` runs them all there.

The CUDA-aware comparison is marked `cuda_aware`: it needs an MPI built with
CUDA (a device pointer given to one that is not ends in a segmentation fault),
which the PyPI wheels are not.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mpipipe.comm.launcher import mpiexec_command

HERE = Path(__file__).resolve().parent
REQUIRED = os.environ.get("MPIPIPE_REQUIRE_GPU") == "1"


def gpu_problem():
    """Why there is no GPU to test on, or None."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy sees no GPU"
    except Exception as error:
        return f"no usable GPU: {error}"
    return None


PROBLEM = gpu_problem()


@pytest.fixture(autouse=True)
def a_gpu():
    if PROBLEM:
        if REQUIRED:
            pytest.fail(f"MPIPIPE_REQUIRE_GPU=1, but {PROBLEM}")
        pytest.skip(PROBLEM)


MLP = ["--data", "teacher", "--input-dim", "64", "--output-dim", "64", "--hidden", "64",
       "--layers", "8", "--global-batch", "64", "--microbatches", "4", "--steps", "3",
       "--dtype", "float64", "--quiet", "--json"]
GPT = ["--model", "gpt", "--layers", "2", "--hidden", "32", "--heads", "4", "--dtype",
       "float64", "--global-batch", "16", "--microbatches", "4", "--steps", "3", "--quiet",
       "--json"]


def train(ranks, *args, env=None):
    done = subprocess.run([*mpiexec_command(ranks), sys.executable, "-m", "mpipipe", "train",
                           "--device", "gpu", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    summary = json.loads(done.stdout.splitlines()[-1])
    assert all(d.startswith("gpu") for d in summary["device"]), summary["device"]
    return summary


def checked(summary):
    assert summary["check"]["passed"], summary["check"]
    return summary


@pytest.mark.parametrize("schedule,extra", [
    ("1f1b", ["--optimizer", "adam"]),
    ("zb-h1", ["--optimizer", "sgd"]),
    ("interleaved", ["--optimizer", "sgd", "--chunks", "2"]),
    ("zbv", ["--optimizer", "adam"]),
    ("1f1b", ["--optimizer", "sgd", "--recompute"]),
])
def test_the_mlp_on_the_gpu_equals_one_process(schedule, extra):
    checked(train(2, *MLP, "--schedule", schedule, *extra, "--check"))


def test_the_gpt_on_the_gpu_equals_one_process():
    """Embedding (a scatter-add), attention, LayerNorm, cross-entropy, Adam."""
    checked(train(2, *GPT, "--schedule", "1f1b", "--check"))


@pytest.mark.parametrize("transport", ["staged", "auto"])
def test_tensor_parallel_on_the_gpu_equals_one_process(transport):
    """The tensor all-reduces on device arrays: staged through the host, or (auto, where the
    MPI is CUDA-aware) the blocking Allreduce on device memory; tp 2 x pp 2, zb-h1."""
    summary = checked(train(4, *GPT, "--tp", "2", "--pp", "2", "--schedule", "zb-h1",
                            "--transport", transport, "--check"))
    assert summary["tensor_allreduces_per_step"] == [16, 16, 16, 16]


def test_pipeline_times_data_parallel_on_the_gpu_equals_one_process():
    checked(train(4, *MLP, "--pp", "2", "--dp", "2", "--optimizer", "adam", "--check"))


def test_float32_on_the_gpu_stays_within_its_tolerance():
    summary = checked(train(2, *MLP[:-4], "--dtype", "float32", "--quiet", "--json",
                            "--check"))
    assert summary["check"]["tolerance"] == 1e-4


def test_back_to_back_staged_receives_keep_their_messages():
    """GPipe's last stage receives every activation in a row while the GPU still works on
    the last ones (a light first stage, seven wide layers behind it): a host buffer reused
    before its copy to the device ran would give wrong activations, and --check fails."""
    wide = ["--data", "teacher", "--input-dim", "1024", "--output-dim", "1024", "--hidden",
            "1024", "--layers", "8", "--partition", "1,7", "--global-batch", "256",
            "--microbatches", "16", "--steps", "3", "--dtype", "float64", "--quiet", "--json"]
    summary = checked(train(2, *wide, "--schedule", "gpipe", "--transport", "staged", "--check"))
    assert summary["transport"][0].startswith("staged")


def test_a_checkpoint_written_on_the_gpu_resumes_exactly(tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    train(2, *MLP, "--steps", "4", "--checkpoint-dir", str(whole))
    train(2, *MLP, "--steps", "2", "--checkpoint-dir", str(broken))
    summary = train(2, *MLP, "--steps", "4", "--checkpoint-dir", str(broken), "--resume")
    assert summary["first_step"] == 2
    for name in sorted(os.listdir(whole / "step-00000004")):
        if name.endswith(".npz"):
            with np.load(whole / "step-00000004" / name) as a, \
                    np.load(broken / "step-00000004" / name) as b:
                for key in a.files:
                    assert np.allclose(a[key], b[key], rtol=1e-12, atol=1e-14), (name, key)


def expected_copies(stage, num_stages, microbatches, staged, dp, chunks=1):
    """What crosses between host and device per step on one rank: docs/gpus.md,
    written out. Returns (host to device, device to host)."""
    up = down = 0
    if stage == 0:
        up += microbatches                  # the input micro-batches
    if stage == num_stages - 1:
        up += microbatches                  # the targets
        down += 1                           # the loss, read once per step
    down += 1                               # the NaN flags, read once per step
    if staged:
        neighbours = (stage > 0) + (stage < num_stages - 1)
        up += microbatches * neighbours     # every message received, copied up
        down += microbatches * neighbours   # every message sent, copied down
        if dp > 1:
            up, down = up + chunks, down + chunks     # the gradient, down and back up
    return up, down


def test_what_crosses_between_host_and_device_is_what_the_readme_says(tmp_path):
    """pp=2 x dp=2, staged (the PyPI MPI): every get, set, asnumpy, asarray, float() and
    item() of every step on every rank, counted, against the list in docs/gpus.md."""
    out = tmp_path / "copies.json"
    done = subprocess.run([*mpiexec_command(4), sys.executable, str(HERE / "copy_audit.py"),
                           str(out), "--device", "gpu", "--transport", "staged", *MLP,
                           "--pp", "2", "--dp", "2", "--schedule", "1f1b"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    counts = json.loads(out.read_text())
    for rank in counts:
        stage = rank["pp_index"]
        up, down = expected_copies(stage, 2, 4, staged=True, dp=2)
        assert rank["steps"], rank
        for step in rank["steps"]:
            assert (step["host_to_device"], step["device_to_host"]) == (up, down), (rank, step)


@pytest.mark.cuda_aware
def test_staged_and_cuda_aware_give_the_same_numbers():
    from mpi4py import MPI  # noqa: F401  (loads libmpi, which the query looks for)

    from mpipipe.comm.transport import query_mpi_library

    aware, how = query_mpi_library()
    if not aware and os.environ.get("MPIPIPE_CUDA_AWARE") != "1":
        message = f"the MPI library is not known to be CUDA-aware ({how})"
        if REQUIRED:
            pytest.fail(f"MPIPIPE_REQUIRE_GPU=1, but {message}; deselect with -m 'not "
                        f"cuda_aware' on an MPI without CUDA")
        pytest.skip(message + "; MPIPIPE_CUDA_AWARE=1 forces the test")
    staged = train(2, *MLP, "--transport", "staged")
    direct = train(2, *MLP, "--transport", "cuda-aware")
    assert staged["transport"][0].startswith("staged")
    assert direct["transport"][0].startswith("direct")
    assert staged["losses"] == direct["losses"]
