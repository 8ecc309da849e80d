"""Grade the exercises with pytest, as course autograders do: one test per grading step.

lessons/exercises/conftest.py hands pytest the hooks below. From the project's top folder:

    python -m pytest lessons/exercises                         grades lessons/exercises/ex*.py
    MPIPIPE_EXERCISES=DIR python -m pytest lessons/exercises   grades DIR/ex*.py instead (a
                                                               student's copy, lessons/solutions)
    timeout 120 mpiexec -n 2 python -m pytest --with-mpi lessons/exercises -m mpi
                                                               only the MPI exercise, with each
                                                               rank in its own pytest

Every exercise file becomes a test file with one test per step, in order, each
the verdict of the same `grade_steps` that `mpipipe grade` adds up (same
checks, same feedback, same time limit). A failed step shows its feedback, no
traceback; a step after it is skipped, naming it. The points are on each test
(a `points` marker; in the verbose status, "PASSED 2/2"; in JUnit XML as the
testcase properties points and max_points, and the totals as the suite's),
and in a table at the end. One run grades every exercise: one that needs MPI
ranks is graded under `mpiexec` in a subprocess with a time limit, as `mpipipe
grade` does, so a deadlock or a time-out is a failed step with its reason, in
the same JUnit file. Under pytest-mpi's --with-mpi instead, every rank grades
it in its own pytest, the ranks agree on each step (under_mpi.py), and only rank
0 reports; fewer ranks than the exercise needs is refused, not silently skipped.
"""

import os
import sys
from pathlib import Path

import pytest

from .base import FAILED, SKIPPED, TIME_LIMIT, NotAnExercisesFolder, Result
from .course import BY_NAME, EXERCISES, check_folder, grade_exercise, report
from .under_mpi import grade_on_this_rank

FOLDER_VARIABLE = "MPIPIPE_EXERCISES"
RAN = pytest.StashKey()            # [(exercise, StepResult)] of the steps run, in order


class StepFailed(Exception):
    """A step's feedback, reported as it is (see StepItem.repr_failure)."""


def pytest_addoption(parser):
    parser.addoption("--grade-time-limit", type=float, default=TIME_LIMIT, metavar="SECONDS",
                     help=f"seconds the student's code of one exercise may run (default "
                          f"{TIME_LIMIT:g}, as mpipipe grade)")


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    config.addinivalue_line("markers", "points(n): the points a grading step is worth")
    config.addinivalue_line("markers", "mpi: needs several MPI ranks (pytest-mpi, --with-mpi)")
    config.stash[RAN] = []
    elsewhere = os.environ.get(FOLDER_VARIABLE)
    if elsewhere:
        try:
            check_folder(Path(config.invocation_params.dir, elsewhere))
        except NotAnExercisesFolder:
            raise pytest.UsageError(f"{FOLDER_VARIABLE}={elsewhere} is not a folder of exercises "
                                    f"(ex1_gpipe.py, ...)") from None
    if under_mpi(config):
        refuse_too_few_ranks()
        if mpi_rank() > 0:
            quiet_on_this_rank(config)


def under_mpi(config):
    return bool(config.getoption("with_mpi", default=False))


def mpi_rank():
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank()


def refuse_too_few_ranks():
    """Under --with-mpi with fewer ranks than an exercise needs, pytest-mpi would skip it
    and the score would silently lack its points: say so and stop instead."""
    from mpi4py import MPI

    size = MPI.COMM_WORLD.Get_size()
    for exercise in EXERCISES:
        if exercise.ranks > size:
            raise pytest.UsageError(
                f"{exercise.name} is graded on {exercise.ranks} MPI ranks and this run has "
                f"{size}: run mpiexec -n {exercise.ranks} ..., or plain pytest without "
                f"--with-mpi, which starts the ranks itself")


def quiet_on_this_rank(config):
    """Every rank gets the same verdicts; rank 0 alone prints them and writes the JUnit XML
    (two ranks writing one file would garble it) and pytest's cache."""
    from _pytest.junitxml import xml_key

    plugins = config.pluginmanager
    xml = config.stash.get(xml_key, None)
    if xml is not None:
        del config.stash[xml_key]
        plugins.unregister(xml)
    for name in ("terminalreporter", "lfplugin", "nfplugin"):
        plugin = plugins.get_plugin(name)
        if plugin is not None:
            plugins.unregister(plugin)


def pytest_collect_file(file_path, parent):
    exercise = BY_NAME.get(file_path.stem)
    if exercise is not None and file_path.suffix == ".py":
        return ExerciseFile.from_parent(parent, path=file_path, exercise=exercise)
    return None


class ExerciseFile(pytest.File):
    """An exercise file as a test file: a StepItem per step, graded all at once when the
    first of them runs (the steps build on each other and share the time limit)."""

    def __init__(self, *, exercise, **kwargs):
        super().__init__(**kwargs)
        self.exercise, self.result = exercise, None

    def collect(self):
        for index, step in enumerate(self.exercise.steps):
            item = StepItem.from_parent(self, name=step.name, index=index)
            item.add_marker(pytest.mark.points(step.points))
            if self.exercise.ranks > 1 and under_mpi(self.config):   # (pytest-mpi skips an
                item.add_marker(pytest.mark.mpi(min_size=self.exercise.ranks))  # mpi test
            yield item

    def graded_path(self):
        elsewhere = os.environ.get(FOLDER_VARIABLE)
        if not elsewhere:
            return self.path
        return Path(self.config.invocation_params.dir, elsewhere, self.path.name)

    def graded(self):
        if self.result is None:
            seconds = self.config.getoption("grade_time_limit", default=TIME_LIMIT)
            if self.exercise.ranks > 1 and under_mpi(self.config):
                self.result = grade_on_this_rank(self.exercise, self.graded_path(), seconds,
                                                 say=self.say_uncaptured)
            else:   # in this process, or under mpiexec in a subprocess if it needs ranks
                self.result = grade_exercise(self.exercise, self.graded_path(), seconds)
        return self.result

    def say_uncaptured(self, text):
        """Write past pytest's output capture: the last words of an MPI job about to end."""
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled():
            sys.stderr.write(text)
            sys.stderr.flush()


class StepItem(pytest.Item):
    """One grading step as a test: passed, failed with its feedback, or skipped."""

    def __init__(self, *, index, **kwargs):
        super().__init__(**kwargs)
        self.index = index

    def runtest(self):
        exercise = self.parent.exercise
        step = self.parent.graded().steps[self.index]
        self.user_properties += [("exercise", exercise.name), ("points", step.points),
                                 ("max_points", step.max_points)]
        self.config.stash[RAN].append((exercise, step))
        if step.outcome == FAILED:
            raise StepFailed(step.message)
        if step.outcome == SKIPPED:
            pytest.skip(step.message)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, StepFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)   # a fault of the grader: show it all

    def reportinfo(self):
        return self.path, 0, f"{self.parent.exercise.name}: {self.name}"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """The steps in the course's order (pytest collects files by name: ex10 before ex2)."""
    order = {exercise.name: index for index, exercise in enumerate(EXERCISES)}
    items.sort(key=lambda item: order.get(item.parent.exercise.name, -1)
               if isinstance(item, StepItem) else -1)     # stable: other tests stay first


def pytest_report_teststatus(report, config):
    """The points in the verbose status: 'PASSED 2/2', 'FAILED 0/1'."""
    properties = dict(report.user_properties)
    if report.when != "call" or "max_points" not in properties:
        return None
    points = f"{properties['points']}/{properties['max_points']}"
    if report.passed:
        return "passed", ".", (f"PASSED {points}", {"green": True})
    if report.failed:
        return "failed", "F", (f"FAILED {points}", {"red": True})
    return "skipped", "s", (f"SKIPPED {points}", {"yellow": True})


def scores(config):
    """A Result per exercise from the steps run in this session, in the course's order."""
    results = []
    for exercise in EXERCISES:
        steps = [step for e, step in config.stash[RAN] if e is exercise]
        if steps:
            feedback = next((s.message for s in steps if s.outcome == FAILED), "")
            results.append(Result(exercise.name, sum(s.points for s in steps),
                                  sum(s.max_points for s in steps), feedback, steps))
    return results


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    """The totals as properties of the JUnit test suite (before the file is written)."""
    from _pytest.junitxml import xml_key

    xml = session.config.stash.get(xml_key, None)
    results = scores(session.config)
    if xml is not None and results:
        xml.add_global_property("points", sum(r.points for r in results))
        xml.add_global_property("max_points", sum(r.max_points for r in results))


def pytest_terminal_summary(terminalreporter, config):
    results = scores(config)
    if results:
        terminalreporter.section("points")
        for line in report(results, feedback=False).splitlines():
            terminalreporter.write_line(line)
