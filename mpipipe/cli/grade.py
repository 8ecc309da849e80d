"""Grade the course exercises: `mpipipe grade lessons/exercises` (or `python -m mpipipe.cli.grade`).

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

One run grades everything, the MPI exercise included, and can write the three
reports an autograder reads (course/reports.py): --junit, --gradescope, --json.
The same steps run as tests under pytest (`python -m pytest lessons/exercises`,
see course/pytest_plugin.py), with the same points and feedback.
"""

import argparse
import sys

from mpipipe.course.base import TIME_LIMIT, NotAnExercisesFolder
from mpipipe.course.course import BY_NAME, EXERCISES, grade, grade_exercise, report
from mpipipe.course.reports import totals, write_reports

__all__ = ["EXERCISES", "grade", "grade_exercise", "report", "main", "add_arguments"]

EXIT_HELP = """exit status: 0 when grading finished, whatever the score (1 instead below full
marks with --fail-below-full); 2 when FOLDER is not a folder of exercises, an exercise
name is unknown, or a report file cannot be written."""


def add_arguments(parser):
    parser.add_argument("folder", help="a folder of exercise files, e.g. lessons/exercises")
    parser.add_argument("exercises", nargs="*", metavar="EXERCISE",
                        help="grade only these, e.g. ex2 (default: all)")
    parser.add_argument("--junit", metavar="FILE",
                        help="write a JUnit XML report: a testcase per step, with its points")
    parser.add_argument("--gradescope", metavar="FILE",
                        help="write Gradescope's results.json (a test per step)")
    parser.add_argument("--json", metavar="FILE", help="write the points and feedback as JSON")
    parser.add_argument("--fail-below-full", action="store_true",
                        help="exit 1 unless every point was earned (for a CI check)")
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT, metavar="SECONDS",
                        help=f"seconds the code of one exercise may run (default {TIME_LIMIT:g})")
    return parser


def build_parser():
    return add_arguments(argparse.ArgumentParser(
        prog="mpipipe grade", epilog=EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Grade a student's copy of lessons/exercises: points per exercise and "
                    "what to fix first. The MPI exercise runs on 2 ranks by itself."))


def run(args):
    """Grade, print the table, write the reports asked for; the exit status."""
    try:
        results = grade(args.folder, args.exercises, args.time_limit)
    except NotAnExercisesFolder as error:
        print(f"mpipipe grade: {error}", file=sys.stderr)
        if args.gradescope:   # the student sees why there are no points, not an error page
            try:
                write_reports([], gradescope_file=args.gradescope, output=f"{error}")
            except OSError:
                pass
        return 2
    table = report(results)
    print(table)
    try:
        write_reports(results, args.junit, args.gradescope, args.json, output=table)
    except OSError as error:
        print(f"mpipipe grade: cannot write the report: {error}", file=sys.stderr)
        return 2
    points, most = totals(results)
    return 1 if args.fail_below_full and points < most else 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--under-mpi"]:      # one rank of an MPI exercise's grading, in mpiexec
        from mpipipe.course.under_mpi import grade_on_this_rank

        from mpi4py import MPI

        name, path, folder, seconds = argv[1:5]
        grade_on_this_rank(BY_NAME[name], path, float(seconds),
                           verdict_file=f"{folder}/rank{MPI.COMM_WORLD.Get_rank()}")
        return 0
    return run(build_parser().parse_intermixed_args(argv))


if __name__ == "__main__":
    sys.exit(main())
