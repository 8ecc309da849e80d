"""The rank grid of a tensor x pipeline x data-parallel run, built with Comm.Split.

Layout (a choice that is hard to undo, so here is why):

    world rank = (dp_index * pp + pp_index) * tp + tp_index

Without tensor parallelism (tp = 1) this is dp_index * pp + pp_index:

                 stage 0   stage 1   stage 2   stage 3      <- pipeline communicator
    replica 0:   rank 0    rank 1    rank 2    rank 3          (one per replica)
    replica 1:   rank 4    rank 5    rank 6    rank 7
                   ^ data-parallel communicator (one per stage)

With tp = 2, pp = 2, dp = 2 every stage is held by a tensor group of 2 ranks,
each holding half of every layer's matrices ([ ] below):

                 stage 0     stage 1
    replica 0:   [ 0  1 ]    [ 2  3 ]     tensor groups   0 1 | 2 3 | 4 5 | 6 7
    replica 1:   [ 4  5 ]    [ 6  7 ]     pipelines       0 2 | 1 3 | 4 6 | 5 7
                                          data-parallel   0 4 | 1 5 | 2 6 | 3 7

Tensor parallelism varies fastest, then the stage, then the replica, as in
Megatron-LM. Launchers place consecutive ranks on the same node, so the most
frequent talk stays the most local: a tensor group all-reduces inside every
layer, forward and backward, and sits on one node; a pipeline sends one
activation per micro-batch at each stage boundary and stays on a node where it
fits; the data-parallel all-reduce (once per step) crosses nodes. A pipeline
communicator joins the ranks of one replica with the same tensor index: shard
t of a stage hands its (whole, replicated) activation to shard t of the next.
A data-parallel communicator joins the ranks holding the same shard of the
same stage in every replica. With tp = pp = 1 this is plain data parallelism.
"""

from dataclasses import dataclass

from mpipipe.errors import ConfigError


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
    tp: int = 1
    tp_index: int = 0       # which shard of its stage (rank within the tensor communicator)
    tensor: object = None   # the tp ranks holding the shards of this rank's stage


def world_rank_of(pp_index, dp_index, pp, tp_index=0, tp=1):
    return (dp_index * pp + pp_index) * tp + tp_index


def coordinates(world_rank, tp, pp):
    """(tp_index, pp_index, dp_index) of `world_rank`: the layout formula undone."""
    rest, tp_index = divmod(world_rank, tp)
    dp_index, pp_index = divmod(rest, pp)
    return tp_index, pp_index, dp_index


def colours(world_rank, tp, pp):
    """The Comm.Split colours of `world_rank`: ranks with equal colours share a communicator."""
    tp_index, pp_index, dp_index = coordinates(world_rank, tp, pp)
    return {"tensor": dp_index * pp + pp_index,      # the shards of one stage of one replica
            "pipe": dp_index * tp + tp_index,        # one shard index, every stage, one replica
            "data": pp_index * tp + tp_index}        # one shard of one stage, every replica


def check_grid(world_size, pp, dp, tp=1):
    """(pp, dp) for `world_size` ranks, pp = None meaning all ranks / (tp x dp); the one
    check that the grid fits the world (ConfigError naming the size it needs if not)."""
    for name, value in (("tp", tp), ("dp", dp)):
        if value < 1:
            raise ConfigError(f"--{name} must be at least 1, got {value}")
    if pp is None:
        if world_size % (tp * dp):
            raise ConfigError(f"{world_size} ranks cannot be split into dp={dp} replicas"
                              if tp == 1 else f"{world_size} ranks cannot be split into tp={tp} "
                              f"x dp={dp} (their product {tp * dp} must divide the ranks)")
        pp = world_size // (tp * dp)
    if pp < 1:
        raise ConfigError(f"--pp must be at least 1, got {pp}")
    if tp * pp * dp != world_size:
        grid_name = (f"tp={tp} x pp={pp} x dp={dp}" if tp > 1 else f"pp={pp} x dp={dp}")
        raise ConfigError(
            f"{world_size} MPI rank(s) cannot form a {grid_name} grid, which needs "
            f"{tp * pp * dp}: launch with mpiexec -n {tp * pp * dp}, or change "
            f"{'--tp/' if tp > 1 else ''}--pp/--dp")
    return pp, dp


def build(comm, pp, dp, tp=1):
    """Split `comm` into this rank's tensor, pipeline and data-parallel communicators
    (the grid is checked by config.prepare before any MPI call)."""
    rank = comm.Get_rank()
    tp_index, pp_index, dp_index = coordinates(rank, tp, pp)
    colour = colours(rank, tp, pp)
    tensor = comm.Split(color=colour["tensor"], key=tp_index)
    pipe = comm.Split(color=colour["pipe"], key=pp_index)
    data = comm.Split(color=colour["data"], key=dp_index)
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    return Topology(pp, dp, rank, pp_index, dp_index, comm, pipe, data, node, tp, tp_index,
                    tensor)


def communicators(tp, pp, dp):
    """Each kind of communicator as its groups of world ranks, from the same colours
    build() hands to Comm.Split (what `mpipipe topology` prints)."""
    groups = {"tensor": {}, "pipe": {}, "data": {}}
    for rank in range(tp * pp * dp):
        for kind, colour in colours(rank, tp, pp).items():
            groups[kind].setdefault(colour, []).append(rank)
    return {kind: [found[c] for c in sorted(found)] for kind, found in groups.items()}


def grid(pp, dp, tp=1):
    """The picture above, for any tp x pp x dp (what `mpipipe topology` prints)."""
    if tp == 1:
        return _grid_2d(pp, dp)
    size = tp * pp * dp
    digits = len(str(size - 1))
    cell = " ".join(f"{0:>{digits}}" for _ in range(tp))
    width = len(cell) + 4 + 2
    lines = [" " * 12 + "".join(f"stage {s}".ljust(width) for s in range(pp))]
    for d in range(dp):
        cells = ("[ " + " ".join(f"{world_rank_of(s, d, pp, t, tp):>{digits}}"
                                 for t in range(tp)) + " ]" for s in range(pp))
        lines.append(f"replica {d}:".ljust(12) + "".join(c.ljust(width) for c in cells))
    groups = communicators(tp, pp, dp)
    described = {"tensor": f"[ ]: a tensor group, the {tp} shards of one stage (Allreduce in "
                           f"every layer, forward and backward)",
                 "pipe": "pipelines: one shard index of every stage of a replica (Send/Recv "
                         "of activations and gradients)",
                 "data": "data-parallel: one shard of one stage in every replica (Allreduce "
                         "of gradients, once per step)"}
    lines.append("")
    for kind in ("tensor", "pipe", "data"):
        lines.append(described[kind])
        lines += _wrapped([" ".join(map(str, group)) for group in groups[kind]])
    lines.append(f"world rank = (dp_index * {pp} + pp_index) * {tp} + tp_index; "
                 f"tp={tp} x pp={pp} x dp={dp} = {size} ranks")
    return "\n".join(line.rstrip() for line in lines)


def _wrapped(groups, width=88):
    """Groups joined by ' | ', indented, cut into lines between groups."""
    lines = [""]
    for group in groups:
        if lines[-1] and len(lines[-1]) + 3 + len(group) > width - 4:
            lines.append("")
        lines[-1] += (" | " if lines[-1] else "") + group
    return ["    " + line for line in lines]


def _grid_2d(pp, dp):
    cell = max(8, len(f"rank {pp * dp - 1}") + 2)
    lines = [" " * 12 + "".join(f"stage {s}".ljust(cell) for s in range(pp))
             + "<- pipeline communicator (Send/Recv)"]
    for d in range(dp):
        cells = "".join(f"rank {world_rank_of(s, d, pp)}".ljust(cell) for s in range(pp))
        lines.append(f"replica {d}:".ljust(12) + cells)
    lines.append(" " * 12 + "^ each column: a data-parallel communicator (Allreduce of gradients)")
    lines.append(f"world rank = dp_index * {pp} + pp_index; {pp * dp} ranks in all")
    return "\n".join(line.rstrip() for line in lines)
