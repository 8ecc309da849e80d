"""Every idle slot and its cause (mpipipe/measure/idle.py): on steps whose causes are known
by construction, on every schedule's plan, and on real runs, where the causes must add up
to each rank's idle time as measured from the trace, independently."""

import json
import os
import subprocess
import sys

import pytest

from mpipipe.comm.launcher import mpiexec_command
from mpipipe.measure.idle import breakdown, idle_slots, longest
from mpipipe.plan.simulate import Costs, simulate
from mpipipe.schedules import GENERATORS, default_chunks, validated_schedule
from mpipipe.schedules.actions import ALLREDUCE, Action, Event


def act(kind, microbatch=None, chunk=0, peer=None):
    return Action(kind, microbatch, chunk, peer)


# 1F1B, P = 2, m = 1, written out by hand: rank 0 waits 3.4 for rank 1's backward, rank 1
# waits 1.3 for rank 0's forward and sits 0.2 more before its own, then runs a data-parallel
# all-reduce while rank 0 still computes.
KNOWN = [
    Event(0, act("F", 0), 0.0, 1.0), Event(0, act("SEND_F", 0, peer=1), 1.0, 1.1),
    Event(0, act("RECV_B", 0, peer=1), 1.1, 4.5), Event(0, act("BW", 0), 4.6, 6.6),
    Event(0, act(ALLREDUCE, None), 6.6, 7.0),
    Event(1, act("RECV_F", 0, peer=0), 0.0, 1.3), Event(1, act("F", 0), 1.5, 2.5),
    Event(1, act("BW", 0), 2.5, 4.5), Event(1, act("SEND_B", 0, peer=0), 4.5, 4.6),
    Event(1, act(ALLREDUCE, None), 4.6, 5.5),
]


def test_a_step_whose_causes_are_known_by_construction():
    slots = idle_slots(KNOWN, validated_schedule("1f1b", 2, 1))
    got = [(s.rank, round(s.start, 9), round(s.end, 9), s.cause, s.waited_for) for s in slots]
    assert got == [
        (0, 1.0, 1.1, "between actions", ""),                       # posting the send
        (0, 1.1, 4.5, "message", "BW0 on rank 1 (stage 1)"),
        (0, 4.5, 4.6, "between actions", ""),
        (1, 0.0, 1.3, "warm-up", "F0 on rank 0 (stage 0)"),
        (1, 1.3, 1.5, "warm-up", ""),
        (1, 4.5, 4.6, "cool-down", ""),                              # posting the send, late
        (1, 4.6, 5.5, "all-reduce", ""),
        (1, 5.5, 6.6, "cool-down", ""),                              # rank 0 still at BW0
    ]
    message = slots[1]
    assert message.producer == (1, 2.5, 4.5) and message.producer_waited == 0.0
    assert slots[3].producer == (0, 0.0, 1.0)
    # the all-reduce that ends after the span (rank 0's) is outside the step: not idle
    table = breakdown(slots, 2)
    assert table[0] == pytest.approx({"warm-up": 0, "message": 3.4, "all-reduce": 0,
                                      "between actions": 0.2, "cool-down": 0})
    assert table[1] == pytest.approx({"warm-up": 1.5, "message": 0, "all-reduce": 0.9,
                                      "between actions": 0, "cool-down": 1.2})
    assert longest(slots) is message


def test_a_late_producer_is_named_with_its_own_wait():
    """Rank 1's BW0 starts 2.0 after its F0 ends (it sat idle): rank 0's wait says so."""
    late = [e if not (e.rank == 1 and e.action.kind in ("BW", "SEND_B")) else
            e._replace(start=e.start + 2.0, end=e.end + 2.0) for e in KNOWN]
    late = [e._replace(start=e.start + 2.0, end=e.end + 2.0)
            if e.rank == 0 and e.action.kind in ("BW", ALLREDUCE) else e for e in late]
    late = [e._replace(end=6.5) if e.rank == 0 and e.action.kind == "RECV_B" else e
            for e in late]
    slots = idle_slots(late, validated_schedule("1f1b", 2, 1))
    wait = next(s for s in slots if s.cause == "message")
    assert wait.producer == (1, 4.5, 6.5) and wait.producer_waited == pytest.approx(2.0)


def schedules():
    for name in GENERATORS:
        if name == "naive":
            yield name, 3, 1, None
            continue
        chunks = default_chunks(name)
        yield name, 4, 8, chunks


@pytest.mark.parametrize("name, P, m, V", list(schedules()), ids=lambda v: str(v))
def test_on_every_plan_the_causes_add_up_to_each_ranks_idle_time(name, P, m, V):
    schedule = validated_schedule(name, P, m, V)
    plan = simulate(schedule, Costs(F=1, B=1.3, W=0.7, comm=0.2))
    slots = idle_slots(plan.events, schedule)
    for rank, row in enumerate(breakdown(slots, P)):
        # span minus compute, from the plan's own figures
        assert sum(row.values()) == pytest.approx(plan.makespan - plan.busy[rank], abs=1e-9)
    for s in slots:             # no slot overlaps a compute action of its rank
        for e in plan.events:
            if e.rank == s.rank and e.action.is_compute:
                assert e.end <= s.start + 1e-9 or e.start >= s.end - 1e-9, (s, e)
        if s.cause == "message":
            assert s.producer is not None and s.producer[0] != s.rank


def train(ranks, *args, tmp_path):
    trace = tmp_path / "trace.json"
    done = subprocess.run([*mpiexec_command(ranks), sys.executable, "-m", "mpipipe", "train",
                           "--quiet", "--json", "--trace", str(trace), *args],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    with open(trace) as source:
        return json.loads(done.stdout.splitlines()[-1]), json.load(source)


def idle_from_trace(trace, ranks):
    """Each pipeline rank's idle ms in the trace's last step: span minus compute, where the
    span ends with the last compute action of any rank (the bubble's definition). Each
    rank's times count from its own first action, as the engine counts them from its own
    start of the step (the barrier before it lets the ranks out microseconds apart)."""
    slices = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    last = max(e["args"]["step"] for e in slices)
    step = [e for e in slices if e["args"]["step"] == last and e["cat"] != "reduce"]
    start = {r: min(e["ts"] for e in step if e["args"]["stage_rank"] == r) for r in range(ranks)}
    compute = [e for e in step if e["cat"] == "compute"]
    span = max(e["ts"] + e["dur"] - start[e["args"]["stage_rank"]] for e in compute)
    return [(span - sum(e["dur"] for e in compute if e["args"]["stage_rank"] == r)) / 1e3
            for r in range(ranks)]


@pytest.mark.parametrize("schedule", list(GENERATORS))
def test_on_real_runs_the_causes_add_up_to_the_idle_time_in_the_trace(tmp_path, schedule):
    summary, trace = train(2, "--schedule", schedule, "--steps", "3", "--layers", "8",
                           "--hidden", "32", tmp_path=tmp_path)
    for rank, (row, idle) in enumerate(zip(summary["idle_ms_last_step"],
                                           idle_from_trace(trace, 2))):
        # the trace rounds times to the microsecond: within 1% or 5 microseconds
        assert sum(row.values()) == pytest.approx(idle, rel=0.01, abs=0.005), (rank, row, idle)


def test_a_slow_stage_is_named_by_the_waits_of_the_others(tmp_path):
    """Rank 1 holds 7 of 8 layers: rank 0 spends its idle time waiting for rank 1's
    messages, every such wait names an action on rank 1, and so does the longest."""
    summary, _ = train(2, "--partition", "1,7", "--layers", "8", "--hidden", "256",
                       "--microbatches", "4", "--steps", "3", tmp_path=tmp_path)
    idle = summary["idle_ms_last_step"]
    assert idle[0]["message"] > 0.5 * sum(idle[0].values())
    assert idle[0]["message"] > 3 * idle[1]["message"]
    longest_slot = summary["longest_idle"]
    assert longest_slot["rank"] == 0 and longest_slot["cause"] == "message"
    assert longest_slot["waited_for"].endswith("on rank 1 (stage 1)")
    assert longest_slot["producer"]["rank"] == 1


def test_the_summary_prints_the_breakdown_and_the_replayed_bubble(tmp_path):
    done = subprocess.run([*mpiexec_command(2), sys.executable, "-m", "mpipipe", "train",
                           "--steps", "3", "--quiet", "--json"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert "  idle          rank 0: " in done.stdout and "  longest idle  rank " in done.stdout
    replay = summary["bubble_fraction_last_step_replay"]
    assert f"{replay:.3f} replayed" in done.stdout
    # no run with these action times can beat the replay (its messages are free)
    assert summary["bubble_fraction_last_step"] >= replay - 1e-9
    assert os.path.exists(tmp_path) and 0 <= replay < 1
