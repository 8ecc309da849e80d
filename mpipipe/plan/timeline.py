"""A timeline: who computed what, when; its bubble; and its picture in the terminal.

The planned timeline (from the simulator) and the measured one (from the
engine's per-action timestamps) are both lists of events (rank, action,
start, end), so they are measured by the same `bubble_fraction` and drawn by
the same code, and look the same:

    rank 0 |F0F1F2F3............BW0 F4BW1 F5BW2 ...
    rank 1 |..F0F1F2........BW0 F3BW1 F4BW2 F5 ...

Each compute action is a box as wide as it lasts, labelled with its kind and
micro-batch where the label fits (lower case for odd chunks, so that the
chunks of an interleaved schedule tell apart; `&` ends the first action of an
overlapped pair, F7&bw3); '.' is time the rank spends not
computing (waiting for a peer: the bubble); '~' inside a box is the share of
that action spent in tensor-parallel all-reduces. A long timeline is cut into
panels of at most `width` columns rather than squeezed until the labels vanish.
"""

import math
from dataclasses import dataclass, field

from mpipipe.schedules.actions import Event


def bubble_fraction(busy, num_ranks, span):
    """The share of rank-time not spent computing: 1 - busy / (ranks x span).

    `busy` is the compute time of all `num_ranks` ranks together, `span` the
    time from the step's start to its last action's end. The one definition
    used by the simulator, the training summary, the report and the lessons."""
    return 1.0 - busy / (num_ranks * span) if span > 0 else 0.0


@dataclass
class Timeline:
    """One step as events, with what the bubble is computed from."""

    num_ranks: int
    events: list
    makespan: float
    busy: list                  # compute time per rank
    peak_stash: list = field(default_factory=list)   # planned timelines: micro-batches held
    info: dict = field(default_factory=dict)

    @classmethod
    def of_events(cls, events, num_ranks):
        """A measured step: the makespan ends with the last compute action on any rank."""
        busy = [0.0] * num_ranks
        makespan = 0.0
        for e in events:
            if e.action.is_compute:
                busy[e.rank] += e.end - e.start
                makespan = max(makespan, e.end)
        return cls(num_ranks, list(events), makespan, busy)

    @property
    def bubble_fraction(self):
        return bubble_fraction(sum(self.busy), self.num_ranks, self.makespan)


def in_ms(events):
    """Events timed in seconds (as the engine measures) -> in milliseconds (as shown)."""
    return [Event(e.rank, e.action, 1e3 * e.start, 1e3 * e.end, 1e3 * e.collective)
            for e in events]


IDLE = "."
COLLECTIVE = "~"
MAX_PANELS = 3
LABEL_COLUMNS = 3   # columns the shortest action should get, so "F12" fits


def render(events, num_ranks, makespan=None, width=80, title=None, unit="time units"):
    """The ASCII picture of `events`, in panels at most `width` columns wide."""
    compute = [e for e in events if e.action.is_compute]
    if makespan is None:
        makespan = max((e.end for e in compute), default=0.0)
    prefix = len(f"rank {num_ranks - 1} |")
    columns = max(10, width - prefix)
    scale = _choose_scale(compute, makespan, columns)
    total = max(1, int(math.ceil(makespan * scale)))
    rows = [_draw_row([e for e in compute if e.rank == r], scale, total) for r in range(num_ranks)]
    lines = [title] if title else []
    for panel_start in range(0, total, columns):
        panel_end = min(total, panel_start + columns)
        if total > columns:
            lines.append(f"{'':>{prefix}}t = {panel_start / scale:.4g} .. {panel_end / scale:.4g} {unit}")
        for rank, row in enumerate(rows):
            text = "".join(row[panel_start:panel_end]).rstrip(" ")
            lines.append(f"rank {rank:>{prefix - 7}} |{text}")
    if makespan > 0:
        chunks = max((e.action.chunk for e in compute), default=0)
        lines.append(f"{'':>{prefix}}one column = {1 / scale:.3g} {unit}; '{IDLE}' = not computing")
        if chunks:
            lines.append(f"{'':>{prefix}}lower case: actions of odd chunks")
        if any(e.action.pairs_with_next for e in compute):
            lines.append(f"{'':>{prefix}}'&': an overlapped pair (F&B), run one after the other")
        if any(e.collective > 0 for e in compute):
            lines.append(f"{'':>{prefix}}'{COLLECTIVE}': the part of an action spent in "
                         f"tensor-parallel all-reduces (at its end, however spread)")
    return "\n".join(lines)


def _choose_scale(compute, makespan, columns):
    """Columns per time unit: one panel if every box gets 2 columns, else more panels."""
    if makespan <= 0:
        return 1.0
    shortest = min((e.end - e.start for e in compute if e.end > e.start), default=makespan)
    scale = columns / makespan
    if shortest * scale < 2:
        scale = max(scale, min(LABEL_COLUMNS / shortest, MAX_PANELS * columns / makespan))
    if scale >= 1 and all(float(e.start).is_integer() and float(e.end).is_integer()
                          for e in compute):
        scale = math.floor(scale)  # whole time units: every box of a kind equally wide
    return scale


def box_label(action):
    """F3 for chunk 0 (and every even chunk), f3 for odd chunks: neighbours differ;
    F3& where an overlapped pair begins."""
    kind = action.kind.lower() if action.chunk % 2 else action.kind
    return f"{kind}{action.microbatch}" + ("&" if action.pairs_with_next else "")


def _draw_row(events, scale, total):
    row = [IDLE] * total
    for event in sorted(events, key=lambda e: e.start):
        first = min(total - 1, int(round(event.start * scale)))
        last = min(total, int(round(event.end * scale)))
        while first < last and row[first] != IDLE:
            first += 1  # an earlier box already took this column
        if last <= first:
            if event.end > event.start and first < total and row[first] == IDLE:
                last = first + 1  # too short to see: give it one column
            else:
                continue
        label = box_label(event.action)
        if len(label) > last - first:       # too narrow: drop the pair mark, then the number
            label = label.rstrip("&")
        if len(label) > last - first:
            label = label[: len(label) - len(str(event.action.microbatch))][: last - first]
        row[first:last] = list(label.ljust(last - first))
        talk = min(last - first, int(round(event.collective * scale)))
        for column in range(last - talk, last):
            if row[column] == " ":
                row[column] = COLLECTIVE
    return row
