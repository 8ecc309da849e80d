"""An exercise as steps, and the one function that grades them: `grade_steps`.

Both front ends call `grade_steps`: `mpipipe grade` adds up its points, and the
pytest plugin (pytest_plugin.py) reports each step as one test. So the two
always give the same points and the same feedback.

A step is a check of every answer one of the student's functions gives. The
steps of an exercise build on each other: the first that fails gets the
feedback, and the ones after it are skipped because of it. The whole exercise
(loading the file included) runs under one time limit, so an endless loop
costs that exercise and nothing else.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .base import (FAILED, PASSED, SKIPPED, TIME_LIMIT, NeverArrived, Result, StepResult,
                   TimeLimit, Wrong, load_exercise, time_limit)


@dataclass(frozen=True)
class Step:
    name: str                   # what it checks, as a name: "keeps_1f1b_memory"
    points: int
    check: Callable             # check(module), or check(module, comm) under MPI: returns
                                # if the answers are right, raises Wrong if not


@dataclass(frozen=True)
class Exercise:
    name: str                   # the file name without .py: "ex2_one_f_one_b"
    steps: list = field(default_factory=list)
    ranks: int = 1              # > 1: graded on that many MPI ranks (see send_recv.py)
    grader_seconds: float = 0.0  # added to the time limit: the grader's own slow work (a real MPI run)

    @property
    def max_points(self):
        return sum(step.points for step in self.steps)


@dataclass(frozen=True)
class Problem:
    """Why a step failed: the feedback, and whether it is only a rank's report of
    waiting in vain (NeverArrived), which gives way to a peer's own feedback."""

    message: str
    secondary: bool = False


def grade_steps(exercise, path, seconds=TIME_LIMIT, agree=None, comm=None):
    """Grade the student's file `path` step by step; return a Result with a StepResult a step.

    Under MPI every rank calls this with `comm` (handed to each check) and
    `agree(problem)`, which is called after the file is loaded and after each
    step with this rank's Problem or None, and returns the verdict all ranks
    share: so the ranks stop at the same step and report the same feedback.
    The time agreeing takes is not the student's.
    """
    path = Path(path)
    budget = TimeBudget(exercise.name, seconds + exercise.grader_seconds)
    module, problem = None, None
    if not path.exists():
        problem = Problem(f"{path.name} is missing")
    else:
        module, problem = budget.attempt(load_exercise, path)
    if agree:
        problem = agree(problem)
    steps, failed = [], None
    for step in exercise.steps:
        if failed:
            steps.append(StepResult(step.name, 0, step.points, SKIPPED, skipped_after(failed)))
            continue
        if problem is None:
            _, problem = budget.attempt(step.check, module, *([] if comm is None else [comm]))
            if agree:
                problem = agree(problem)
        if problem is None:
            steps.append(StepResult(step.name, step.points, step.points, PASSED))
        else:
            steps.append(StepResult(step.name, 0, step.points, FAILED, problem.message))
            failed = step.name
    return result_of(exercise, steps)


def skipped_after(failed_step):
    return f"{failed_step} failed first, and this step builds on it"


def result_of(exercise, steps):
    """The exercise's Result from its steps' results: points added up, the first feedback."""
    feedback = next((s.message for s in steps if s.outcome == FAILED), "")
    return Result(exercise.name, sum(s.points for s in steps), exercise.max_points, feedback,
                  list(steps))


def result_after(exercise, passed, feedback=None):
    """The Result when the first `passed` steps passed and the next failed with `feedback`
    (what an MPI job reports back: see under_mpi.py)."""
    steps = [StepResult(s.name, s.points, s.points, PASSED) for s in exercise.steps[:passed]]
    rest = exercise.steps[passed:]
    if rest and feedback:
        failed, *later = rest
        steps.append(StepResult(failed.name, 0, failed.points, FAILED, feedback))
        steps += [StepResult(s.name, 0, s.points, SKIPPED, skipped_after(failed.name))
                  for s in later]
    return result_of(exercise, steps)


class TimeBudget:
    """The seconds an exercise may take, spent only while the student's code runs."""

    def __init__(self, exercise_name, seconds):
        self.exercise_name, self.seconds, self.spent = exercise_name, seconds, 0.0

    def attempt(self, function, *args):
        """(value, None) if function(*args) returns, (None, Problem) if it fails or runs out."""
        left = self.seconds - self.spent
        if left <= 0:   # (setitimer with 0 would mean no limit at all)
            return None, self.out_of_time()
        started = time.monotonic()
        try:
            with time_limit(left):
                return function(*args), None
        except NeverArrived as waited:
            return None, Problem(str(waited), secondary=True)
        except Wrong as wrong:
            return None, Problem(str(wrong))
        except TimeLimit:
            return None, self.out_of_time()
        except Exception as error:   # an answer odd enough to trip the checks themselves
            return None, Problem(f"could not check your answer: {type(error).__name__}: {error}")
        finally:
            self.spent += time.monotonic() - started

    def out_of_time(self):
        return Problem(f"{self.exercise_name} did not finish within {self.seconds:g} s: is there "
                       f"a loop that never ends?")
