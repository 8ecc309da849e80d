"""The job around a rank: what the launcher says, and ending the whole job.

A rank can learn its number from the launcher's environment before MPI
starts (usage errors are printed by one rank only), check that mpiexec and
mpi4py come from the same MPI library, and, when something goes wrong, end
every rank of the job with its message printed once (`abort`).
"""

import os
import sys
import time

from .errors import ConfigError

LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS")
LAUNCHER_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID")
ABORT_GRACE_S = 1.0


def launcher_rank():
    """This process's rank as the launcher told it, without starting MPI (None if unknown)."""
    for name in LAUNCHER_RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return None


def check_launcher(world_size):
    """Catch N separate one-rank jobs started by a launcher from another MPI library."""
    for name in LAUNCHER_SIZE_VARIABLES:
        told = os.environ.get(name, "")
        if told.isdigit() and int(told) != world_size:
            raise ConfigError(
                f"the launcher started {told} processes ({name}) but MPI sees {world_size}: "
                f"mpiexec and mpi4py come from different MPI libraries. Use the mpiexec of "
                f"the MPI that mpi4py loads (python -m mpi4py --mpi-lib-version tells which)")


def abort(comm, code, message):
    """Print `message` once from this rank and end every rank of the job (nobody waits forever).

    The message travels from this process's stderr through the launcher's I/O
    forwarding (MPICH: a proxy per node, then mpiexec). MPI_Abort makes the
    launcher tear that chain down, and on a loaded machine it can do so before
    the message has passed: the job then ends with the right exit status and no
    word of why. Waiting a moment before Abort lets the message through.
    """
    sys.stderr.write(message)
    sys.stderr.flush()
    time.sleep(ABORT_GRACE_S)
    comm.Abort(code)
    os._exit(code)      # Abort may return before the launcher has ended this process
