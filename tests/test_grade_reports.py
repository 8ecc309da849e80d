"""One `mpipipe grade` run, three reports: JUnit XML, Gradescope's results.json, a JSON
summary, each with every exercise's points (the MPI exercise included, also when it
deadlocks), and an exit status an autograder can use (--fail-below-full).

The points expected are read from the course's step list (what each step is worth),
the files are parsed as the tools that read them would: ElementTree, json.
"""

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mpipipe.cli.grade import EXERCISES

from .test_grader_pytest import DEADLOCK

ROOT = Path(__file__).resolve().parent.parent
TOTAL = sum(e.max_points for e in EXERCISES)
STEPS = [(e.name, s.name, s.points) for e in EXERCISES for s in e.steps]


def grade(folder, tmp_path, *options, timeout=120):
    done = subprocess.run([sys.executable, "-m", "mpipipe", "grade", str(folder),
                           "--junit", str(tmp_path / "grade.xml"),
                           "--gradescope", str(tmp_path / "results.json"),
                           "--json", str(tmp_path / "summary.json"), *options],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    junit = ET.parse(tmp_path / "grade.xml").getroot().find("testsuite")
    return (done, junit, json.loads((tmp_path / "results.json").read_text()),
            json.loads((tmp_path / "summary.json").read_text()))


def case_points(junit):
    """[(exercise, step, points)] and the suite's totals, from the JUnit XML."""
    cases = [(c.get("classname"), c.get("name"),
              int(c.find("properties/property[@name='points']").get("value")))
             for c in junit.iter("testcase")]
    totals = {p.get("name"): int(p.get("value")) for p in junit.find("properties")}
    return cases, totals


def test_the_solutions_get_every_point_in_every_report(tmp_path):
    done, junit, gradescope, summary = grade(ROOT / "lessons" / "solutions", tmp_path,
                                             "--fail-below-full")
    assert done.returncode == 0, done.stdout + done.stderr
    cases, totals = case_points(junit)
    assert cases == STEPS
    assert totals == {"points": TOTAL, "max_points": TOTAL}
    assert junit.find(".//failure") is None and junit.find(".//skipped") is None
    assert gradescope["score"] == TOTAL
    assert [(t["name"], t["score"], t["max_score"], t["status"]) for t in gradescope["tests"]] == [
        (f"{e}: {s}", p, p, "passed") for e, s, p in STEPS]
    assert (summary["points"], summary["max_points"], summary["full_marks"]) == (TOTAL, TOTAL, True)


def test_the_untouched_exercises_get_zero_and_fail_below_full(tmp_path):
    done, junit, gradescope, summary = grade(ROOT / "lessons" / "exercises", tmp_path,
                                             "--fail-below-full")
    assert done.returncode == 1, done.stdout + done.stderr
    cases, totals = case_points(junit)
    assert [c[:2] for c in cases] == [s[:2] for s in STEPS] and {c[2] for c in cases} == {0}
    assert totals == {"points": 0, "max_points": TOTAL}
    failures = [f.get("message") for f in junit.iter("failure")]
    assert len(failures) == len(EXERCISES) and all(m.endswith("not written yet") for m in failures)
    assert gradescope["score"] == 0 and all(t["status"] == "failed" for t in gradescope["tests"])
    assert sum(t["max_score"] for t in gradescope["tests"]) == TOTAL
    assert summary["full_marks"] is False
    assert [e["feedback"] for e in summary["exercises"]] == failures


def test_without_fail_below_full_a_low_score_still_exits_0(tmp_path):
    done, *_ = grade(ROOT / "lessons" / "exercises", tmp_path)
    assert done.returncode == 0, done.stderr


def test_a_deadlocking_send_recv_is_0_points_with_its_reason_in_every_report(tmp_path):
    shutil.copytree(ROOT / "lessons" / "solutions", tmp_path / "copy")
    (tmp_path / "copy" / "ex6_send_recv.py").write_text(DEADLOCK)
    done, junit, gradescope, summary = grade(tmp_path / "copy", tmp_path, "--time-limit", "6")
    assert done.returncode == 0, done.stderr
    reason = ("ex6_send_recv did not finish within 6 s under mpiexec -n 2: some rank is waiting "
              "for a message that never comes")
    cases, totals = case_points(junit)
    assert [p for e, _, p in cases if e == "ex6_send_recv"] == [0, 0]
    assert totals == {"points": TOTAL - 2, "max_points": TOTAL}
    assert [f.get("message") for f in junit.iter("failure")] == [reason]
    ex6 = [t for t in gradescope["tests"] if t["name"].startswith("ex6_send_recv")]
    assert [(t["score"], t["status"]) for t in ex6] == [(0, "failed"), (0, "failed")]
    assert ex6[0]["output"] == reason and gradescope["score"] == TOTAL - 2
    assert summary["points"] == TOTAL - 2


@pytest.mark.parametrize("where", ["missing/grade.xml", "a-file/grade.xml"])
def test_a_report_that_cannot_be_written_exits_2(tmp_path, where):
    (tmp_path / "a-file").write_text("")
    done = subprocess.run([sys.executable, "-m", "mpipipe", "grade", "lessons/exercises", "ex3",
                           "--junit", str(tmp_path / where)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("mpipipe grade: cannot write the report:"), done.stderr
    assert "Traceback" not in done.stderr
