"""Shared test setup.

Under `--with-mpi` (pytest-mpi), a failure on one rank must not leave the
other ranks waiting in a collective forever: the failing rank prints its report
and aborts the whole MPI job. The MPI tests also make every verdict collective
(all ranks assert the same thing), so usually all ranks fail together anyway.
"""

import sys
import time

import pytest

import mpipipe  # noqa: F401  (one BLAS thread per process, before NumPy loads)


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    """Under --with-mpi only rank 0 reports; the others speak up only to fail (below)."""
    if config.getoption("with_mpi", default=False):
        from mpi4py import MPI

        if MPI.COMM_WORLD.Get_rank() > 0:
            reporter = config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                config.pluginmanager.unregister(reporter)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and item.config.getoption("with_mpi", default=False):
        from mpi4py import MPI

        rank = MPI.COMM_WORLD.Get_rank()
        sys.stderr.write(f"\n[rank {rank}] {item.nodeid} failed:\n{report.longreprtext}\n"
                         f"[rank {rank}] aborting the MPI job so no rank hangs\n")
        sys.stderr.flush()
        time.sleep(1.0)     # let the launcher forward the report before Abort tears it down
        MPI.COMM_WORLD.Abort(1)
