"""Grading an exercise on several MPI ranks, without ever hanging the job.

Every rank runs the exercise's steps itself (steps.grade_steps), with two
additions that keep the ranks together:
  - after the file is loaded and after each step, the ranks agree on a verdict
    (Agreement): all go on, or all stop at the same step with the same feedback;
  - the student's code gets half the exercise's time limit on each rank, so a
    loop that never ends is stopped on its own rank with time left for the
    others to hear about it.

Two ways in:
  grade_under_mpiexec   `mpipipe grade`: runs `mpiexec -n N python -m mpipipe.cli.grade
                        --under-mpi ...` under `timeout`; each rank writes its verdict
                        to a file after every step, so a job stopped at the time limit
                        still keeps the steps that passed.
  grade_on_this_rank    pytest-mpi: each rank's pytest grades in its own process.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mpipipe.comm.launcher import find_mpiexec, mpiexec_command
from .base import TIME_LIMIT
from .steps import Problem, grade_steps, result_after


def rank_seconds(seconds):
    """The student's code's share of the time limit on each rank."""
    return seconds / 2


class Agreement:
    """On every rank: this rank's Problem (or None) in, the verdict all ranks share out.

    The feedback shown is the lowest failing rank's, but a rank that only
    waited in vain (a secondary Problem) gives way to one that knows why. A
    rank that does not arrive within `patience` seconds is stuck in an MPI
    call nobody watches: the verdict so far is written and the job ended.
    """

    def __init__(self, name, comm, patience, verdict_file=None, say=None):
        self.name, self.comm, self.patience, self.verdict_file = name, comm, patience, verdict_file
        self.say = say or say_on_stderr
        self.loaded, self.passed = False, 0   # steps every rank passed so far
        self.write(None)

    def __call__(self, problem):
        import numpy as np

        code = 0 if problem is None else 1 if problem.secondary else 2
        codes = np.zeros(self.comm.Get_size(), dtype=np.int64)
        request = self.comm.Iallgather(np.array([code], dtype=np.int64), codes)
        give_up = time.monotonic() + self.patience
        while not request.Test():
            if time.monotonic() > give_up:
                self.end_the_job()
            time.sleep(0.001)
        if codes.max() == 0:
            self.passed += self.loaded   # the first verdict is the file's loading, not a step
            self.loaded = True
            self.write(None)
            return None
        speaker = int(np.flatnonzero(codes == codes.max())[0])
        mine = problem.message if self.comm.Get_rank() == speaker else None
        agreed = Problem(self.comm.bcast(mine, root=speaker))
        self.write(agreed.message)
        return agreed

    def write(self, feedback):
        if self.verdict_file is None:
            return
        text = json.dumps({"passed": self.passed, "feedback": feedback})
        partial = Path(self.verdict_file).with_suffix(".tmp")
        partial.write_text(text)
        partial.replace(Path(self.verdict_file).with_suffix(".json"))   # whole, even if killed

    def end_the_job(self):
        from mpi4py import MPI

        message = (f"not every rank finished the step within {self.patience:g} s: one is stuck "
                   f"in an MPI call the grader does not watch (use only comm.Send and comm.Recv)")
        self.write(message)
        self.say(f"[rank {MPI.COMM_WORLD.Get_rank()}] {self.name}: {message}; ending the MPI "
                 f"job\n")
        time.sleep(0.5)   # let the launcher pass the line on before Abort tears the job down
        MPI.COMM_WORLD.Abort(1)


def say_on_stderr(text):
    sys.stderr.write(text)
    sys.stderr.flush()


def grade_on_this_rank(exercise, path, seconds=TIME_LIMIT, verdict_file=None, say=None):
    """This rank's part of grading `exercise`: every rank of COMM_WORLD calls it together
    and gets the same Result. `say(text)` writes the last words of a job that has to
    end (default: to stderr)."""
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    # The student's messages and the grader's verdicts each get their own communicator,
    # so a message the student left unreceived cannot be taken for a verdict.
    student, control = world.Dup(), world.Dup()
    limit = rank_seconds(seconds)
    agree = Agreement(exercise.name, control, limit + 5.0, verdict_file, say)
    result = grade_steps(exercise, path, limit, agree=agree, comm=student)
    student.Free()
    control.Free()
    return result


def grade_under_mpiexec(exercise, path, seconds=TIME_LIMIT):
    """Run the ranks' grading under `mpiexec -n exercise.ranks`, stopped after `seconds`."""
    if find_mpiexec() is None:
        return result_after(exercise, 0, "cannot grade: no mpiexec next to this Python or on "
                            "PATH (install the project with its MPI: pip install -e '.[mpich]')")
    folder = tempfile.mkdtemp(prefix="mpipipe-grade-")
    command = [*mpiexec_command(exercise.ranks), sys.executable, "-m", "mpipipe.cli.grade",
               "--under-mpi", exercise.name, str(path), folder, f"{seconds:g}"]
    if shutil.which("timeout"):   # ends the MPI job the clean way (SIGTERM to mpiexec)
        command = ["timeout", "-k", "5", f"{seconds:g}"] + command
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parents[2]),
                                                      env.get("PYTHONPATH")]))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 10,
                              env=env, stdin=subprocess.DEVNULL)
        errors, timed_out = done.stderr, done.returncode in (124, 137)
    except subprocess.TimeoutExpired:
        errors, timed_out = "", True
    verdicts = [json.loads(file.read_text()) for file in sorted(Path(folder).glob("rank*.json"))]
    shutil.rmtree(folder, ignore_errors=True)
    failures = sorted((v["passed"], v["feedback"]) for v in verdicts if v["feedback"])
    if failures:   # agreed by all ranks, or the one a rank wrote before ending the job
        return result_after(exercise, *failures[0])
    passed = max((v["passed"] for v in verdicts), default=0)
    if passed == len(exercise.steps):
        return result_after(exercise, passed)
    if timed_out:
        return result_after(exercise, passed,
                            f"{exercise.name} did not finish within {seconds:g} s under mpiexec "
                            f"-n {exercise.ranks}: some rank is waiting for a message that never "
                            f"comes")
    last = (errors.strip().splitlines() or ["no output"])[-1]
    return result_after(exercise, passed, f"the MPI run failed: {last}")
