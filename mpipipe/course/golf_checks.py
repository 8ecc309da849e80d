"""Checks of exercise 11, schedule golf: design a schedule, score its makespan.

The hole: P = 4 ranks, m = 8 micro-batches, F = B = W = 1 (a micro-batch's
forward, input gradient and weight gradient on one rank), at most BUDGET = 4
micro-batches' activations held on any rank (from a micro-batch's F to its W
or BW). The references are the validator (the lists run and hold every action
once), the stash count the engine keeps, the lower bound a step cannot beat
(each rank's own work, m(F+B+W), plus the last rank's wait for its first input,
(P-1)F), and a real run under mpiexec with --check against one process.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

from mpipipe.comm.launcher import mpiexec_command
from mpipipe.errors import ConfigError, ScheduleError
from mpipipe.plan.simulate import Costs, peak_stash, simulate
from mpipipe.schedules import schedule_from_file, validate, write_schedule_file

from .base import Wrong, call
from .schedule_checks import student_schedule

P, M, BUDGET = 4, 8, 4
COSTS = Costs(F=1, B=1, W=1)
LOWER_BOUND = M * (COSTS.F + COSTS.B + COSTS.W) + (P - 1) * COSTS.F
MPI_SECONDS = 120


def golf_schedule(module):
    """The student's schedule: lists of Actions, or the path of a PyTorch-format CSV."""
    answer = call(module, "golf_actions", P, M)
    if isinstance(answer, (str, Path)):
        path = Path(module.__file__).parent / answer
        try:
            return schedule_from_file(path, P, M, 1).schedule
        except (OSError, ValueError, ConfigError, ScheduleError) as error:
            raise Wrong(f"golf_actions returned the file {answer}, which does not read: "
                        f"{error}") from None
    return student_schedule(module, "golf_actions", P, M)


def is_valid(module):
    """validate(): every F and backward once per micro-batch, and no rank waits forever."""
    try:
        validate(golf_schedule(module))
    except ScheduleError as error:
        text = str(error)
        if "no complete backward" in text:
            hint = "every B needs its W (or write BW): a lost W leaves its weight gradient out"
        elif "deadlock" in text or "wait forever" in text:
            hint = ("a rank waits for a message its neighbour only sends later: on each rank, "
                    "put the F that feeds the next rank, or the B that answers it, earlier")
        else:
            hint = "each rank's list must hold its actions in an order it can run them"
        raise Wrong(f"your schedule does not run: {text}\n{hint}") from None


def fits_the_budget(module):
    """No rank holds more than BUDGET micro-batches between their F and their W (or BW)."""
    for rank, held in enumerate(peak_stash(golf_schedule(module))):
        if held > BUDGET:
            raise Wrong(f"rank {rank} holds {held} micro-batches' activations at once (from F to "
                        f"W or BW), the budget is {BUDGET}: start fewer F's before this rank's "
                        f"first B, or run a W sooner to free one")


def runs_under_mpi(module):
    """The schedule, written to a CSV, trains on 4 MPI ranks exactly like one process."""
    with tempfile.TemporaryDirectory() as folder:
        csv = Path(folder) / "golf.csv"
        write_schedule_file(validate(golf_schedule(module)), csv)
        try:
            start = mpiexec_command(P)
        except FileNotFoundError as error:
            raise Wrong(str(error)) from None
        command = [*start, sys.executable, "-m", "mpipipe", "train",
                   "--schedule-file", str(csv), "--check", "--steps", "3", "--quiet",
                   "--timeout", "60"]
        try:
            run = subprocess.run(command, capture_output=True, text=True, timeout=MPI_SECONDS,
                                 stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise Wrong(f"the run under mpiexec took more than {MPI_SECONDS} s") from None
    if run.returncode != 0:
        said = (run.stderr.strip() or run.stdout.strip()).splitlines()[-3:]
        raise Wrong(f"mpiexec -n {P} mpipipe train --schedule-file ... --check ended with "
                    f"status {run.returncode}: " + " / ".join(said))


def makespan(module):
    return simulate(validate(golf_schedule(module)), COSTS).makespan


def within(share):
    """The makespan is at most `share` above the lower bound."""
    def check(module):
        took = makespan(module)
        if took > LOWER_BOUND * (1 + share) + 1e-9:
            raise Wrong(f"makespan {took:g}, {100 * (took / LOWER_BOUND - 1):.0f}% above the lower "
                        f"bound {LOWER_BOUND:g} = m(F+B+W) + (P-1)F; this band needs at most "
                        f"{100 * share:g}% above it. Where does each rank idle? Split each "
                        f"backward into B and W, answer the B the rank before is waiting for "
                        f"first, and fill the waits with W's")
    check.__name__ = f"within_{round(100 * share)}_percent"
    return check
