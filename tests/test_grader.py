"""The course grader, `mpipipe grade`: every point for the solutions, none for the stubs,
a wrong answer, a broken file or an endless loop costing its own exercise only, and the
grader's references checked against independent ones (the planted mistakes of every
exercise are in test_grader_plants.py, the pytest front end in test_grader_pytest.py).

Planted answers are written into tmp_path, never into lessons/. The MPI
exercise's grading runs `mpiexec -n 2` in a subprocess under a time limit, so
no test here can hang; the command-line runs have time limits of their own.
"""

import ast
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mpipipe.cli.grade import EXERCISES, grade
from mpipipe.course.base import load_exercise
from mpipipe.course.interleaved_checks import INTERLEAVED_SIZES, interleaved_with
from mpipipe.course.recompute_checks import STASH_CASES, STEP_CASES, engine_stash_bytes
from mpipipe.course.schedule_checks import (BUBBLE_SIZES, PARTITION_CASES, SCHEDULE_SIZES,
                                             lightest_split, stage_loads)
from mpipipe.plan.partition import balanced_by_params
from mpipipe.schedules import make_schedule
from mpipipe.plan.simulate import Costs, simulate

from .test_grader_plants import SEND_RECV, plant

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "lessons" / "solutions"
STUBS = ROOT / "lessons" / "exercises"
TOTAL = sum(exercise.max_points for exercise in EXERCISES)


def run_grader(*args, timeout=60):
    """`python -m mpipipe.cli.grade ARGS` as a student runs it, killed if it hangs."""
    return subprocess.run([sys.executable, "-m", "mpipipe.cli.grade", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_the_solutions_get_every_point():
    done = run_grader(SOLUTIONS)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for exercise in EXERCISES:
        assert f"{exercise.max_points}/{exercise.max_points}  ok" in next(
            line for line in lines if line.startswith(exercise.name)), done.stdout
    assert lines[-1].split() == ["total", f"{TOTAL}/{TOTAL}"]
    assert len(lines) == len(EXERCISES) + 1   # no feedback lines


def test_the_solutions_graded_in_process_have_no_feedback():
    results = grade(SOLUTIONS)
    assert [r.exercise for r in results] == [e.name for e in EXERCISES]
    assert [(r.points, r.feedback) for r in results] == [(r.max_points, "") for r in results]


def test_the_stubs_get_zero_quickly_and_say_not_written_yet():
    started = time.monotonic()
    done = run_grader(STUBS, timeout=30)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("not written yet") == len(EXERCISES), done.stdout
    assert done.stdout.splitlines()[-1].split() == ["total", f"0/{TOTAL}"]
    assert seconds < 10


def test_every_stub_raises_write_me_and_has_a_docstring():
    for path in sorted(STUBS.glob("ex*.py")):
        source = path.read_text()
        functions = [node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)]
        assert functions, path
        for function in functions:
            assert "Hint" in (ast.get_docstring(function) or ""), function.name
            assert ast.get_source_segment(source, function).endswith(
                f'raise NotImplementedError("write me: {function.name}")'), function.name


@pytest.mark.parametrize("args", [["nowhere"], ["README.md"], ["tests"], [STUBS, "ex0"]])
def test_no_exercises_there_exits_2(args):
    done = run_grader(*args)
    assert done.returncode == 2
    assert "mpipipe grade:" in done.stderr and done.stdout == ""


def test_a_wrong_answer_is_graded_with_exit_0_and_its_feedback(tmp_path):
    shutil.copytree(SOLUTIONS, tmp_path, dirs_exist_ok=True)
    plant(tmp_path, "bubble one too many")
    done = run_grader(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "    bubble_fraction(4, 8) returned 0.25, expected 0.2727" in done.stdout
    assert done.stdout.splitlines()[-1].split() == ["total", f"{TOTAL - 2}/{TOTAL}"]


def test_an_mpi_job_that_hangs_is_stopped_at_the_time_limit(tmp_path):
    """The first case passes; in the second the receiver waits forever in a Barrier of
    COMM_WORLD's that no other rank calls (going around the watched communicator)."""
    (tmp_path / "ex6_send_recv.py").write_text(textwrap.dedent(SEND_RECV.format(
        send="comm.Send(array, dest=dest, tag=tag)",
        receive="from mpi4py import MPI; MPI.COMM_WORLD.Barrier() if dest == 0 else None; "
                "buffer = np.empty_like(array); comm.Recv(buffer, source, tag); return buffer")))
    started = time.monotonic()
    [result] = grade(tmp_path, ["ex6"], seconds=3)
    assert time.monotonic() - started < 15
    assert result.points == 1
    assert result.feedback == ("ex6_send_recv did not finish within 3 s under mpiexec -n 2: "
                               "some rank is waiting for a message that never comes")
    assert [step.outcome for step in result.steps] == ["passed", "failed"]


def test_an_endless_loop_costs_only_its_exercise(tmp_path):
    shutil.copytree(SOLUTIONS, tmp_path, dirs_exist_ok=True)
    (tmp_path / "ex3_bubble.py").write_text("def bubble_fraction(P, m):\n"
                                            "    while True:\n"
                                            "        try:\n"
                                            "            pass\n"
                                            "        except Exception:\n"
                                            "            pass\n")
    started = time.monotonic()
    serial = [e.name for e in EXERCISES if e.ranks == 1]   # an MPI job may take 1 s to start
    results = {r.exercise: r for r in grade(tmp_path, serial, seconds=1)}
    assert time.monotonic() - started < 10
    assert results["ex3_bubble"].points == 0
    assert "did not finish within 1 s" in results["ex3_bubble"].feedback
    assert all(r.points == r.max_points for name, r in results.items() if name != "ex3_bubble")


def test_broken_and_missing_files_cost_only_their_exercises(tmp_path):
    shutil.copytree(SOLUTIONS, tmp_path, dirs_exist_ok=True)
    (tmp_path / "ex3_bubble.py").write_text("def bubble_fraction(P, m)\n    return 0\n")
    (tmp_path / "ex1_gpipe.py").write_text("import math\n\nSTEP = 1 / 0\n")
    (tmp_path / "ex4_split_colours.py").write_text("def pipeline(r, pp, dp):\n    return 0\n")
    (tmp_path / "ex5_partition.py").unlink()
    results = {r.exercise: r for r in grade(tmp_path)}
    assert results["ex3_bubble"].feedback == (
        "ex3_bubble.py does not load: SyntaxError: expected ':' (line 1 of ex3_bubble.py)")
    assert results["ex1_gpipe"].feedback == (
        "ex1_gpipe.py does not load: ZeroDivisionError: division by zero (line 3 of ex1_gpipe.py)")
    assert results["ex4_split_colours"].feedback == (
        "ex4_split_colours.py has no function pipeline_colour")
    assert results["ex5_partition"].feedback == "ex5_partition.py is missing"
    broken = {"ex1_gpipe", "ex3_bubble", "ex4_split_colours", "ex5_partition"}
    assert all(results[name].points == 0 for name in broken)
    assert all(r.points == r.max_points for name, r in results.items() if name not in broken)


def test_an_error_inside_a_function_names_the_call_and_the_line(tmp_path):
    (tmp_path / "ex3_bubble.py").write_text("def bubble_fraction(P, m):\n"
                                            "    idle = P - 1\n"
                                            "    return idle / (m - m)\n")
    [result] = grade(tmp_path, ["ex3"])
    assert result.feedback == ("bubble_fraction(4, 8) raised ZeroDivisionError: division by zero "
                               "(line 3 of ex3_bubble.py)")


# -- the grader's references agree with independent ones -------------------------------------

def test_the_simulated_bubble_is_the_textbook_formula():
    for P, m in BUBBLE_SIZES:
        simulated = simulate(make_schedule("gpipe", P, m)).bubble_fraction
        assert simulated == pytest.approx((P - 1) / (m + P - 1))


def test_the_brute_force_split_matches_mpipipes_partition():
    for counts, stages in PARTITION_CASES:
        best, sizes = lightest_split(counts, stages)
        assert max(stage_loads(counts, sizes)) == best
        assert max(stage_loads(counts, balanced_by_params(counts, stages))) == best


def test_the_solution_schedules_are_mpipipes():
    gpipe = load_exercise(SOLUTIONS / "ex1_gpipe.py").gpipe_actions
    one_f_one_b = load_exercise(SOLUTIONS / "ex2_one_f_one_b.py").one_f_one_b_actions
    for P, m in SCHEDULE_SIZES:
        assert gpipe(P, m) == make_schedule("gpipe", P, m).programs
        assert one_f_one_b(P, m) == make_schedule("1f1b", P, m).programs
    zb_h1 = load_exercise(SOLUTIONS / "ex9_zero_bubble.py").zb_h1_actions
    for P, m in SCHEDULE_SIZES:
        assert zb_h1(P, m) == make_schedule("zb-h1", P, m).programs


def test_the_interleaved_solution_warms_up_as_mpipipe_does():
    """Except where m == P: there mpipipe's generator, as Megatron-LM, runs every forward
    first, which the simulator shows buys nothing (the grader accepts both)."""
    warmup = load_exercise(SOLUTIONS / "ex8_interleaved.py").warmup
    for P, m, V in INTERLEAVED_SIZES:
        programs = make_schedule("interleaved", P, m, V).programs
        warmups = [warmup(rank, P, m, V) for rank in range(P)]
        for got, program in zip(warmups, programs):
            forwards = [(a.microbatch, a.chunk) for a in program if a.kind == "F"]
            assert got == forwards[:len(got)]
        if m != P:
            assert interleaved_with(warmups, P, m, V).programs == programs


def test_the_engines_stash_is_the_memory_formula():
    """A block Linear + GELU keeps three micro-batch x width arrays (Linear's input, GELU's
    input and tanh), float32; with recompute the stage keeps its input alone."""
    for L, b, n in STASH_CASES:
        assert engine_stash_bytes(L, b, n, recompute=False) == 3 * L * b * n * 4
        assert engine_stash_bytes(L, b, n, recompute=True) == b * n * 4


def test_the_simulated_1f1b_step_is_the_formula_with_and_without_recompute():
    for P, m, forward, backward in STEP_CASES:
        for extra in (0, forward):
            costs = Costs(F=forward, BW=backward, recompute=bool(extra))
            assert simulate(make_schedule("1f1b", P, m), costs).makespan == pytest.approx(
                (m + P - 1) * (forward + backward + extra))


def test_the_readmes_count_the_exercises_and_points():
    """The tables and totals the exercises README and the instructors page print are the course's."""
    import re

    from .test_grader_plants import PLANTED

    table = (ROOT / "lessons" / "exercises" / "README.md").read_text()
    rows = re.findall(r"^\| `(ex\d+_\w+)\.py` \|.*\| (\d+) \|$", table, re.MULTILINE)
    assert rows == [(e.name, str(e.max_points)) for e in EXERCISES]
    assert f"{TOTAL} points in all" in table
    readme = (ROOT / "docs" / "instructors.md").read_text()
    for text in (f"{TOTAL} points in all", f"{len(PLANTED)} planted mistakes"):
        assert text in readme, text
