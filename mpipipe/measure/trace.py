"""Traces: every action of every rank, saved in Chrome's trace event format.

A trace file opens in Perfetto (ui.perfetto.dev) or chrome://tracing: one
process per rank, one slice per action, micro-batch and chunk in the slice's
arguments. Waiting for a message is a slice of its own (category "wait"), so
the time a rank spends blocked on a peer is as visible as its compute. A
chunk's data-parallel all-reduce (category "reduce") runs beside the actions,
from its start until it completes, on a second track of its rank.
`mpipipe report FILE` reads the same file back (report.py).

The records handed to `chrome_trace` are (world rank, pp index, dp index, tp
index, step, step offset in seconds, [(action, start, end[, collective]), ...])
with start and end relative to the step's start, which a barrier aligns
across ranks; `collective` is the part of a compute action spent in
tensor-parallel all-reduces (a slice's "tensor_allreduce_ms" argument).
"""

import json

from mpipipe.schedules.actions import ALLREDUCE, COMPUTE, MARKERS, RECOMPUTE, RECV_B, RECV_F

WAITS = (RECV_F, RECV_B)


def category(action):
    if action.kind in COMPUTE or action.kind == RECOMPUTE:
        return "compute"
    if action.kind in MARKERS:
        return "marker"
    if action.kind == ALLREDUCE:
        return "reduce"
    return "wait" if action.kind in WAITS else "send"


def chrome_trace(records, meta):
    """The trace as a dict, ready for json.dump."""
    events = []
    for world_rank, pp_index, dp_index, tp_index in sorted({record[:4] for record in records}):
        shard = f", shard {tp_index}" if meta.get("tp", 1) > 1 else ""
        events.append({"ph": "M", "name": "process_name", "pid": world_rank,
                       "args": {"name": f"rank {world_rank} (stage {pp_index}{shard}, "
                                        f"replica {dp_index})"}})
        events.append({"ph": "M", "name": "process_sort_index", "pid": world_rank,
                       "args": {"sort_index": world_rank}})
    for world_rank, pp_index, dp_index, tp_index, step, offset, actions in records:
        for action, start, end, *collective in actions:
            collective = collective[0] if collective else 0.0
            name = f"wait {action}" if action.kind in WAITS else str(action)
            args = {"kind": action.kind, "microbatch": action.microbatch, "chunk": action.chunk,
                    "step": step, "stage_rank": pp_index, "replica": dp_index}
            if collective:
                args["tensor_allreduce_ms"] = round(collective * 1e3, 6)
            events.append({
                "ph": "X", "name": name, "cat": category(action), "pid": world_rank,
                "tid": 1 if action.kind == ALLREDUCE else 0,   # its own track: it overlaps
                "ts": round((offset + start) * 1e6, 3), "dur": round((end - start) * 1e6, 3),
                "args": args})
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": meta}


def save(path, trace):
    with open(path, "w") as out:
        json.dump(trace, out)


def load(path):
    """A trace file as a dict; a clear error if it is not one of ours."""
    with open(path) as source:
        trace = json.load(source)
    if not isinstance(trace, dict) or "traceEvents" not in trace:
        raise ValueError(f"{path} is not a Chrome trace (no traceEvents)")
    return trace
