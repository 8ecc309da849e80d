"""PyTorch's schedule CSV: small hand-written files, every kind of cell and every mistake.

The files here are written by hand from the format's description (one row per
rank, global stages, I = input gradient, B = full backward, empty cell = idle),
so the reader is checked against the format, not against the writer.
"""

import pytest

from mpipipe.cli import main
from mpipipe.errors import ConfigError, ScheduleError
from mpipipe.schedules import (GENERATORS, lower, make_schedule, read_schedule_file,
                               schedule_from_file, write_schedule_file)
from mpipipe.schedules.actions import BW, F, Action
from mpipipe.plan.simulate import simulate

# Looped placement (stage s on rank s mod 2), split and full backwards, idle cells,
# and the three markers.
LOOPED = """\
0UNSHARD,0F0,0F1,,2F0,2F1,,,2I0,2W0,2I1,2W1,2REDUCE_GRAD,,,0B0,0B1,2RESHARD,0REDUCE_GRAD
,1F0,1F1,,3F0,3B0,3F1,3B1,1B0,1B1
"""

# V placement (stages 0 and 3 on rank 0, 1 and 2 on rank 1) with an overlapped pair.
V_COMPUTE = """\
0F0,0F1,3F0,3I0,3W0,(3F1;0B0)OVERLAP_F_B,3B1,0B1
1F0,2F0,1F1,2F1,2B0,1B0,2B1,1B1
"""

# The same with its messages, where mpipipe's lowering puts them.
V_COMMS = """\
0F0,0SEND_F0,0F1,0SEND_F1,3RECV_F0,3F0,3I0,3SEND_B0,3W0,3RECV_F1,0RECV_B0,(3F1;0B0)OVERLAP_F_B,3B1,3SEND_B1,0RECV_B1,0B1
1RECV_F0,1F0,2F0,2SEND_F0,1RECV_F1,1F1,2F1,2SEND_F1,2RECV_B0,2B0,1B0,1SEND_B0,2RECV_B1,2B1,1B1,1SEND_B1
"""


def write(tmp_path, text, name="schedule.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def actions(text):
    """'F0 F0:1 BW0&' -> Actions (a trailing & marks the first of a pair)."""
    out = []
    for word in text.split():
        pair = word.endswith("&")
        word = word.rstrip("&")
        kind_mb, _, chunk = word.partition(":")
        kind = kind_mb.rstrip("0123456789")
        out.append(Action(kind, int(kind_mb[len(kind):]), int(chunk or 0), pairs_with_next=pair))
    return out


def test_looped_file_every_compute_kind_idle_cells_and_markers(tmp_path):
    found = read_schedule_file(write(tmp_path, LOOPED))
    s = found.schedule
    assert (s.num_ranks, s.chunks, s.num_microbatches) == (2, 2, 2)
    assert s.stage_map == [[0, 2], [1, 3]] and found.placement == "looped"
    assert found.flavour == "compute only" and found.idle_cells == 7
    assert found.markers == {"UNSHARD": 1, "RESHARD": 1, "REDUCE_GRAD": 2}
    markers = [(a.kind, a.chunk) for a in s.programs[0] if a.microbatch is None]
    assert markers == [("UNSHARD", 0), ("REDUCE_GRAD", 1), ("RESHARD", 1), ("REDUCE_GRAD", 0)]
    compute = [a for a in s.programs[0] if a.microbatch is not None]
    assert compute == actions("F0 F1 F0:1 F1:1 B0:1 W0:1 B1:1 W1:1 BW0 BW1")
    assert s.programs[1] == actions("F0 F1 F0:1 BW0:1 F1:1 BW1:1 BW0 BW1")
    text = "\n".join(found.describe())
    assert "looped placement (stage s on rank s mod 2)" in text
    assert "UNSHARD x1, RESHARD x1: do nothing here" in text
    assert "REDUCE_GRAD x2" in text


def test_markers_take_no_time_in_the_plan(tmp_path):
    with_markers = simulate(read_schedule_file(write(tmp_path, LOOPED)).schedule)
    plain = LOOPED.replace("0UNSHARD,", "").replace(",2REDUCE_GRAD", "").replace(
        ",2RESHARD,0REDUCE_GRAD", "")
    without = simulate(read_schedule_file(write(tmp_path, plain, "plain.csv")).schedule)
    assert with_markers.makespan == without.makespan


def test_v_file_with_an_overlapped_pair(tmp_path):
    found = read_schedule_file(write(tmp_path, V_COMPUTE))
    s = found.schedule
    assert s.stage_map == [[0, 3], [1, 2]] and found.placement == "V"
    assert s.programs[0] == actions("F0 F1 F0:1 B0:1 W0:1 F1:1& BW0 BW1:1 BW1")
    assert s.programs[1] == actions("F0 F0:1 F1 F1:1 BW0:1 BW0 BW1:1 BW1")


def test_a_pair_waits_for_both_its_inputs(tmp_path):
    """Chunk costs F = I = W = 1/2, B = 1 (the default costs over 2 chunks). Walked by hand:
    rank 0 runs 0F0 0F1 (0..1), 3F0 once 2F0 is done (1.5..2), 3I0 3W0 (..3); rank 1 runs
    2B0 (2.5..3.5) and 1B0 (..4.5); the pair (3F1;0B0) receives both inputs first, so it
    starts at 4.5: 3F1 (..5), 0B0 (..6); then 3B1 (..7), 2B1 (..8), 1B1 (..9), 0B1 (..10)."""
    timeline = simulate(read_schedule_file(write(tmp_path, V_COMPUTE)).schedule)
    assert timeline.makespan == 10
    assert timeline.busy == [6, 6]


def test_comms_file_in_mpipipe_places_and_its_notes(tmp_path):
    found = read_schedule_file(write(tmp_path, V_COMMS))
    assert found.flavour == "compute + comms"
    assert found.schedule.programs == read_schedule_file(
        write(tmp_path, V_COMPUTE, "c.csv")).schedule.programs
    assert found.notes == ["messages: the same as mpipipe's lowering, in the same places"]


def test_comms_file_with_an_early_receive_is_run_with_mpipipes_lowering(tmp_path):
    """2RECV_B1 posted at rank 1's second cell: a posted receive is waited for only by
    the action that needs it, so the file's own order still runs; mpipipe keeps its place."""
    early = V_COMMS.replace(",2RECV_B1,2B1", ",2B1").replace("1RECV_F0,", "1RECV_F0,2RECV_B1,")
    found = read_schedule_file(write(tmp_path, early))
    assert found.notes[0] == ("rank 1: 1 message(s) earlier than in mpipipe's lowering, "
                              "cell(s) 2 (2RECV_B1)")
    assert "mpipipe keeps its own" in found.notes[1]
    lowered = lower(found.schedule).programs[1]
    where = lowered.index(Action("RECV_B", 1, 1, 0))
    assert lowered[where + 1] == Action(BW, 1, 1)       # received right before it is needed


def test_comms_file_with_a_late_send_that_deadlocks_names_the_receive(tmp_path):
    """Rank 1 sends B0 only after 1F1 (mpipipe would send it right after 1B0): rank 0's
    0B0 waits for it, and rank 1's 1F1 waits for rank 0's 0SEND_F1, which comes after 0B0.
    mpipipe's own lowering would run it, a runtime that follows the file would hang:
    refused, at the receive whose send never comes."""
    late = bad("0F0,0SEND_F0,0RECV_B0,0B0,0F1,0SEND_F1,0RECV_B1,0B1",
               "1RECV_F0,1F0,1B0,1RECV_F1,1F1,1SEND_B0,1B1,1SEND_B1")
    with pytest.raises(ScheduleError, match=(
            r"^row 1 \(rank 0\), cell 3 \(0RECV_B0\): the file's own message order deadlocks "
            r"here: 0RECV_B0, waited for by 0B0 \(cell 4\), is sent by 1SEND_B0 \(cell 6 of "
            r"row 2\), which rank 1 never reaches: it waits at cell 5 \(1F1\) first$")):
        read_schedule_file(write(tmp_path, late))
    on_time = late.replace("1B0,1RECV_F1,1F1,1SEND_B0,", "1B0,1SEND_B0,1RECV_F1,1F1,")
    assert read_schedule_file(write(tmp_path, on_time, "on-time.csv")).notes


def bad(*rows):
    return "\n".join(rows) + "\n"


ONE_STAGE_OK = ["0F0,0F1,0B0,0B1", "1F0,1B0,1F1,1B1"]


@pytest.mark.parametrize("rows,message", [
    (["0F0,0X1,0B0", "1F0,1B0"], r"row 1 \(rank 0\), cell 2 \(0X1\): '0X1' is not an action"),
    (["0F0,0B0,0UNSHARD3", "1F0,1B0"], r"cell 3 \(0UNSHARD3\): UNSHARD takes no micro-batch"),
    (["0F0,0B", "1F0,1B0"], r"cell 2 \(0B\): '0B' needs a micro-batch"),
    (["0F0,(0F1;0SEND_F1)OVERLAP_F_B,0B0,0B1", "1F0,1B0,1F1,1B1"],
     r"cell 2 \(\(0F1;0SEND_F1\)OVERLAP_F_B\): an OVERLAP_F_B pair holds two or more compute"),
    (["0F0,0F1,0B0,0B1", "1F0,1B0,1F1,0B1"],
     r"row 2 \(rank 1\), cell 4 \(0B1\): stage 0 is already on rank 0"),
    (["0F0,0F1,0B0,0B1", "2F0,2B0,2F1,2B1"], "no cell names stage 1"),
    (["0F0,0F0,0B0", "1F0,1B0"], r"row 1 \(rank 0\), cell 2 \(0F0\): 0F0 again \(the first is "
                                 r"cell 1\)"),
    (["0F0,0F1,0B0,0B1", "1F0,1B0,1F1"], r"row 2 \(rank 1\): stage 1 never runs the backward of "
                                         r"micro-batch 1"),
    (["0F0,0F1,0B0,0B1", "1F0,1B0,1I1,1F1"], r"cell 3 \(1I1\): 1I1 comes before 1F1 \(cell 4\)"),
    (["0F0,0F1,0B0,0W1,0I1", "1F0,1B0,1F1,1B1"],
     r"row 1 \(rank 0\), cell 4 \(0W1\): 0W1 comes before 0I1 \(cell 5\), which it needs"),
    (["0F0,0F1,0B0,0I1", "1F0,1B0,1F1,1B1"], r"cell 4 \(0I1\): 0I1 has no 0W1 after it"),
    (["0F0,0F1,0B0,0I0,0B1", "1F0,1B0,1F1,1B1"], r"cell 3 \(0B0\): 0B0 is the full backward"),
    (["0F0,0F1,0B0,0REDUCE_GRAD,0B1", "1F0,1B0,1F1,1B1"],
     r"cell 4 \(0REDUCE_GRAD\): 0REDUCE_GRAD comes before 0B1 \(cell 5\)"),
    (["0F0,0B0,0F1,0B1", "1F1,1B1,1F0,1B0"],
     r"row 1 \(rank 0\), cell 2 \(0B0\): the schedule deadlocks:"),
    (["0F0,0F1,0I0,0W0,0B1", "1F0,1B0,1F1,1B1,2F0,2F1,2B0,2B1"],
     "the ranks hold different numbers of stages"),
    (["0F0,3F0,3B0,0B0", "2F0,1F0,2B0,1B0"],
     r"row 2 \(rank 1\), cell 1 \(2F0\): .*rank 1 runs F0:1 \(stage 2\) before F0 of stage 1"),
    # compute + comms files
    (["0F0,0SEND_F0,0RECV_B0,0B0", "1RECV_F0,1F0,1B0"],
     r"row 2 \(rank 1\): the file has no 1SEND_B0"),
    (["0F0,0SEND_F0,0SEND_F0,0RECV_B0,0B0", "1RECV_F0,1F0,1B0,1SEND_B0"],
     r"row 1 \(rank 0\), cell 3 \(0SEND_F0\): mpipipe's lowering has no 0SEND_F0"),
    (["0F0,0SEND_F0,0B0,0RECV_B0", "1RECV_F0,1F0,1B0,1SEND_B0"],
     r"row 1 \(rank 0\), cell 4 \(0RECV_B0\): comes after 0B0 \(cell 3\), which needs it"),
    (["0SEND_F0,0F0,0RECV_B0,0B0", "1RECV_F0,1F0,1B0,1SEND_B0"],
     r"cell 1 \(0SEND_F0\): comes before 0F0 \(cell 2\), which produces it"),
    # a compute order that deadlocks, in a comms file: named at the file's own receive
    (["0F0,0SEND_F0,0RECV_B0,0B0,0F1,0SEND_F1,0RECV_B1,0B1",
      "1RECV_F1,1F1,1B1,1SEND_B1,1RECV_F0,1F0,1B0,1SEND_B0"],
     r"^row 1 \(rank 0\), cell 3 \(0RECV_B0\): the schedule deadlocks:"),
])
def test_each_mistake_is_named_by_row_and_cell(tmp_path, rows, message):
    with pytest.raises(ScheduleError, match=message):
        read_schedule_file(write(tmp_path, bad(*rows)))


def test_the_mistake_free_versions_read(tmp_path):
    read_schedule_file(write(tmp_path, bad(*ONE_STAGE_OK)))
    read_schedule_file(write(tmp_path, bad("0F0,0SEND_F0,0RECV_B0,0B0",
                                           "1RECV_F0,1F0,1B0,1SEND_B0")))
    # a receive posted first is waited for only by 0B0, which needs it: no deadlock
    read_schedule_file(write(tmp_path, bad("0RECV_B0,0F0,0SEND_F0,0B0",
                                           "1RECV_F0,1F0,1B0,1SEND_B0")))


def test_an_unreadable_or_empty_file(tmp_path):
    with pytest.raises(ScheduleError, match="cannot read the schedule file"):
        read_schedule_file(str(tmp_path / "missing.csv"))
    with pytest.raises(ScheduleError, match="holds no actions"):
        read_schedule_file(write(tmp_path, "\n,,\n"))


def test_the_run_must_match_the_file(tmp_path):
    path = write(tmp_path, V_COMPUTE)
    with pytest.raises(ConfigError, match="for 2 pipeline ranks .* but the pipeline has 4"):
        schedule_from_file(path, num_ranks=4)
    with pytest.raises(ConfigError, match="runs 2 micro-batches but --microbatches is 8"):
        schedule_from_file(path, num_microbatches=8)
    assert schedule_from_file(path, 2, 2, 2).schedule.num_stages == 4


@pytest.mark.parametrize("name", list(GENERATORS))
@pytest.mark.parametrize("P", [1, 2, 3, 4])
@pytest.mark.parametrize("comms", [False, True], ids=["compute", "comms"])
def test_every_schedule_round_trips(tmp_path, name, P, comms):
    m = {"naive": 1, "interleaved": 2 * P}.get(name, 2 * P + 1)
    schedule = make_schedule(name, P, m)
    path = str(tmp_path / f"{name}.csv")
    write_schedule_file(schedule, path, comms=comms)
    back = read_schedule_file(path)
    assert back.schedule.programs == schedule.programs
    assert back.schedule.stage_map == schedule.stage_map
    assert lower(back.schedule).programs == lower(schedule).programs
    if comms and P > 1:
        assert back.notes == ["messages: the same as mpipipe's lowering, in the same places"]


def test_export_writes_what_pytorch_reads(tmp_path, capsys):
    path = tmp_path / "dpv.csv"
    assert main(["export", "--schedule", "dualpipev", "--stages", "2", "--microbatches", "4",
                 str(path)]) == 0
    rows = path.read_text().splitlines()
    assert rows[0] == ("0F0,0F1,0F2,3F0,3I0,3W0,3F1,(0F3;3B1)OVERLAP_F_B,(3F2;0B0)OVERLAP_F_B,"
                       "3B2,(3F3;0B1)OVERLAP_F_B,3B3,0I2,0W2,0I3,0W3")
    assert "compute only" in capsys.readouterr().out
    assert main(["export", "--schedule", "1f1b", "--stages", "2", "--microbatches", "2",
                 "--comms", str(path)]) == 0
    assert path.read_text().splitlines() == ["0F0,0SEND_F0,0F1,0SEND_F1,0RECV_B0,0B0,0RECV_B1,0B1",
                                             "1RECV_F0,1F0,1B0,1SEND_B0,1RECV_F1,1F1,1B1,1SEND_B1"]
    assert main(["export", "--schedule", "dualpipev", "--stages", "4", "--microbatches", "4",
                 str(path)]) == 2
    assert "at least 2 x ranks micro-batches" in capsys.readouterr().err


def test_simulate_reads_a_schedule_file(tmp_path, capsys):
    path = write(tmp_path, V_COMMS)
    assert main(["simulate", "--schedule-file", path]) == 0
    out = capsys.readouterr().out
    assert "compute + comms," in out and "V placement (stages s and 3-s on rank s)" in out
    assert "makespan         10 " in out and "'&': an overlapped pair" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert main(["simulate", "--schedule-file", path, "--schedule", "1f1b"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["simulate", "--schedule-file", path, "--stages", "3"]) == 2
    assert "but the pipeline has 3" in capsys.readouterr().err
    assert main(["simulate", "--schedule-file", write(tmp_path, bad("0F0,0Q0"), "q.csv")]) == 2
    assert "row 1 (rank 0), cell 2 (0Q0)" in capsys.readouterr().err


def test_pairs_are_drawn_as_pairs(tmp_path):
    from mpipipe.measure.plot import _pairs
    from mpipipe.plan.timeline import render

    timeline = simulate(read_schedule_file(write(tmp_path, V_COMPUTE)).schedule)
    pairs = _pairs(timeline.events)
    assert [(str(a.action), str(b.action)) for a, b in pairs] == [("F1:1&", "BW0")]
    assert "f1&   BW0" in render(timeline.events, 2, timeline.makespan, width=120)


def test_markers_in_a_trace_and_its_report():
    from mpipipe.measure.report import summarise
    from mpipipe.measure.trace import chrome_trace

    actions = [(Action(F, 0), 0.0, 1.0), (Action("REDUCE_GRAD", None), 1.0, 1.5),
               (Action(BW, 0), 1.5, 2.5)]
    trace = chrome_trace([(0, 0, 0, 0, 0, 0.0, actions)], {})
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert [(e["name"], e["cat"]) for e in slices] == [
        ("F0", "compute"), ("REDUCE_GRAD", "marker"), ("BW0", "compute")]
    row = summarise(trace)["ranks"][0]
    assert row["compute_ms"] == pytest.approx(2000) and row["idle_ms"] == pytest.approx(0)


@pytest.mark.parametrize("rank0,message", [
    ([Action(F, 0), Action("REDUCE_GRAD", None), Action(BW, 0)],
     r"REDUCE_GRAD \(action #1\) comes before BW0 \(action #2\)"),
    ([Action(F, 0), Action(BW, 0), Action("REDUCE_GRAD", None), Action("REDUCE_GRAD", None)],
     "a second REDUCE_GRAD"),
    ([Action(F, 0, pairs_with_next=True), Action("UNSHARD", None), Action(BW, 0)],
     "an overlapped pair is two compute actions"),
])
def test_validate_checks_markers_and_pairs_in_any_schedule(rank0, message):
    """The same rules hold for schedules built in Python, not read from a file."""
    from mpipipe.schedules import validate
    from mpipipe.schedules.actions import Schedule

    with pytest.raises(ScheduleError, match=message):
        validate(Schedule("built", 2, 1, [rank0, [Action(F, 0), Action(BW, 0)]]))
