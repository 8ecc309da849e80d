"""The checks of a schedule file, each failing with one message that names a row and a cell.

In the order schedule_file.py runs them:
  placement   every stage on one rank (the row it appears in), stages 0..S-1
              all present, every rank holding as many as the others;
  entries     on each rank, no action twice, none before the one it needs (a
              backward before its forward, a W before its I), every micro-batch
              complete, a REDUCE_GRAD after its stage's last backward;
  validate()  mpipipe's own validation, the deadlock walk included, its
              message prefixed with the cell it is about;
  messages    (compute + comms files) the file's sends and receives are
              mpipipe's lowering's, each on the right side of its compute cell,
              and in the file's own order they do not deadlock (a send placed
              too late: a runtime that follows the file, as PyTorch's does,
              would hang there); where they sit elsewhere than mpipipe's, a
              note says which cells.
"""

from collections import Counter

from mpipipe.errors import ScheduleError
from .actions import BW, MARKERS, MESSAGES, RECV_B, RECV_F, REDUCE_GRAD, SEND_B, SEND_F, B, F, W
from .lower import lower
from .pytorch_csv import action_text, cell_text
from .validate import validate

NEEDS = {BW: F, B: F, W: B}          # on one stage: what an action needs before it


def label(kind, stage, microbatch=None):
    """An action as PyTorch writes it: label(B, 3, 1) -> '3I1'."""
    return cell_text(stage, kind, microbatch)


def _row(rank):
    return f"row {rank + 1} (rank {rank})"


def check_placement(ranks):
    """stage_map[rank] = the stages the rank's row names, in increasing order."""
    first = {}                       # stage -> (rank, cell)
    for rank, entries in enumerate(ranks):
        for e in entries:
            there = first.setdefault(e.stage, (rank, e.cell))
            if there[0] != rank:
                raise ScheduleError(f"{e.cell}: stage {e.stage} is already on rank {there[0]} "
                                    f"({there[1]}): a stage lives on one rank")
    if not first:
        raise ScheduleError("the schedule file names no stage")
    missing = [s for s in range(max(first) + 1) if s not in first]
    if missing:
        raise ScheduleError(f"no cell names stage {missing[0]}: with stages 0..{max(first)} "
                            f"every stage must be on some rank")
    stage_map = [sorted(s for s, (r, _) in first.items() if r == rank)
                 for rank in range(len(ranks))]
    for rank, stages in enumerate(stage_map):
        if not stages:
            raise ScheduleError(f"{_row(rank)} holds no action: every rank needs a stage")
    if len({len(stages) for stages in stage_map}) > 1:
        held = "; ".join(f"rank {r}: {', '.join(map(str, s))}" for r, s in enumerate(stage_map))
        raise ScheduleError(f"the ranks hold different numbers of stages ({held}): mpipipe "
                            f"gives every rank the same number of chunks")
    return stage_map


def check_entries(ranks, microbatches):
    """Per rank (compute entries and markers): nothing twice, nothing before what it needs,
    every micro-batch of every stage complete, REDUCE_GRAD after its stage's backwards."""
    for rank, entries in enumerate(ranks):
        seen, reductions = {}, {}
        for index, e in enumerate(entries):
            if e.kind in MARKERS:
                if e.kind == REDUCE_GRAD:
                    if e.stage in reductions:
                        raise ScheduleError(f"{e.cell}: a second {e.label} (the first is cell "
                                            f"{reductions[e.stage].cell.column})")
                    reductions[e.stage] = e
                continue
            key = (e.kind, e.stage, e.microbatch)
            if key in seen:
                raise ScheduleError(f"{e.cell}: {e.label} again (the first is cell "
                                    f"{seen[key].column}): each action runs once")
            need = NEEDS.get(e.kind)
            if need and (need, e.stage, e.microbatch) not in seen:
                wanted = label(need, e.stage, e.microbatch)
                later = next((f.cell for f in entries[index + 1:]
                              if (f.kind, f.stage, f.microbatch) == (need, e.stage, e.microbatch)),
                             None)
                where = f"{later.column}" if later else "none in this row"
                raise ScheduleError(f"{e.cell}: {e.label} comes before {wanted} (cell {where}), "
                                    f"which it needs")
            if e.kind in (BW, W) and e.stage in reductions:
                r = reductions[e.stage]
                raise ScheduleError(f"{r.cell}: {r.label} comes before {e.label} (cell "
                                    f"{e.cell.column}): the reduction would miss its gradient")
            seen[key] = e.cell
    top = max((e for entries in ranks for e in entries if e.kind not in MARKERS),
              key=lambda e: e.microbatch)
    numbering = (f" (the file numbers micro-batches 0..{top.microbatch}: its highest is "
                 f"{top.cell})")
    for rank, entries in enumerate(ranks):
        seen = {(e.kind, e.stage, e.microbatch): e.cell for e in entries}
        for stage in sorted({e.stage for e in entries}):
            for mb in range(microbatches):
                _check_complete(rank, stage, mb, seen, numbering)


def _check_complete(rank, stage, mb, seen, numbering):
    has = {kind: seen.get((kind, stage, mb)) for kind in (F, BW, B, W)}
    if has[F] is None:
        raise ScheduleError(f"{_row(rank)}: stage {stage} never runs {label(F, stage, mb)}"
                            + numbering)
    if has[BW] and (has[B] or has[W]):
        other = has[B] or has[W]
        raise ScheduleError(f"{has[BW]}: {label(BW, stage, mb)} is the full backward, and "
                            f"{other.text} (cell {other.column}) part of it again")
    if has[BW] is None and has[B] is None:
        raise ScheduleError(f"{_row(rank)}: stage {stage} never runs the backward of "
                            f"micro-batch {mb} ({label(BW, stage, mb)}, or "
                            f"{label(B, stage, mb)} and {label(W, stage, mb)})" + numbering)
    if has[B] and has[W] is None:
        raise ScheduleError(f"{has[B]}: {label(B, stage, mb)} has no {label(W, stage, mb)} "
                            f"after it in its row")


def cell_of(cells, rank, action):
    """The cell of an action: a compute action's or marker's own; a message's own in a
    compute + comms file, else the cell of the compute action it serves."""
    kind = action.kind
    if kind in MESSAGES:
        kinds = (kind, F) if kind in (RECV_F, SEND_F) else (kind, B, BW)
    else:
        kinds = (kind,)
    for k in kinds:
        cell = cells.get((rank, k, action.microbatch, action.chunk))
        if cell:
            return cell
    return None


def validate_located(schedule, cells):
    """validate(schedule), its error prefixed with the row and cell it is about."""
    try:
        validate(schedule)
    except ScheduleError as error:
        if error.rank is None:
            raise
        cell = cell_of(cells, error.rank, error.action) if error.action else None
        raise ScheduleError(f"{cell or _row(error.rank)}: {error}", error.rank,
                            error.action) from None


def check_messages(schedule, ranks):
    """A compute + comms file's messages against mpipipe's lowering; notes on where they differ."""
    lowered = lower(schedule)
    notes, displaced = [], []
    for rank, entries in enumerate(ranks):
        mine = [(action_text(lowered, rank, a), slot) for a, slot in _slots(lowered.programs[rank])
                if a.kind in MESSAGES]
        theirs = [(e, slot) for e, slot in _slots(entries, file_entries=True) if e.kind in MESSAGES]
        unmatched = Counter(text for text, _ in mine)
        for e, _ in theirs:
            unmatched[e.label] -= 1
            if unmatched[e.label] < 0:
                raise ScheduleError(f"{e.cell}: mpipipe's lowering has no {e.label}: a message "
                                    f"goes once per micro-batch between neighbouring stages on "
                                    f"different ranks")
        missing = [text for text, count in unmatched.items() if count > 0]
        if missing:
            text = missing[0]
            raise ScheduleError(f"{_row(rank)}: the file has no {text}, a message mpipipe's "
                                f"lowering of this row's compute cells needs")
        compute = {(e.kind, e.stage, e.microbatch): e.cell for e in entries if e.kind not in MESSAGES}
        for e, _ in theirs:
            _check_side(e, compute)
        expected = dict(mine)       # each message once per rank: its place in mpipipe's list
        early = [e for e, slot in theirs if slot < expected[e.label]]
        late = [e for e, slot in theirs if slot > expected[e.label]]
        displaced += early + late
        for moved, how in ((early, "earlier"), (late, "later")):
            if moved:
                shown = ", ".join(f"{e.cell.column} ({e.label})" for e in moved[:5])
                notes.append(f"rank {rank}: {len(moved)} message(s) {how} than in mpipipe's "
                             f"lowering, cell(s) {shown}{', ...' if len(moved) > 5 else ''}")
    check_message_order(ranks, schedule.stage_map, displaced)
    notes.append("messages: the same as mpipipe's lowering" + (
        "; in their places above mpipipe keeps its own: it waits for a message right before "
        "the action that needs it, as PyTorch's runtime does, and sends right after the one "
        "that makes it" if notes else ", in the same places"))
    return notes


def check_message_order(ranks, stage_map, moved=()):
    """Walk the file's rows as a runtime that follows them would (PyTorch's does): a
    send is posted where it stands, a receive is posted where it stands and waited for
    by the compute action that needs it, and that action runs once the matching send has
    been posted. If the walk stops before every row is done, the file's own order
    deadlocks (mpipipe's lowering, which sends right after each producing action, may
    not): name the receive that can never be matched, preferring one whose send the
    file moved from mpipipe's place (`moved`: those entries), and where its send is stuck."""
    owner = {stage: rank for rank, stages in enumerate(stage_map) for stage in stages}

    def needed(e):      # (send kind, stage, micro-batch) a compute action waits for, or None
        step, kind = {F: (-1, SEND_F), B: (+1, SEND_B), BW: (+1, SEND_B)}.get(e.kind, (0, None))
        other = e.stage + step
        if kind and other in owner and owner[other] != owner[e.stage]:
            return kind, other, e.microbatch
        return None

    done, posted, progress = [0] * len(ranks), set(), True
    while progress:
        progress = False
        for rank, entries in enumerate(ranks):
            while done[rank] < len(entries):
                e = entries[done[rank]]
                if e.kind in (SEND_F, SEND_B):
                    posted.add((e.kind, e.stage, e.microbatch))
                elif e.kind not in MESSAGES and e.kind not in MARKERS:
                    need = needed(e)
                    if need is not None and need not in posted:
                        break
                done[rank] += 1
                progress = True
    stuck = [(rank, ranks[rank][done[rank]]) for rank in range(len(ranks))
             if done[rank] < len(ranks[rank])]
    if not stuck:
        return

    def send_of(e):
        kind, stage, microbatch = needed(e)
        return next(f for f in ranks[owner[stage]]
                    if (f.kind, f.stage, f.microbatch) == (kind, stage, microbatch))
    rank, waiting = next(((r, e) for r, e in stuck if any(send_of(e) is m for m in moved)),
                         stuck[0])
    send = send_of(waiting)
    recv_kind = RECV_F if send.kind == SEND_F else RECV_B
    receive = next(f for f in ranks[rank] if (f.kind, f.stage, f.microbatch) ==
                   (recv_kind, waiting.stage, waiting.microbatch))
    source = owner[send.stage]
    blocker = ranks[source][done[source]]
    raise ScheduleError(f"{receive.cell}: the file's own message order deadlocks here: "
                        f"{receive.label}, waited for by {waiting.label} (cell "
                        f"{waiting.cell.column}), is sent by {send.label} (cell "
                        f"{send.cell.column} of row {send.cell.row}), which rank {source} never "
                        f"reaches: it waits at cell {blocker.cell.column} ({blocker.label}) first")


def _check_side(e, compute):
    """A receive comes before the compute cell that needs it, a send after the one that makes it."""
    kinds = (F,) if e.kind in (RECV_F, SEND_F) else (B, BW)
    partner = next((compute[k, e.stage, e.microbatch] for k in kinds
                    if (k, e.stage, e.microbatch) in compute), None)
    if partner is None:
        raise ScheduleError(f"{e.cell}: no compute cell of this row uses {e.label}")
    receive = e.kind in (RECV_F, RECV_B)
    if receive and e.cell.column > partner.column:
        raise ScheduleError(f"{e.cell}: comes after {partner.text} (cell {partner.column}), "
                            f"which needs it")
    if not receive and e.cell.column < partner.column:
        raise ScheduleError(f"{e.cell}: comes before {partner.text} (cell {partner.column}), "
                            f"which produces it")


def _slots(items, file_entries=False):
    """(item, number of compute cells before it): an overlapped pair is one cell."""
    slot, out, previous_cell = 0, [], None
    for item in items:
        if item.kind in MESSAGES or item.kind in MARKERS:
            out.append((item, slot))
            continue
        if file_entries:
            if item.cell != previous_cell:
                slot += 1
            previous_cell = item.cell
        elif not item.pairs_with_next:
            slot += 1       # a pair's first action opens the cell its second closes
        out.append((item, slot))
    return out
