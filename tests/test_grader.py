"""The course grader: every point for the solutions, none for the stubs, and for
each planted mistake the feedback a student can act on.

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

from mpipipe.grade import EXERCISES, grade
from mpipipe.grading.base import load_exercise
from mpipipe.grading.schedule_checks import (BUBBLE_SIZES, PARTITION_CASES, SCHEDULE_SIZES,
                                             lightest_split, stage_loads)
from mpipipe.partition import balanced_by_params
from mpipipe.schedules import make_schedule
from mpipipe.simulate import simulate

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "lessons" / "solutions"
STUBS = ROOT / "lessons" / "exercises"
TOTAL = sum(exercise.max_points for exercise in EXERCISES)


def run_grader(*args, timeout=60):
    """`python -m mpipipe.grade ARGS` as a student runs it, killed if it hangs."""
    return subprocess.run([sys.executable, "-m", "mpipipe.grade", *map(str, args)], cwd=ROOT,
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


@pytest.mark.parametrize("args", [["nowhere"], ["README.md"], ["tests"], [STUBS, "ex9"]])
def test_no_exercises_there_exits_2(args):
    done = run_grader(*args)
    assert done.returncode == 2
    assert "mpipipe.grade:" in done.stderr and done.stdout == ""


def test_a_wrong_answer_is_graded_with_exit_0_and_its_feedback(tmp_path):
    shutil.copytree(SOLUTIONS, tmp_path, dirs_exist_ok=True)
    plant(tmp_path, "bubble one too many")
    done = run_grader(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "    bubble_fraction(4, 8) returned 0.25, expected 0.2727" in done.stdout
    assert done.stdout.splitlines()[-1].split() == ["total", f"{TOTAL - 2}/{TOTAL}"]


# -- planted mistakes: (file, code, points it still earns, the feedback expected) ----------

ONE_F_ONE_B_WITH_WARMUP = """
    from mpipipe.schedules.actions import Action

    def one_f_one_b_actions(P, m):
        ranks = []
        for r in range(P):
            w = {warmup}
            actions = [Action("F", i) for i in range(w)]
            for i in range(m - w):
                actions += [Action("F", w + i), Action("BW", i)]
            actions += [Action("BW", i) for i in range(m - w, m)]
            ranks.append(actions)
        return ranks
"""

SEND_RECV = """
    import numpy as np

    def pass_activation(comm, array, source, dest, tag):
        if comm.Get_rank() == source:
            {send}
        elif comm.Get_rank() == dest:
            {receive}
"""

PLANTED = {
    "gpipe misses the last backward": ("ex1_gpipe.py", """
        from mpipipe.schedules.actions import Action

        def gpipe_actions(P, m):
            return [[Action("F", i) for i in range(m)] + [Action("BW", i) for i in range(m - 1)]
                    for _ in range(P)]
        """, 0, "gpipe_actions(4, 8): rank 0 has no complete backward of micro-batch 7"),
    "gpipe with tuples": ("ex1_gpipe.py", """
        def gpipe_actions(P, m):
            return [[("F", i) for i in range(m)] + [("BW", i) for i in range(m)] for _ in range(P)]
        """, 0, "gpipe_actions(4, 8): action #0 of rank 0 is ('F', 0), not an Action"),
    "gpipe in 1F1B order": ("ex1_gpipe.py", ONE_F_ONE_B_WITH_WARMUP.format(
        warmup="min(P - 1 - r, m)").replace("one_f_one_b_actions", "gpipe_actions"), 2,
        "gpipe_actions(4, 8): rank 0 runs BW0 (action #4) before F7; GPipe runs all 8 forwards "
        "first"),
    "gpipe rank 0 backwards reversed": ("ex1_gpipe.py", """
        from mpipipe.schedules.actions import Action

        def gpipe_actions(P, m):
            ranks = [[Action("F", i) for i in range(m)] + [Action("BW", i) for i in range(m)]
                     for _ in range(P)]
            ranks[0] = ranks[0][:m] + ranks[0][m:][::-1]
            return ranks
        """, 3, "gpipe_actions(4, 8): the ranks idle 0.4894 of the step; the textbook's "
                "(P-1)/(m+P-1) is 0.2727"),
    "1f1b warm-up r instead of P-1-r": ("ex2_one_f_one_b.py",
        ONE_F_ONE_B_WITH_WARMUP.format(warmup="min(r, m)"), 0,
        "rank 0 would wait forever at action #2 RECV_B0<-r1: rank 1 never sends B0 for stage 0"),
    "1f1b warm-up without min": ("ex2_one_f_one_b.py",
        ONE_F_ONE_B_WITH_WARMUP.format(warmup="P - 1 - r"), 0,
        "one_f_one_b_actions(4, 2): rank 0, action #2 F2: micro-batch outside 0..1"),
    "1f1b that is gpipe": ("ex2_one_f_one_b.py",
        ONE_F_ONE_B_WITH_WARMUP.format(warmup="m"), 2,
        "one_f_one_b_actions(4, 8): your 1F1B keeps 8 activations on stage 0, at most 4 allowed"),
    "1f1b warm-up one short": ("ex2_one_f_one_b.py",
        ONE_F_ONE_B_WITH_WARMUP.format(warmup="min(max(P - 2 - r, 0), m)"), 3,
        "one_f_one_b_actions(4, 8): the ranks idle 0.5556 of the step; the textbook's "
        "(P-1)/(m+P-1) is 0.2727"),
    "bubble one too many": ("ex3_bubble.py", """
        def bubble_fraction(P, m):
            return (P - 1) / (m + P)
        """, 0, "bubble_fraction(4, 8) returned 0.25, expected 0.2727"),
    "bubble whole-number division": ("ex3_bubble.py", """
        def bubble_fraction(P, m):
            return (P - 1) // (m + P - 1)
        """, 0, "bubble_fraction(4, 8) returned 0, expected 0.2727"),
    "colours swapped": ("ex4_split_colours.py", """
        def pipeline_colour(world_rank, pp, dp):
            return world_rank % pp

        def data_colour(world_rank, pp, dp):
            return world_rank // pp
        """, 0, "pipeline_colour(world_rank, pp=4, dp=2) gives world ranks 0 and 1 different "
                "colours (0 and 1), but both are stages of replica 0"),
    "data colour divides by dp": ("ex4_split_colours.py", """
        def pipeline_colour(world_rank, pp, dp):
            return world_rank // pp

        def data_colour(world_rank, pp, dp):
            return world_rank // dp
        """, 1, "data_colour(world_rank, pp=4, dp=2) gives world ranks 0 and 1 the same colour 0, "
                "but rank 0 holds stage 0 and rank 1 stage 1"),
    "colour negative": ("ex4_split_colours.py", """
        def pipeline_colour(world_rank, pp, dp):
            return -1 - world_rank // pp

        def data_colour(world_rank, pp, dp):
            return world_rank % pp
        """, 0, "pipeline_colour(0, 4, 2) returned -1: a colour must be a whole number >= 0"),
    "partition uniform": ("ex5_partition.py", """
        def balanced_partition(param_counts, num_stages):
            base, extra = divmod(len(param_counts), num_stages)
            return [base + (s < extra) for s in range(num_stages)]
        """, 1, "balanced_partition([10, 1, 1, 1, 1, 10], 3) returned [2, 2, 2], whose heaviest "
                "stage has 11 parameters; [1, 4, 1] gets it down to 10"),
    "partition forgets blocks": ("ex5_partition.py", """
        def balanced_partition(param_counts, num_stages):
            return [1] * num_stages
        """, 0, "returned [1, 1, 1]: partition [1, 1, 1] covers 3 blocks, the model has 6"),
    "partition fills to the average": ("ex5_partition.py", """
        def balanced_partition(param_counts, num_stages):
            target = sum(param_counts) / num_stages
            sizes, load, size = [], 0, 0
            for count in param_counts:
                if load + count > target and size and len(sizes) < num_stages - 1:
                    sizes.append(size)
                    load, size = 0, 0
                load, size = load + count, size + 1
            return sizes + [size]
        """, 1, "balanced_partition([5, 2, 6, 9], 2) returned [2, 2], whose heaviest stage has "
                "15 parameters; [3, 1] gets it down to 13"),
    "send/recv lowercase": ("ex6_send_recv.py", SEND_RECV.format(
        send="comm.send(array, dest=dest, tag=tag)",
        receive="return comm.recv(source=source, tag=tag)"), 0,
        "use the uppercase Send and Recv"),
    "recv without tag": ("ex6_send_recv.py", SEND_RECV.format(
        send="comm.Send(array, dest=dest, tag=tag)",
        receive="buffer = np.empty_like(array); comm.Recv(buffer, source=source); return buffer"),
        0, "source=0, dest=1, tag=7): rank 1 calls Recv without tag=7"),
    "send without tag": ("ex6_send_recv.py", SEND_RECV.format(
        send="comm.Send(array, dest=dest)",
        receive="buffer = np.empty_like(array); comm.Recv(buffer, source, tag); return buffer"),
        0, "rank 0 sends with tag 0, but this message's tag is 7"),
    "recv into float64": ("ex6_send_recv.py", SEND_RECV.format(
        send="comm.Send(array, dest=dest, tag=tag)",
        receive="buffer = np.empty(array.shape); comm.Recv(buffer, source, tag); return buffer"),
        1, "rank 1 sent float32 of shape (2, 5), rank 0 returned float64 of shape (2, 5)"),
    "recv forgotten": ("ex6_send_recv.py", SEND_RECV.format(
        send="comm.Send(array, dest=dest, tag=tag)", receive="return array"), 0,
        "rank 1 returned without calling Recv"),
    "sender returns the array": ("ex6_send_recv.py", SEND_RECV.format(
        send="comm.Send(array, dest=dest, tag=tag); return array",
        receive="buffer = np.empty_like(array); comm.Recv(buffer, source, tag); return buffer"),
        0, "on rank 0: only rank 1 (dest) returns the array, the others return None"),
}


def plant(folder, name):
    """Write the planted mistake `name` into folder, over the file it replaces."""
    file, code, _, _ = PLANTED[name]
    (folder / file).write_text(textwrap.dedent(code))


@pytest.mark.parametrize("name", list(PLANTED))
def test_a_planted_mistake_gets_its_feedback(tmp_path, name):
    file, _, points, feedback = PLANTED[name]
    plant(tmp_path, name)
    [result] = grade(tmp_path, [file[:3]])
    assert feedback in result.feedback
    assert result.points == points


def test_an_mpi_job_that_hangs_is_stopped_at_the_time_limit(tmp_path):
    """The first case passes, the second waits forever in a Barrier only the receiver calls."""
    (tmp_path / "ex6_send_recv.py").write_text(textwrap.dedent(SEND_RECV.format(
        send="comm.Send(array, dest=dest, tag=tag)",
        receive="comm.Barrier() if dest == 0 else None; buffer = np.empty_like(array); "
                "comm.Recv(buffer, source, tag); return buffer")))
    started = time.monotonic()
    [result] = grade(tmp_path, ["ex6"], seconds=3)
    assert time.monotonic() - started < 15
    assert result.points == 1
    assert "pass_activation did not finish within 3 s under mpiexec -n 2" in result.feedback


def test_an_endless_loop_costs_only_its_exercise(tmp_path):
    shutil.copytree(SOLUTIONS, tmp_path, dirs_exist_ok=True)
    (tmp_path / "ex3_bubble.py").write_text("def bubble_fraction(P, m):\n"
                                            "    while True:\n"
                                            "        try:\n"
                                            "            pass\n"
                                            "        except Exception:\n"
                                            "            pass\n")
    started = time.monotonic()
    results = {r.exercise: r for r in grade(tmp_path, seconds=1)}
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
