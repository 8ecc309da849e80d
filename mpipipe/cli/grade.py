"""Grade the course exercises: `python -m mpipipe.cli.grade lessons/exercises` (or `mpipipe grade`).

Each exercise is one file (ex1_gpipe.py, ...) with functions for the student
to write. An exercise is worth a few points, earned step by step: a step is
a check of every answer the student's function gives against an independent
reference (mpipipe's validator and simulator, a textbook formula, a brute-force
search, the engine's own memory count, a real MPI run). The steps of an
exercise build on each other, so the first failed step ends that exercise, and
its message says what to fix.

Why each file is loaded on its own, under a time limit: a syntax error in one
exercise, or an endless loop, must cost that exercise its points and nothing
else. The MPI exercise runs under `mpiexec -n 2` in a subprocess with a time
limit, and its communicator checks every Send and Recv before MPI sees it, so
a message that would never arrive becomes feedback instead of a hung job.
A schedule is never run on MPI at all: validate() proves it finishes first.

The same steps run as tests under pytest (`python -m pytest lessons/exercises`,
see grading/pytest_plugin.py), with the same points and feedback.

    python -m mpipipe.cli.grade lessons/exercises          all exercises
    python -m mpipipe.cli.grade lessons/exercises ex2      only the exercises named ex2...

Exit status 0 when grading finished (whatever the score), 2 when the path is
not a folder of exercises or an exercise name is unknown.
"""

import sys

from mpipipe.course.base import TIME_LIMIT, NotAnExercisesFolder
from mpipipe.course.course import BY_NAME, EXERCISES, grade, grade_exercise, report

__all__ = ["EXERCISES", "grade", "grade_exercise", "report", "main"]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--under-mpi"]:      # one rank of an MPI exercise's grading, in mpiexec
        from mpipipe.course.under_mpi import grade_on_this_rank

        from mpi4py import MPI

        name, path, folder, seconds = argv[1:5]
        grade_on_this_rank(BY_NAME[name], path, float(seconds),
                           verdict_file=f"{folder}/rank{MPI.COMM_WORLD.Get_rank()}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m mpipipe.cli.grade FOLDER [EXERCISE ...]\n"
              "  grades the exercises in FOLDER (e.g. lessons/exercises), or only those named "
              "(e.g. ex2)", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    try:
        results = grade(argv[0], argv[1:], TIME_LIMIT)
    except NotAnExercisesFolder as error:
        print(f"mpipipe.cli.grade: {error}", file=sys.stderr)
        return 2
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
