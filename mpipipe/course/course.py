"""The course: its exercises and their steps, grading a folder, and the score table.

Each exercise is a file (ex1_gpipe.py, ...) in a folder like lessons/exercises;
each step is a check from the modules beside this one. `mpipipe grade`
(grade.py) and the pytest plugin (pytest_plugin.py) both grade from this list.
"""

from pathlib import Path

from .base import TIME_LIMIT, NotAnExercisesFolder
from .golf_checks import MPI_SECONDS, fits_the_budget, is_valid, runs_under_mpi, within
from .interleaved_checks import holds_the_right_stages, warmup_in_order, warmup_length
from .recompute_checks import pays_one_more_forward, stash_with_recompute, stash_without_recompute
from .schedule_checks import (bubble_matches_the_simulator, colours_group,
                              gpipe_runs_all_forwards_first, idles_like_the_textbook,
                              one_f_one_b_memory, partition_is_a_split, partition_is_balanced,
                              runs_without_deadlock)
from .send_recv import RANKS, SEND_RECV_STEPS
from .steps import Exercise, Step, grade_steps
from .tensor_checks import (backward_on_one_rank, backward_sums_once, forward_on_one_rank,
                            forward_sums_once)
from .under_mpi import grade_under_mpiexec
from .zero_bubble_checks import bubble_falls_to_zb_h1s, keeps_1f1b_memory, splits_and_runs

EXERCISES = [
    Exercise("ex1_gpipe", [
        Step("runs_without_deadlock", 2, runs_without_deadlock("gpipe_actions")),
        Step("runs_all_forwards_first", 1, gpipe_runs_all_forwards_first),
        Step("idles_like_the_textbook", 1, idles_like_the_textbook("gpipe_actions"))]),
    Exercise("ex2_one_f_one_b", [
        Step("runs_without_deadlock", 2, runs_without_deadlock("one_f_one_b_actions")),
        Step("keeps_1f1b_memory", 1, one_f_one_b_memory),
        Step("idles_like_the_textbook", 1, idles_like_the_textbook("one_f_one_b_actions"))]),
    Exercise("ex3_bubble", [
        Step("matches_the_simulator", 2, bubble_matches_the_simulator)]),
    Exercise("ex4_split_colours", [
        Step("groups_each_replica", 1, colours_group("pipeline_colour", "pipeline")),
        Step("groups_each_stage", 1, colours_group("data_colour", "data"))]),
    Exercise("ex5_partition", [
        Step("cuts_every_block_once", 1, partition_is_a_split),
        Step("balances_the_stages", 2, partition_is_balanced)]),
    Exercise("ex6_send_recv", SEND_RECV_STEPS, ranks=RANKS),
    Exercise("ex7_recompute", [
        Step("stash_without_recompute", 1, stash_without_recompute),
        Step("stash_with_recompute", 1, stash_with_recompute),
        Step("pays_one_more_forward", 2, pays_one_more_forward)]),
    Exercise("ex8_interleaved", [
        Step("holds_the_right_stages", 1, holds_the_right_stages),
        Step("warmup_in_order", 1, warmup_in_order),
        Step("warmup_length", 2, warmup_length)]),
    Exercise("ex9_zero_bubble", [
        Step("splits_and_runs", 2, splits_and_runs),
        Step("keeps_1f1b_memory", 1, keeps_1f1b_memory),
        Step("bubble_falls_to_zb_h1s", 2, bubble_falls_to_zb_h1s)]),
    Exercise("ex10_conjugate_pair", [
        Step("forward_on_one_rank", 1, forward_on_one_rank),
        Step("forward_sums_once", 2, forward_sums_once),
        Step("backward_on_one_rank", 1, backward_on_one_rank),
        Step("backward_sums_once", 2, backward_sums_once)]),
    Exercise("ex11_schedule_golf", [
        Step("is_valid", 2, is_valid),
        Step("fits_the_budget", 1, fits_the_budget),
        Step("runs_under_mpi", 1, runs_under_mpi),
        Step("within_10_percent", 1, within(0.10)),
        Step("within_2_percent", 1, within(0.02))], grader_seconds=MPI_SECONDS),
]
BY_NAME = {exercise.name: exercise for exercise in EXERCISES}


def grade_exercise(exercise, path, seconds=TIME_LIMIT):
    """One exercise's Result: in this process, or under mpiexec if it needs several ranks."""
    if exercise.ranks > 1 and Path(path).exists():
        return grade_under_mpiexec(exercise, path, seconds)
    return grade_steps(exercise, path, seconds)


def named(exercise, name):
    """Does `name` name `exercise`: its whole name or a start of it, where a number is
    whole ("ex1" is ex1_gpipe, not ex10_conjugate_pair)?"""
    full = exercise.name
    return full.startswith(name) and not (name[-1:].isdigit() and full[len(name):][:1].isdigit())


def choose(names=None):
    """The exercises named by one of `names` (all if none given)."""
    if not names:
        return list(EXERCISES)
    unknown = [n for n in names if not any(named(e, n) for e in EXERCISES)]
    if unknown:
        raise NotAnExercisesFolder(f"no exercise named {unknown[0]}: choose from "
                                   f"{', '.join(e.name for e in EXERCISES)}")
    return [e for e in EXERCISES if any(named(e, n) for n in names)]


def check_folder(path):
    """Raise NotAnExercisesFolder unless `path` is a folder holding at least one exercise."""
    folder = Path(path)
    if not folder.is_dir() or not any((folder / f"{e.name}.py").exists() for e in EXERCISES):
        raise NotAnExercisesFolder(f"{path} is not a folder of exercises (ex1_gpipe.py, ...)")
    return folder


def grade(path, names=None, seconds=TIME_LIMIT):
    """Grade the exercises in folder `path`: all, or those whose names start with one of `names`."""
    folder = check_folder(path)
    return [grade_exercise(e, folder / f"{e.name}.py", seconds) for e in choose(names)]


def report(results, feedback=True):
    """One line per exercise with its points (and its feedback below it), and the total."""
    width = max(len("total"), *(len(r.exercise) for r in results))
    lines = []
    for r in results:
        lines.append(f"{r.exercise:<{width}}  {r.points:>2}/{r.max_points}"
                     + ("  ok" if r.points == r.max_points else ""))
        if feedback:
            lines += ["    " + line for line in r.feedback.splitlines()]
    total, most = sum(r.points for r in results), sum(r.max_points for r in results)
    lines.append(f"{'total':<{width}}  {total:>2}/{most}")
    return "\n".join(lines)
