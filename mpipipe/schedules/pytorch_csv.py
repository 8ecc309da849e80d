"""PyTorch's schedule files: read them into mpipipe, write mpipipe's schedules out.

torch.distributed.pipelining keeps a schedule as per-rank action lists too, and
reads and writes them as CSV. The format, as PyTorch defines it:

    0F0,0F1,2F0,2F1,,,0F2,2B0,...          one row per rank, one cell per action,
    ,1F0,1F1,,3F0,3B0,3F1,3B1,...          in the order the rank runs them

A cell is a stage, a kind and, for most kinds, a micro-batch; an empty cell is
an idle slot. Stages are global: which rank holds a stage is read from the row
it appears in (rank s mod P is the "looped" placement, stages s and 2P-1-s on
rank s the "V" placement).

    PyTorch   mpipipe   meaning
    2F0       F0        forward
    3I1       B1        input gradient (PyTorch's I is the papers' and mpipipe's B)
    3W1       W1        weight gradient
    0B4       BW4       full backward (PyTorch's B is mpipipe's fused BW)
    (0F7;7B3)OVERLAP_F_B        F7 and BW3 of another chunk, overlapped (a pair)
    1SEND_F2, 0RECV_B3, ...     messages; the stage is the one on this rank
    1UNSHARD, 1RESHARD          FSDP's gather and free: nothing to do here
    1REDUCE_GRAD                stage 1's gradients are complete: all-reduce them

A "compute only" file holds compute cells (and markers); mpipipe lowers it
itself. A "compute + comms" file also holds the messages: they are checked
against mpipipe's own lowering (the same messages, each send after the action
that produces it, each receive before the one that needs it) and mpipipe runs
its own lowering, which waits for a message right before the action that needs
it, where PyTorch's runtime waits too (PyTorch posts its receives earlier; the
differences in place are reported by rank and cell).

This module is the format: cells in, actions out, and back. schedule_file.py
reads a file into a checked mpipipe Schedule; file_checks.py holds the checks,
each naming the row and cell (counted from 1, as a spreadsheet shows them).
"""

import csv
import re
from dataclasses import dataclass

from mpipipe.errors import ScheduleError
from .actions import BW, COMPUTE, MARKERS, MESSAGES, B, F, W
from .lower import lower

FROM_PYTORCH = {"F": F, "I": B, "W": W, "B": BW}
TO_PYTORCH = {mine: theirs for theirs, mine in FROM_PYTORCH.items()}
_ACTION = re.compile(r"(\d+)(F|I|B|W|UNSHARD|RESHARD|REDUCE_GRAD|SEND_F|RECV_F|SEND_B|RECV_B)(\d*)")
_PAIR = re.compile(r"\((.*)\)OVERLAP_F_B")
EXAMPLES = "2F0, 3I1, 0B4, 3W1, 1SEND_F2, 0RECV_B3, 1UNSHARD or (0F7;7B3)OVERLAP_F_B"


@dataclass(frozen=True)
class Cell:
    """Where an action was written: row (rank + 1) and column, counted from 1."""

    row: int
    column: int
    text: str

    def __str__(self):
        return f"row {self.row} (rank {self.row - 1}), cell {self.column} ({self.text})"


@dataclass
class Entry:
    """One action of a file as read: its stage, mpipipe kind, micro-batch and cell."""

    stage: int
    kind: str
    microbatch: int | None
    cell: Cell
    pairs_with_next: bool = False

    @property
    def label(self):
        """The action as PyTorch writes it, e.g. 3I1."""
        return cell_text(self.stage, self.kind, self.microbatch)


def cell_text(stage, kind, microbatch=None):
    """An action as PyTorch writes it, from mpipipe's kind: cell_text(3, "B", 1) -> '3I1'."""
    return f"{stage}{TO_PYTORCH.get(kind, kind)}{'' if microbatch is None else microbatch}"


def placement_rule(schedule):
    """'stage s on rank s mod 4', or each rank's stages."""
    return {"looped": f"stage s on rank s mod {schedule.num_ranks}",
            "V": f"stages s and {2 * schedule.num_ranks - 1}-s on rank s",
            "one stage per rank": "stage s on rank s"}.get(
        placement_name(schedule.stage_map),
        "; ".join(f"rank {r}: {', '.join(map(str, stages))}"
                  for r, stages in enumerate(schedule.stage_map)))


def placement_name(stage_map):
    P, V = len(stage_map), len(stage_map[0])
    if V == 1 and all(stages == [r] for r, stages in enumerate(stage_map)):
        return "one stage per rank"
    if all(stages == [c * P + r for c in range(V)] for r, stages in enumerate(stage_map)):
        return "looped"
    if V == 2 and all(stages == [r, 2 * P - 1 - r] for r, stages in enumerate(stage_map)):
        return "V"
    return "custom"


# -- reading ------------------------------------------------------------------------------

def read_rows(path):
    """The file's rows of cell texts (trailing empty rows dropped); ScheduleError if unreadable."""
    try:
        with open(path, newline="") as source:
            rows = [[cell.strip() for cell in row] for row in csv.reader(source)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ScheduleError(f"cannot read the schedule file {path}: {error}") from None
    while rows and not any(rows[-1]):
        rows.pop()
    if not rows:
        raise ScheduleError(f"the schedule file {path} holds no actions")
    return rows


def parse_rows(rows):
    """Per rank, the file's entries in order; the number of idle cells."""
    ranks, idle = [], 0
    for row_index, row in enumerate(rows):
        entries = []
        for column, text in enumerate(row):
            if not text:
                idle += 1
                continue
            entries += parse_cell(Cell(row_index + 1, column + 1, text))
        ranks.append(entries)
    return ranks, idle


def parse_cell(cell):
    """The entries of one cell: one action, or the actions of an overlapped pair."""
    pair = _PAIR.fullmatch(cell.text)
    if pair:
        parts = [part.strip() for part in pair.group(1).split(";")]
        entries = [_parse_action(cell, part) for part in parts if part]
        if len(entries) < 2 or any(e.kind not in COMPUTE for e in entries):
            raise ScheduleError(f"{cell}: an OVERLAP_F_B pair holds two or more compute "
                                f"actions, e.g. (0F7;7B3)OVERLAP_F_B")
        for entry in entries[:-1]:
            entry.pairs_with_next = True
        return entries
    return [_parse_action(cell, cell.text)]


def _parse_action(cell, text):
    match = _ACTION.fullmatch(text)
    if not match:
        raise ScheduleError(f"{cell}: {text!r} is not an action: expected e.g. {EXAMPLES}")
    stage, kind, microbatch = match.groups()
    kind = FROM_PYTORCH.get(kind, kind)
    if kind in MARKERS and microbatch:
        raise ScheduleError(f"{cell}: {kind} takes no micro-batch (write e.g. 1{kind})")
    if kind not in MARKERS and not microbatch:
        raise ScheduleError(f"{cell}: {text!r} needs a micro-batch, e.g. {text}0")
    return Entry(int(stage), kind, int(microbatch) if microbatch else None, cell)


# -- writing ------------------------------------------------------------------------------

def schedule_rows(schedule, comms=False):
    """The schedule's rows of cell texts: compute actions (and markers), or with `comms`
    mpipipe's lowered lists with their messages."""
    if comms:
        schedule = lower(schedule)
    rows = []
    for rank, program in enumerate(schedule.programs):
        row, pair = [], []
        for action in program:
            if action.kind in MESSAGES and not comms:
                continue
            text = action_text(schedule, rank, action)
            if action.pairs_with_next or pair:
                pair.append(text)
                if not action.pairs_with_next:
                    row.append(f"({';'.join(pair)})OVERLAP_F_B")
                    pair = []
            else:
                row.append(text)
        rows.append(row)
    return rows


def action_text(schedule, rank, action):
    """One action as PyTorch writes it: global stage, kind, micro-batch (3I1, 1SEND_F2)."""
    return cell_text(schedule.stage(rank, action.chunk), action.kind, action.microbatch)


def write_schedule_file(schedule, path, comms=False):
    """Write `schedule` in PyTorch's format (compute only, or with `comms` its messages)."""
    with open(path, "w", newline="") as out:
        csv.writer(out).writerows(schedule_rows(schedule, comms))
