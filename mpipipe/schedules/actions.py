"""The vocabulary of schedules: actions, and a schedule as per-rank lists of them.

A schedule is plain data. The generators (gpipe.py, one_f_one_b.py, ...) write
the compute actions each rank performs, in order; `lower()` adds the messages;
`validate()` proves the lists can run; the simulator, the MPI engine and the
drawings all read the very same lists.

Compute actions (printed as kind + micro-batch, e.g. F3, BW3):
    F   forward of one micro-batch through the rank's stage
    BW  full backward: input gradient and weight gradient together (GPipe, 1F1B)
    B   input gradient only: the part the previous stage is waiting for
    W   weight gradient only: needed by the optimizer, so it can wait
    R   (traces only) the forward a backward repeats under --recompute
    ALLREDUCE (traces only) a chunk's data-parallel all-reduce, from the moment it
        starts (after the chunk's last weight gradient) until it is complete
The names are the zero-bubble papers'. PyTorch's pipelining names the same
actions differently: its I is our B (the input gradient), its B is our fused
BW, its F and W are ours.
Message actions, added by lower() (printed e.g. SEND_F3->r2, RECV_B3<-r2):
    SEND_F / RECV_F   an activation going forward to the next stage
    SEND_B / RECV_B   a gradient going backward to the previous stage
Markers, read from PyTorch's schedule files (no micro-batch; printed e.g. UNSHARD:1):
    UNSHARD, RESHARD  gather / free a sharded chunk's parameters (FSDP): mpipipe
                      never shards parameters, so these do nothing here
    REDUCE_GRAD       the chunk's gradients are complete: its data-parallel
                      all-reduce may start here instead of at the step's end

Overlapped pairs. DualPipe runs a forward and a backward "overlapped" (F&B),
and PyTorch writes such a pair as one cell, (0F7;7B3)OVERLAP_F_B. mpipipe keeps
the two actions and marks the first with `pairs_with_next`: one process
computes one thing at a time, so the engine runs them one after the other,
but lower() puts the messages of both around the pair, and the timelines draw
the two as one pair (printed F7& BW3:1).

Stages, ranks and chunks. A schedule has `num_ranks` ranks, each holding
`chunks` chunks, so num_ranks * chunks stages in all. A chunk is one of a
rank's stages: the papers call it a virtual stage (hence the option
--virtual-stages, a synonym of --chunks), Megatron-LM a model chunk; here it is
always "chunk", and `Action.chunk` says which of its rank's chunks an action
runs on. The default placement puts stage `chunk * num_ranks + rank` on (rank, chunk),
the looping placement of Megatron-LM's interleaved schedule; with one chunk
per rank, stage s simply lives on rank s. A generator may pass its own
`stage_map` (rank -> list of stage numbers, one per chunk).
"""

from dataclasses import dataclass, field
from typing import NamedTuple

F, BW, B, W = "F", "BW", "B", "W"
RECOMPUTE = "R"
ALLREDUCE = "ALLREDUCE"     # traces only: a chunk's data-parallel all-reduce, start to finish
SEND_F, RECV_F, SEND_B, RECV_B = "SEND_F", "RECV_F", "SEND_B", "RECV_B"
UNSHARD, RESHARD, REDUCE_GRAD = "UNSHARD", "RESHARD", "REDUCE_GRAD"
COMPUTE = (F, BW, B, W)
BACKWARD_INPUT = (BW, B)   # actions that produce the gradient the previous stage needs
STASH_RELEASE = (BW, W)    # actions after which a micro-batch's activations can go
MESSAGES = (SEND_F, RECV_F, SEND_B, RECV_B)
MARKERS = (UNSHARD, RESHARD, REDUCE_GRAD)
_COMPUTED = frozenset(COMPUTE + (RECOMPUTE,))


class Action(NamedTuple):
    """One thing a rank does. A named tuple: plans at scale make a million of them."""

    kind: str
    microbatch: int | None      # None for markers
    chunk: int = 0
    peer: int | None = None
    pairs_with_next: bool = False   # overlapped with the next action (see above)

    @property
    def is_compute(self):
        return self.kind in _COMPUTED

    def __str__(self):
        text = self.kind if self.microbatch is None else f"{self.kind}{self.microbatch}"
        if self.chunk:
            text += f":{self.chunk}"
        if self.pairs_with_next:
            text += "&"
        if self.kind in (SEND_F, SEND_B):
            text += f"->r{self.peer}"
        elif self.kind in (RECV_F, RECV_B):
            text += f"<-r{self.peer}"
        return text

    __repr__ = __str__


class Event(NamedTuple):
    """One action on one rank, from start to end (a receive: the time spent waiting).

    The simulator plans events and the engine measures them; both timelines are
    lists of these, so they are measured and drawn by the same code."""

    rank: int
    action: Action
    start: float
    end: float


@dataclass
class Schedule:
    name: str
    num_ranks: int
    num_microbatches: int
    programs: list            # programs[rank] = [Action, ...] in execution order
    chunks: int = 1
    stage_map: list = None    # stage_map[rank][chunk] = stage number
    lowered: bool = False
    notes: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.stage_map is None:
            self.stage_map = [[c * self.num_ranks + r for c in range(self.chunks)]
                              for r in range(self.num_ranks)]
        self._where = {}
        for rank, stages in enumerate(self.stage_map):
            for chunk, stage in enumerate(stages):
                self._where[stage] = (rank, chunk)

    @property
    def num_stages(self):
        return self.num_ranks * self.chunks

    def stage(self, rank, chunk):
        return self.stage_map[rank][chunk]

    def place(self, stage):
        """(rank, chunk) holding `stage`."""
        return self._where[stage]

    def __str__(self):
        lines = [f"{self.name}: {self.num_ranks} ranks x {self.chunks} chunk(s), "
                 f"{self.num_microbatches} micro-batches"]
        for rank, program in enumerate(self.programs):
            lines.append(f"  rank {rank}: " + " ".join(map(str, program)))
        return "\n".join(lines)


def message_key(schedule, rank, action):
    """What identifies a message, the same on both ends: (src, dst, direction, mb, dst stage).

    Every message of a step has its own key, so a receive can only ever match
    the one send it is meant for, whatever the order they are posted in.
    """
    stage = schedule.stage(rank, action.chunk)
    if action.kind == SEND_F:
        return (rank, action.peer, "F", action.microbatch, stage + 1)
    if action.kind == RECV_F:
        return (action.peer, rank, "F", action.microbatch, stage)
    if action.kind == SEND_B:
        return (rank, action.peer, "B", action.microbatch, stage - 1)
    if action.kind == RECV_B:
        return (action.peer, rank, "B", action.microbatch, stage)
    raise ValueError(f"{action} is not a message")


def message_tag(schedule, rank, action):
    """The MPI tag of a message: unique per (direction, micro-batch, receiving stage)."""
    _, _, direction, microbatch, stage = message_key(schedule, rank, action)
    return (microbatch * schedule.num_stages + stage) * 2 + (direction == "B")
