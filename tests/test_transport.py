"""Choosing how arrays reach MPI, and the host-staged path, on a machine without a GPU."""

import numpy as np
import pytest

from mpipipe.errors import ConfigError
from mpipipe.config import TrainConfig, prepare
from mpipipe.comm.transport import HostStaging, choose, query_mpi_library


def test_cpu_arrays_go_to_mpi_as_they_are():
    assert choose("auto", "cpu")[0] == "direct"
    assert choose("cuda-aware", "cpu")[0] == "direct"
    assert choose("staged", "cpu")[0] == "staged"      # to exercise the staging path


def test_the_override_beats_everything(monkeypatch):
    monkeypatch.setenv("MPIPIPE_CUDA_AWARE", "1")
    assert choose("staged", "gpu") == ("direct", "MPIPIPE_CUDA_AWARE=1")
    monkeypatch.setenv("MPIPIPE_CUDA_AWARE", "0")
    assert choose("cuda-aware", "gpu") == ("staged", "MPIPIPE_CUDA_AWARE=0")


def test_an_explicit_choice_then_the_library(monkeypatch):
    monkeypatch.delenv("MPIPIPE_CUDA_AWARE", raising=False)
    assert choose("cuda-aware", "gpu")[0] == "direct"
    assert choose("staged", "gpu")[0] == "staged"
    with pytest.raises(ConfigError, match="unknown transport"):   # refused before MPI starts
        prepare(TrainConfig(transport="carrier-pigeon"), 1)


def test_the_pip_mpich_says_it_is_not_cuda_aware(monkeypatch):
    """The PyPI MPICH wheel is built without CUDA, and says so through MPIX_GPU_query_support."""
    from mpi4py import MPI  # noqa: F401  (loads libmpi)

    monkeypatch.delenv("MPICH_GPU_SUPPORT_ENABLED", raising=False)
    monkeypatch.delenv("MV2_USE_CUDA", raising=False)
    monkeypatch.delenv("MPIPIPE_CUDA_AWARE", raising=False)
    aware, how = query_mpi_library()
    assert aware is False and how == "MPIX_GPU_query_support"
    assert choose("auto", "gpu")[0] == "staged"


def test_an_environment_hint_does_not_override_a_library_that_says_no(monkeypatch):
    """A module file may export MPICH_GPU_SUPPORT_ENABLED=1 on an MPI built without CUDA:
    the library's own answer wins; the hint only speaks for a library that cannot be asked."""
    from mpi4py import MPI  # noqa: F401  (loads the PyPI MPICH, which answers "no")

    from mpipipe.comm import transport

    monkeypatch.delenv("MPIPIPE_CUDA_AWARE", raising=False)
    monkeypatch.delenv("MV2_USE_CUDA", raising=False)
    monkeypatch.setenv("MPICH_GPU_SUPPORT_ENABLED", "1")
    if transport.query_mpi_library()[1] == "MPIX_GPU_query_support":
        assert choose("auto", "gpu") == ("staged", "the MPI library is not CUDA-aware "
                                                   "(MPIX_GPU_query_support)")
    monkeypatch.setattr(transport, "_loaded_libmpi", lambda: object())   # cannot be asked
    assert choose("auto", "gpu") == ("direct", "the MPI library is CUDA-aware "
                                               "(MPICH_GPU_SUPPORT_ENABLED=1, and the library "
                                               "cannot be asked)")
    monkeypatch.delenv("MPICH_GPU_SUPPORT_ENABLED")
    assert choose("auto", "gpu")[0] == "staged"


def test_staging_round_trip_reuses_buffers():
    staging = HostStaging()
    array = np.arange(6.0).reshape(2, 3)
    host = staging.down(array)
    assert host is not array and np.array_equal(host, array)
    target = np.zeros_like(array)
    staging.up(host, target)
    assert np.array_equal(target, array)
    assert staging.plain.take((2, 3), array.dtype) is host      # given back, taken again


def test_without_cupy_gpu_is_refused_with_the_install_line_and_auto_takes_the_cpu():
    import importlib.util

    from mpipipe.comm.backend import select_device

    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here")
    with pytest.raises(ConfigError, match=r"pip install 'mpipipe\[gpu\]'"):
        select_device("gpu", 0)
    device, xp, why = select_device("auto", 0)
    assert device == "cpu" and xp is np and why == "CuPy is not installed"
