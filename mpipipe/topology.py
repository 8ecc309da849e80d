"""The rank grid of a pipeline x data-parallel run, built with Comm.Split.

Layout (a choice that is hard to undo, so here is why):

    world rank = dp_index * pp + pp_index

                 stage 0   stage 1   stage 2   stage 3      <- pipeline communicator
    replica 0:   rank 0    rank 1    rank 2    rank 3          (one per replica)
    replica 1:   rank 4    rank 5    rank 6    rank 7
                   ^ data-parallel communicator (one per stage)

The stages of one replica have consecutive world ranks. Launchers place
consecutive ranks on the same node, so the pipeline's frequent point-to-point
messages (every micro-batch, both directions) stay inside a node, while the
data-parallel all-reduce (once per step) crosses nodes. With pp = 1 this is
plain data parallelism; with dp = 1, a plain pipeline.
"""

from dataclasses import dataclass

from .errors import ConfigError


@dataclass
class Topology:
    pp: int
    dp: int
    world_rank: int
    pp_index: int           # which stage (rank within the pipeline communicator)
    dp_index: int           # which replica (rank within the data-parallel communicator)
    world: object = None    # the communicators, None when only planning
    pipe: object = None
    data: object = None
    node: object = None     # the ranks sharing this rank's node (Split_type SHARED)


def world_rank_of(pp_index, dp_index, pp):
    return dp_index * pp + pp_index


def check_grid(world_size, pp, dp):
    """(pp, dp) for `world_size` ranks, pp = None meaning all ranks / dp; the one check
    that the grid fits the world (ConfigError naming the size it needs if not)."""
    if dp < 1:
        raise ConfigError(f"--dp must be at least 1, got {dp}")
    if pp is None:
        if world_size % dp:
            raise ConfigError(f"{world_size} ranks cannot be split into dp={dp} replicas")
        pp = world_size // dp
    if pp < 1:
        raise ConfigError(f"--pp must be at least 1, got {pp}")
    if pp * dp != world_size:
        raise ConfigError(
            f"{world_size} MPI rank(s) cannot form a pp={pp} x dp={dp} grid, which needs "
            f"{pp * dp}: launch with mpiexec -n {pp * dp}, or change --pp/--dp")
    return pp, dp


def build(comm, pp, dp):
    """Split `comm` into the pipeline and data-parallel communicators of this rank
    (the grid is checked by config.prepare before any MPI call)."""
    rank = comm.Get_rank()
    dp_index, pp_index = divmod(rank, pp)
    pipe = comm.Split(color=dp_index, key=pp_index)
    data = comm.Split(color=pp_index, key=dp_index)
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    return Topology(pp, dp, rank, pp_index, dp_index, comm, pipe, data, node)


def grid(pp, dp):
    """The picture above, for any pp x dp (what `mpipipe topology` prints)."""
    cell = max(8, len(f"rank {pp * dp - 1}") + 2)
    lines = [" " * 12 + "".join(f"stage {s}".ljust(cell) for s in range(pp))
             + "<- pipeline communicator (Send/Recv)"]
    for d in range(dp):
        cells = "".join(f"rank {world_rank_of(s, d, pp)}".ljust(cell) for s in range(pp))
        lines.append(f"replica {d}:".ljust(12) + cells)
    lines.append(" " * 12 + "^ each column: a data-parallel communicator (Allreduce of gradients)")
    lines.append(f"world rank = dp_index * {pp} + pp_index; {pp * dp} ranks in all")
    return "\n".join(line.rstrip() for line in lines)
