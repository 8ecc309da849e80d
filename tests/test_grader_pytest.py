"""The exercises graded by pytest, as a course's autograder runs it: one test per step, the
same points and feedback as `mpipipe grade`, every point in one JUnit XML (the MPI
exercise graded under mpiexec by the run itself), and the MPI exercise under
`mpiexec -n 2 ... --with-mpi` too.

Every run is a subprocess with a time limit, in the project's top folder, as an
instructor types it; planted answers live in tmp_path and are graded through
MPIPIPE_EXERCISES, never written into lessons/.
"""

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from mpipipe.cli.grade import EXERCISES, grade
from mpipipe.comm.launcher import mpiexec_command

from .test_grader_plants import plant

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "lessons" / "solutions"
ON_MPI = [e for e in EXERCISES if e.ranks > 1]
TOTAL = sum(e.max_points for e in EXERCISES)


def run_pytest(*args, folder=None, under_mpi=False, timeout=120):
    """`python -m pytest lessons/exercises ARGS`, grading `folder` if given."""
    env = dict(os.environ)
    env.pop("MPIPIPE_EXERCISES", None)
    if folder is not None:
        env["MPIPIPE_EXERCISES"] = str(folder)
    command = [sys.executable, "-m", "pytest", "lessons/exercises", "-p", "no:cacheprovider",
               *map(str, args)]
    if under_mpi:
        command = ["timeout", "-k", "5", str(timeout - 10), *mpiexec_command(2), *command,
                   "--with-mpi", "-m", "mpi"]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def junit(path):
    """(suite properties, [testcase]), each testcase a dict: name, exercise (its file),
    outcome, message, and its properties."""
    suite = ET.parse(path).getroot().find("testsuite")
    totals = {p.get("name"): p.get("value") for p in suite.find("properties") or []}
    cases = []
    for case in suite.iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "skipped", "error"):
            found = case.find(kind)
            if found is not None:
                outcome, message = kind, found.get("message")
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        cases.append({**properties, "name": case.get("name"), "outcome": outcome,
                      "message": message, "exercise": case.get("classname").split(".")[-1]})
    return totals, cases


def points_table(stdout):
    """{exercise: 'points/max'} from the table pytest prints at the end."""
    section = stdout.split(" points ")[-1]
    return {line.split()[0]: line.split()[1] for line in section.splitlines()
            if line[:2] == "ex" and "/" in line.split()[1]}


def test_the_untouched_exercises_fail_or_skip_every_step_with_0_points(tmp_path):
    done = run_pytest("--junitxml", tmp_path / "report.xml")
    assert done.returncode == 1, done.stdout + done.stderr
    totals, cases = junit(tmp_path / "report.xml")
    assert [(c["exercise"], c["name"]) for c in cases] == [
        (e.name, step.name) for e in EXERCISES for step in e.steps]   # one test a step, in order
    for exercise in EXERCISES:   # the MPI exercise too: graded, not skipped
        first, *rest = [c for c in cases if c["exercise"] == exercise.name]
        assert first["outcome"] == "failure" and first["message"].endswith("not written yet")
        assert all(c["outcome"] == "skipped" and f"{first['name']} failed first" in c["message"]
                   for c in rest)
        assert all(c["points"] == "0" for c in [first, *rest])
    assert totals == {"points": "0", "max_points": str(TOTAL)}
    assert re.search(rf"total +0/{TOTAL}\n", done.stdout)
    assert "Traceback" not in done.stdout


def test_the_solutions_get_full_marks(tmp_path):
    done = run_pytest("--junitxml", tmp_path / "report.xml", "-v", folder="lessons/solutions")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "lessons/exercises/ex1_gpipe.py::runs_without_deadlock PASSED 2/2" in done.stdout
    totals, cases = junit(tmp_path / "report.xml")
    assert totals == {"points": str(TOTAL), "max_points": str(TOTAL)}
    assert len(cases) == sum(len(e.steps) for e in EXERCISES)
    assert all(c["outcome"] == "passed" and c["points"] == c["max_points"] for c in cases)
    assert points_table(done.stdout) == {e.name: f"{e.max_points}/{e.max_points}"
                                         for e in EXERCISES}


def test_a_deadlocking_send_recv_costs_its_points_with_the_reason_in_the_junit_file(tmp_path):
    """Both ranks call MPI_COMM_WORLD's blocking Recv first, past the watched communicator:
    a real deadlock. The run itself still ends, and the one JUnit file has ex6 at 0 points
    with why, beside the other exercises' points."""
    shutil.copytree(SOLUTIONS, tmp_path / "copy")
    (tmp_path / "copy" / "ex6_send_recv.py").write_text(DEADLOCK)
    done = run_pytest("--junitxml", tmp_path / "report.xml", "--grade-time-limit", "6",
                      folder=tmp_path / "copy", timeout=90)
    assert done.returncode == 1, done.stdout + done.stderr
    totals, cases = junit(tmp_path / "report.xml")
    ex6 = [c for c in cases if c["exercise"] == "ex6_send_recv"]
    assert ex6[0]["outcome"] == "failure" and ex6[0]["message"] == (
        "ex6_send_recv did not finish within 6 s under mpiexec -n 2: some rank is waiting for "
        "a message that never comes"), ex6
    assert [c["points"] for c in ex6] == ["0", "0"]
    assert totals == {"points": str(TOTAL - 2), "max_points": str(TOTAL)}


DEADLOCK = """
import numpy as np
from mpi4py import MPI


def pass_activation(comm, array, source, dest, tag):
    buffer = np.empty_like(array)
    MPI.COMM_WORLD.Recv(buffer, source=1 - MPI.COMM_WORLD.Get_rank(), tag=tag)
    return buffer
"""


def test_fewer_ranks_than_the_mpi_exercise_needs_is_refused(tmp_path):
    done = subprocess.run([*mpiexec_command(1), sys.executable, "-m", "pytest",
                           "lessons/exercises", "-p", "no:cacheprovider", "--with-mpi", "-m",
                           "mpi"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 4, done.stdout + done.stderr
    assert ("ex6_send_recv is graded on 2 MPI ranks and this run has 1: run mpiexec -n 2"
            in done.stderr)


def test_pytest_and_mpipipe_grade_agree_on_points_and_feedback(tmp_path):
    """Planted mistakes, a file that does not load and an endless loop: the same points and
    feedback from both front ends, and each costs its own exercise only."""
    shutil.copytree(SOLUTIONS, tmp_path / "copy")
    folder = tmp_path / "copy"
    for name in ("1f1b that is gpipe", "stash in float64", "warm-up one long",
                 "zero bubble runs each W right after its B"):
        plant(folder, name)
    (folder / "ex3_bubble.py").write_text("def bubble_fraction(P, m)\n    return 0\n")
    (folder / "ex5_partition.py").write_text("import time\n\n"
                                             "def balanced_partition(counts, stages):\n"
                                             "    while True:\n"
                                             "        time.sleep(0.05)\n")
    done = run_pytest("--junitxml", tmp_path / "report.xml", "--grade-time-limit", "2",
                      folder=folder)
    assert done.returncode == 1, done.stdout + done.stderr
    results = {r.exercise: r for r in grade(folder, seconds=2)}
    assert points_table(done.stdout) == {name: f"{r.points}/{r.max_points}"
                                         for name, r in results.items()}
    assert results["ex3_bubble"].feedback.startswith("ex3_bubble.py does not load: SyntaxError")
    assert results["ex5_partition"].feedback == ("ex5_partition did not finish within 2 s: is "
                                                 "there a loop that never ends?")
    untouched = {"ex1_gpipe", "ex4_split_colours"}
    assert all(results[name].points == results[name].max_points for name in untouched)
    _, cases = junit(tmp_path / "report.xml")
    failed = {c["exercise"]: c["message"] for c in cases if c["outcome"] == "failure"}
    assert failed == {name: r.feedback for name, r in results.items() if r.feedback}


def test_a_folder_with_no_exercises_is_a_usage_error():
    done = run_pytest(folder="nowhere")
    assert done.returncode == 4
    assert "MPIPIPE_EXERCISES=nowhere is not a folder of exercises" in done.stderr


def test_the_mpi_exercise_is_graded_on_two_ranks(tmp_path):
    done = run_pytest("--junitxml", tmp_path / "report.xml", folder="lessons/solutions",
                      under_mpi=True)
    assert done.returncode == 0, done.stdout + done.stderr
    totals, cases = junit(tmp_path / "report.xml")   # one file, written by rank 0 alone
    assert totals == {"points": "2", "max_points": "2"}
    assert [(c["name"], c["outcome"], c["points"]) for c in cases] == [
        (step.name, "passed", str(step.points)) for e in ON_MPI for step in e.steps]
    assert done.stdout.count("== points ==") == 1 and "ex6_send_recv   2/2  ok" in done.stdout


def test_the_untouched_mpi_exercise_gets_0_points_on_two_ranks(tmp_path):
    done = run_pytest("--junitxml", tmp_path / "report.xml", under_mpi=True)
    assert done.returncode == 1, done.stdout + done.stderr
    totals, cases = junit(tmp_path / "report.xml")
    assert totals == {"points": "0", "max_points": "2"}
    assert [(c["outcome"], c["message"]) for c in cases] == [
        ("failure", "pass_activation: not written yet"),
        ("skipped", f"{ON_MPI[0].steps[0].name} failed first, and this step builds on it")]


def test_a_wrong_message_under_mpi_is_feedback_not_a_hang(tmp_path):
    """The receiver leaves out the tag: on either rank the watched communicator says so, the
    ranks agree, the second step is skipped, and the job ends at once."""
    plant(tmp_path, "recv without tag")
    done = run_pytest("--junitxml", tmp_path / "report.xml", folder=tmp_path, under_mpi=True,
                      timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    _, cases = junit(tmp_path / "report.xml")
    assert [c["outcome"] for c in cases] == ["failure", "skipped"]
    assert cases[0]["message"] == ("pass_activation(comm, array, source=0, dest=1, tag=7): "
                                   "rank 1 calls Recv without tag=7: it would take the next "
                                   "message from rank 0 whatever its tag, maybe another "
                                   "micro-batch's")
    assert "ex6_send_recv   0/2" in done.stdout
