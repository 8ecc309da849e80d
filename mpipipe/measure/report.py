"""`mpipipe report FILE.json`: where did the time go, from a saved trace.

Per rank, over all steps in the trace: compute (F, B, W, BW and recomputed
forwards), waiting for messages, and idle (the rest of each step's span, from
its start to the end of the step's last action on any rank). The bubble
fraction is 1 - compute / span, per rank and for all ranks together; the
slowest stage is the rank with the most compute: the one the others wait for.
With tensor parallelism, the part of the compute spent in tensor all-reduces
gets a column of its own.
"""

from collections import defaultdict

from mpipipe.plan.timeline import bubble_fraction
from mpipipe.schedules.actions import Action, Event


def summarise(trace):
    slices = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    if not slices:
        raise ValueError("the trace holds no actions")
    step_end = defaultdict(float)     # step -> latest end over all ranks (microseconds)
    step_start = {}
    for e in slices:
        if e["cat"] == "reduce":        # the all-reduce runs beside the actions, on its own track
            continue
        step = e["args"]["step"]
        step_end[step] = max(step_end[step], e["ts"] + e["dur"])
        step_start[step] = min(step_start.get(step, e["ts"]), e["ts"])
    span = sum(step_end[s] - step_start[s] for s in step_end)
    ranks = defaultdict(lambda: {"compute": 0.0, "wait": 0.0, "send": 0.0, "marker": 0.0,
                                 "reduce": 0.0, "actions": 0, "tensor": 0.0})
    for e in slices:
        row = ranks[e["pid"]]
        row[e["cat"]] += e["dur"]
        row["actions"] += e["cat"] == "compute"
        row["tensor"] += e["args"].get("tensor_allreduce_ms", 0.0) * 1e3   # inside compute
    rows = []
    for rank in sorted(ranks):
        row = ranks[rank]
        idle = span - row["compute"] - row["wait"] - row["send"] - row["marker"]
        rows.append({"rank": rank, "compute_ms": row["compute"] / 1e3, "wait_ms": row["wait"] / 1e3,
                     "idle_ms": idle / 1e3, "compute_actions": row["actions"],
                     "tensor_allreduce_ms": row["tensor"] / 1e3,
                     "bubble_fraction": bubble_fraction(row["compute"], 1, span)})
    total_compute = sum(r["compute_ms"] for r in rows) * 1e3
    slowest = max(rows, key=lambda r: r["compute_ms"])
    return {"meta": trace.get("otherData", {}), "steps": len(step_end), "span_ms": span / 1e3,
            "ranks": rows, "slowest_rank": slowest["rank"],
            "bubble_fraction": bubble_fraction(total_compute, len(rows), span)}


def format_report(summary):
    meta = summary["meta"]
    head = ", ".join(f"{k}={meta[k]}" for k in ("schedule", "tp", "pp", "dp", "microbatches",
                                                "chunks") if k in meta)
    tensor = any(r.get("tensor_allreduce_ms", 0) > 0 for r in summary["ranks"])
    lines = [f"trace of {summary['steps']} step(s), {summary['span_ms']:.2f} ms in all"
             + (f" ({head})" if head else ""),
             f"{'rank':>6} {'compute ms':>11} {'wait ms':>9} {'idle ms':>9} {'bubble':>7}"
             + (f" {'of compute: tensor all-reduce ms':>33}" if tensor else "")]
    for r in summary["ranks"]:
        mark = "  <- slowest" if r["rank"] == summary["slowest_rank"] else ""
        lines.append(f"{r['rank']:>6} {r['compute_ms']:>11.2f} {r['wait_ms']:>9.2f} "
                     f"{r['idle_ms']:>9.2f} {r['bubble_fraction']:>7.3f}"
                     + (f" {r['tensor_allreduce_ms']:>33.2f}" if tensor else "") + mark)
    lines.append(f"bubble fraction, all ranks: {summary['bubble_fraction']:.3f}")
    return "\n".join(lines)


def last_step(trace):
    """(schedule, events in ms) of a trace's last step: replica 0, one row per pipeline
    rank (of a stage's tensor shards, the lowest world rank's), times from the step's
    first action. The schedule is rebuilt from the trace's settings (a built-in one, or
    the schedule file it names), which the idle slots need to find each message's maker."""
    from mpipipe.schedules import schedule_from_file, validate, validated_schedule

    meta = trace.get("otherData", {})
    if meta.get("schedule_file"):
        schedule = validate(schedule_from_file(meta["schedule_file"]).schedule)
    else:
        schedule = validated_schedule(meta["schedule"], meta["pp"], meta["microbatches"],
                                      meta.get("chunks"))
    slices = [e for e in trace["traceEvents"] if e.get("ph") == "X"
              and e["args"].get("replica", 0) == 0]
    step = max(e["args"]["step"] for e in slices)
    slices = [e for e in slices if e["args"]["step"] == step]
    row_of = {}                   # pipeline rank -> the world rank (pid) that stands for it
    for e in slices:
        stage_rank = e["args"]["stage_rank"]
        row_of[stage_rank] = min(row_of.get(stage_rank, e["pid"]), e["pid"])
    start = min(e["ts"] for e in slices)
    events = []
    for e in slices:
        stage_rank = e["args"]["stage_rank"]
        if e["pid"] != row_of[stage_rank]:
            continue
        action = Action(e["args"]["kind"], e["args"]["microbatch"], e["args"]["chunk"])
        begin = (e["ts"] - start) / 1e3
        events.append(Event(stage_rank, action, begin, begin + e["dur"] / 1e3,
                            e["args"].get("tensor_allreduce_ms", 0.0)))
    return schedule, events
