"""Timelines in the terminal and as PNG, traces, reports, the progress bar."""

import io
import json
import os
import re
import subprocess
import sys

import pytest

from mpipipe.comm.launcher import mpiexec_command
from mpipipe.cli.progress import Progress
from mpipipe.measure.report import summarise
from mpipipe.schedules import validated_schedule
from mpipipe.schedules.actions import Event
from mpipipe.plan.simulate import simulate
from mpipipe.plan.timeline import render

DATA = os.path.join(os.path.dirname(__file__), "data")


def test_ascii_1f1b_matches_the_stored_picture():
    timeline = simulate(validated_schedule("1f1b", 4, 8))
    with open(os.path.join(DATA, "1f1b_p4_m8.txt")) as stored:
        assert render(timeline.events, 4, timeline.makespan) + "\n" == stored.read()


@pytest.mark.parametrize("name,m", [("gpipe", 32), ("zbv", 16), ("interleaved", 8), ("1f1b", 2)])
def test_ascii_fits_80_columns_and_shows_every_action(name, m):
    schedule = validated_schedule(name, 4, m)
    text = render(simulate(schedule).events, 4)
    assert max(len(line) for line in text.splitlines()) <= 80
    for rank in range(4):       # every compute action of every rank is a box of its own
        drawn = "".join(line.split("|", 1)[1] for line in text.splitlines()
                        if line.startswith(f"rank {rank} |"))
        boxes = re.findall(r"bw|[fbwr]", drawn, flags=re.IGNORECASE)
        actions = [a for a in schedule.programs[rank] if a.is_compute]
        assert len(boxes) == len(actions), (rank, drawn)


def test_ascii_of_measured_events_in_ms():
    from mpipipe.schedules.actions import Action

    events = [Event(0, Action("F", 0), 0.0, 1.5), Event(1, Action("F", 0), 1.5, 3.0),
              Event(1, Action("BW", 0), 3.0, 6.0), Event(0, Action("BW", 0), 6.0, 9.0)]
    text = render(events, 2, unit="ms")
    assert "rank 0 |F0" in text and "BW0" in text and "ms" in text


def test_png_timeline_has_the_right_size_and_is_not_blank(tmp_path):
    image = pytest.importorskip("matplotlib.image", reason="matplotlib (the plot extra) is needed")
    from mpipipe.measure.plot import draw

    timeline = simulate(validated_schedule("zb-h1", 4, 8))
    path = tmp_path / "plan.png"
    draw(path, [(timeline.events, 4, "zb-h1", "time units")] * 2)
    pixels = image.imread(path)
    height, width = pixels.shape[:2]
    assert width == 1100
    assert abs(height - 100 * (2 * (0.9 + 0.35 * 4) + 0.6)) <= 1
    assert pixels[..., :3].std() > 0.1                      # not one flat colour
    coloured = (abs(pixels[..., 0] - pixels[..., 2]) > 0.2).mean()
    assert coloured > 0.05                                   # boxes really drawn


def test_progress_bar_only_on_a_terminal(monkeypatch):
    monkeypatch.delenv("MPIPIPE_PROGRESS", raising=False)
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    bar = Progress(10, 256, stream=screen)
    bar.update(5, 0.5)
    bar.print("step 5")
    bar.update(10, 0.25)
    bar.close()
    text = screen.getvalue()
    assert "\r[###############---------------] 5/10  loss 0.5000" in text
    assert "step 5\n" in text and text.endswith("\n") and "samples/s" in text
    plain = io.StringIO()
    quiet = Progress(10, 256, stream=plain)
    quiet.update(5, 0.5)
    quiet.print("step 5")
    assert plain.getvalue() == "step 5\n"
    monkeypatch.setenv("MPIPIPE_PROGRESS", "1")     # under mpiexec: a pipe, the bar on request
    piped = io.StringIO()
    Progress(10, 256, stream=piped).update(5, 0.5)
    assert "5/10  loss 0.5000" in piped.getvalue()
    monkeypatch.setenv("MPIPIPE_PROGRESS", "0")
    off = Terminal()
    Progress(10, 256, stream=off).update(5, 0.5)
    assert off.getvalue() == ""


def test_trace_report_and_png_from_a_real_run(tmp_path):
    trace_path, png_path = tmp_path / "run.json", tmp_path / "run.png"
    steps = 3
    command = [*mpiexec_command(2), sys.executable, "-m", "mpipipe", "train", "--schedule",
               "zb-h1", "--microbatches", "4", "--steps", str(steps), "--quiet",
               "--trace", str(trace_path), "--timeline", str(png_path), "--compare"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    trace = json.loads(trace_path.read_text())
    assert trace["otherData"]["schedule"] == "zb-h1"
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    lowered = validated_schedule("zb-h1", 2, 4)
    for rank in (0, 1):
        planned = [a for a in lowered.programs[rank] if a.is_compute]
        traced = [e for e in slices if e["pid"] == rank and e["cat"] == "compute"]
        assert len(traced) == steps * len(planned)            # one slice per compute action
        assert sorted(e["name"] for e in traced) == sorted(str(a) for a in planned * steps)
        assert all(e["dur"] >= 0 for e in traced)
    waits = [e for e in slices if e["cat"] == "wait"]
    assert waits and all(e["name"].startswith("wait RECV_") for e in waits)
    summary = summarise(trace)
    assert summary["steps"] == steps and len(summary["ranks"]) == 2
    assert all(0 < r["bubble_fraction"] < 1 for r in summary["ranks"])
    assert png_path.stat().st_size > 10_000 or not _has_matplotlib()
    report = subprocess.run([sys.executable, "-m", "mpipipe", "report", str(trace_path)],
                            capture_output=True, text=True, timeout=60)
    assert report.returncode == 0 and "<- slowest" in report.stdout


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


def test_report_refuses_a_file_that_is_not_a_trace(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    done = subprocess.run([sys.executable, "-m", "mpipipe", "report", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "not a Chrome trace" in done.stderr
