"""Grade the course exercises: `python -m mpipipe.grade lessons/exercises`.

Each exercise is one file (ex1_gpipe.py, ...) with functions for the student
to write. An exercise is worth a few points, earned step by step: a step is
a check of every answer the student's function gives against an independent
reference (mpipipe's validator and simulator, a textbook formula, a brute-force
search, a real MPI run). The steps of an exercise build on each other, so the
first failed step ends that exercise, and its message says what to fix.

Why each file is loaded on its own, under a time limit: a syntax error in one
exercise, or an endless loop, must cost that exercise its points and nothing
else. The MPI exercise runs under `mpiexec -n 2` in a subprocess with a time
limit, and its communicator checks every Send and Recv before MPI sees it, so
a message that would never arrive becomes feedback instead of a hung job.
A schedule is never run on MPI at all: validate() proves it finishes first.

    python -m mpipipe.grade lessons/exercises          all exercises
    python -m mpipipe.grade lessons/exercises ex2      only the exercises named ex2...

Exit status 0 when grading finished (whatever the score), 2 when the path is
not a folder of exercises or an exercise name is unknown.
"""


import sys
from dataclasses import dataclass, field
from pathlib import Path

from .grading.base import (TIME_LIMIT, NotAnExercisesFolder, Result, TimeLimit, Wrong,
                           load_exercise, time_limit)
from .grading.schedule_checks import (bubble_matches_the_simulator, colours_group,
                                      gpipe_runs_all_forwards_first, idles_like_the_textbook,
                                      one_f_one_b_memory, partition_is_a_split,
                                      partition_is_balanced, runs_without_deadlock)
from .grading.send_recv import SEND_RECV_CASES, grade_send_recv, grade_send_recv_on_this_rank

# -- the exercises ----------------------------------------------------------------------------

@dataclass
class Exercise:
    name: str
    steps: list = field(default_factory=list)   # [(points, check(module))], in order
    under_mpi: bool = False                     # graded by grade_send_recv instead

    @property
    def max_points(self):
        if self.under_mpi:
            return len(SEND_RECV_CASES)
        return sum(points for points, _ in self.steps)


EXERCISES = [
    Exercise("ex1_gpipe", [(2, runs_without_deadlock("gpipe_actions")),
                           (1, gpipe_runs_all_forwards_first),
                           (1, idles_like_the_textbook("gpipe_actions"))]),
    Exercise("ex2_one_f_one_b", [(2, runs_without_deadlock("one_f_one_b_actions")),
                                 (1, one_f_one_b_memory),
                                 (1, idles_like_the_textbook("one_f_one_b_actions"))]),
    Exercise("ex3_bubble", [(2, bubble_matches_the_simulator)]),
    Exercise("ex4_split_colours", [(1, colours_group("pipeline_colour", "pipeline")),
                                   (1, colours_group("data_colour", "data"))]),
    Exercise("ex5_partition", [(1, partition_is_a_split), (2, partition_is_balanced)]),
    Exercise("ex6_send_recv", under_mpi=True),
]


def grade_exercise(exercise, path, seconds=TIME_LIMIT):
    if not path.exists():
        return Result(exercise.name, 0, exercise.max_points, f"{path.name} is missing")
    if exercise.under_mpi:
        return grade_send_recv(exercise, path, seconds)
    points, feedback = 0, ""
    try:
        with time_limit(seconds):
            module = load_exercise(path)
            for step_points, check in exercise.steps:
                check(module)
                points += step_points
    except Wrong as wrong:
        feedback = str(wrong)
    except TimeLimit:
        feedback = (f"{exercise.name} did not finish within {seconds:g} s: is there a loop "
                    f"that never ends?")
    except Exception as error:   # an answer odd enough to trip the checks themselves
        feedback = f"could not check your answer: {type(error).__name__}: {error}"
    return Result(exercise.name, points, exercise.max_points, feedback)


def grade(path, names=None, seconds=TIME_LIMIT):
    """Grade the exercises in folder `path`: all, or those whose names start with one of `names`."""
    folder = Path(path)
    if not folder.is_dir() or not any((folder / f"{e.name}.py").exists() for e in EXERCISES):
        raise NotAnExercisesFolder(f"{path} is not a folder of exercises (ex1_gpipe.py, ...)")
    chosen = EXERCISES
    if names:
        unknown = [n for n in names if not any(e.name.startswith(n) for e in EXERCISES)]
        if unknown:
            raise NotAnExercisesFolder(f"no exercise named {unknown[0]}: choose from "
                                       f"{', '.join(e.name for e in EXERCISES)}")
        chosen = [e for e in EXERCISES if any(e.name.startswith(n) for n in names)]
    return [grade_exercise(e, folder / f"{e.name}.py", seconds) for e in chosen]


def report(results):
    """One line per exercise with its points, the feedback below it, and the total."""
    width = max(len("total"), *(len(r.exercise) for r in results))
    lines = []
    for r in results:
        lines.append(f"{r.exercise:<{width}}  {r.points:>2}/{r.max_points}"
                     + ("  ok" if r.points == r.max_points else ""))
        lines += ["    " + line for line in r.feedback.splitlines()]
    total, most = sum(r.points for r in results), sum(r.max_points for r in results)
    lines.append(f"{'total':<{width}}  {total:>2}/{most}")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--under-mpi"]:      # the grader itself, inside mpiexec (ex6)
        return grade_send_recv_on_this_rank(argv[1], argv[2])
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m mpipipe.grade FOLDER [EXERCISE ...]\n"
              "  grades the exercises in FOLDER (e.g. lessons/exercises), or only those named "
              "(e.g. ex2)", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    try:
        results = grade(argv[0], argv[1:])
    except NotAnExercisesFolder as error:
        print(f"mpipipe.grade: {error}", file=sys.stderr)
        return 2
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
