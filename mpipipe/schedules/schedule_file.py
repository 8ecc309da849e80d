"""A schedule read from a file in PyTorch's format: checked, and ready for mpipipe.

    read_schedule_file("dualpipev.csv")       -> ScheduleFile: .schedule, .describe()
    schedule_from_file("x.csv", pp, m)        -> the same, checked against a run's pp and m

The schedule keeps the file's compute actions (pairs and markers included) in
the file's order and is lowered by mpipipe like any generated one: the simulator,
`mpipipe train` and the pictures read it as they read `--schedule 1f1b`. The
placement of the stages is the file's (pytorch_csv.py says how it is read).
"""

import os
import textwrap
from collections import Counter
from dataclasses import dataclass, field

from mpipipe.errors import ConfigError, ScheduleError
from .actions import COMPUTE, MARKERS, MESSAGES, REDUCE_GRAD, Action, Schedule
from .file_checks import check_entries, check_messages, check_placement, validate_located
from .pytorch_csv import parse_rows, placement_name, placement_rule, read_rows


@dataclass
class ScheduleFile:
    """A schedule file read and checked: the schedule (compute actions and markers, not
    yet lowered) and what the reader found, for printing."""

    path: str
    schedule: Schedule
    flavour: str                # "compute only" or "compute + comms"
    placement: str              # "looped", "V", "one stage per rank" or "custom"
    idle_cells: int
    markers: Counter
    notes: list = field(default_factory=list)   # where its messages differ from mpipipe's
    cells: dict = field(default_factory=dict)   # (rank, kind, micro-batch, chunk) -> Cell

    def describe(self, width=80):
        """Lines saying what was read, for `mpipipe simulate` and `mpipipe train`."""
        s = self.schedule
        lines = [f"schedule file {self.path}: {self.flavour}, {s.num_ranks} ranks x {s.chunks} "
                 f"stage(s), {self.placement} placement ({placement_rule(s)}), "
                 f"{s.num_microbatches} micro-batches, {self.idle_cells} idle cell(s) "
                 f"(a rank just waits)"]
        if self.markers[REDUCE_GRAD]:
            lines.append(f"  REDUCE_GRAD x{self.markers[REDUCE_GRAD]}: a stage's data-parallel "
                         f"all-reduce starts there instead of at the step's end")
        sharding = [f"{kind} x{self.markers[kind]}" for kind in MARKERS
                    if kind != REDUCE_GRAD and self.markers[kind]]
        if sharding:
            lines.append(f"  {', '.join(sharding)}: do nothing here (mpipipe never shards "
                         f"parameters)")
        lines += [f"  {note}" for note in self.notes]
        return [wrapped for line in lines for wrapped in textwrap.wrap(
            line, width, subsequent_indent="    " if line.startswith("  ") else "  ")]


def read_schedule_file(path):
    """Read and check a schedule file; ScheduleError naming the row and cell if it is wrong."""
    ranks, idle = parse_rows(read_rows(path))
    stage_map = check_placement(ranks)
    chunk_of = {stage: chunk for stages in stage_map for chunk, stage in enumerate(stages)}
    compute = [[e for e in entries if e.kind not in MESSAGES] for entries in ranks]
    microbatches = 1 + max((e.microbatch for entries in compute for e in entries
                            if e.kind in COMPUTE), default=-1)
    if microbatches < 1:
        raise ScheduleError(f"the schedule file {path} holds no compute action (F, I, B, W)")
    check_entries(compute, microbatches)
    programs, cells = [], {}
    for rank, entries in enumerate(compute):
        program = []
        for e in entries:
            action = Action(e.kind, e.microbatch, chunk_of[e.stage],
                            pairs_with_next=e.pairs_with_next)
            program.append(action)
            cells[rank, e.kind, e.microbatch, action.chunk] = e.cell
        programs.append(program)
    for rank, entries in enumerate(ranks):      # a comms file's messages have cells too
        for e in entries:
            if e.kind in MESSAGES:
                cells[rank, e.kind, e.microbatch, chunk_of[e.stage]] = e.cell
    schedule = Schedule(os.path.basename(path), len(ranks), microbatches, programs,
                        chunks=len(stage_map[0]), stage_map=stage_map, notes={"file": path})
    validate_located(schedule, cells)
    with_comms = any(e.kind in MESSAGES for entries in ranks for e in entries)
    notes = check_messages(schedule, ranks) if with_comms else []
    markers = Counter(e.kind for entries in compute for e in entries if e.kind in MARKERS)
    return ScheduleFile(path, schedule, "compute + comms" if with_comms else "compute only",
                        placement_name(stage_map), idle, markers, notes, cells)


def file_shape(path):
    """(ranks, micro-batches, stages per rank) of a schedule file, read but not yet checked."""
    ranks, _ = parse_rows(read_rows(path))
    stages = {e.stage for entries in ranks for e in entries}
    microbatches = 1 + max((e.microbatch for entries in ranks for e in entries
                            if e.kind in COMPUTE), default=0)
    return len(ranks), microbatches, max(1, len(stages) // max(1, len(ranks)))


def schedule_from_file(path, num_ranks=None, num_microbatches=None, chunks=None):
    """read_schedule_file, checked against the ranks, micro-batches and chunks a run asks for
    (None: whatever the file has); ConfigError saying what to change if they differ."""
    found = read_schedule_file(path)
    s = found.schedule
    if num_ranks is not None and num_ranks != s.num_ranks:
        raise ConfigError(f"{path} is a schedule for {s.num_ranks} pipeline ranks (one row "
                          f"each) but the pipeline has {num_ranks}: run it on {s.num_ranks} "
                          f"ranks per replica (pp = {s.num_ranks})")
    if num_microbatches is not None and num_microbatches != s.num_microbatches:
        raise ConfigError(f"{path} runs {s.num_microbatches} micro-batches but "
                          f"--microbatches is {num_microbatches}: leave --microbatches out "
                          f"to take the file's")
    if chunks is not None and chunks != s.chunks:
        raise ConfigError(f"{path} gives each rank {s.chunks} stage(s) but --chunks is "
                          f"{chunks}: leave --chunks out to take the file's")
    return found
