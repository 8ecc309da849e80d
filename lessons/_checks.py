"""A lesson checks what it measured, and says WRONG (exit 1) when it disagrees.

Three kinds of check, each against something the code under test does not compute:
  bubble       the measured bubble lies between the step's replay (a floor: its own
               action times, free messages) and the replay + BUBBLE_TOLERANCE;
  exact        a count or a size equals its formula, written out in the lesson
               (micro-batches held, bytes of activations, messages sent);
  equivalence  the pipelined training equals one process training on the same
               batches (mpipipe train --check: float32 to 1e-4, float64 to 1e-9).

BUBBLE_TOLERANCE is what messages, the code between actions and cores shared
with other programs may add to a step on a 2-core machine: measured there with
other programs running (load average 3 to 8), over 7 runs of lessons 3 to 7 with
a core per rank and 5 with two ranks per core, the excess over the replay stayed
below 0.18 and below 0.31; the tolerances leave a margin of more than 0.1 over both.
The floor allows FLOOR_SLACK because each rank's clock starts at a barrier, which
the ranks leave a few microseconds apart.

To see a check fail, plant a wrong figure: MPIPIPE_LESSON_PLANT=bubble adds
BUBBLE_TOLERANCE + 0.05 to every measured bubble, =memory (=messages, =stash, ...) adds
one to every such count, =equivalence makes every run differ from one process;
several at once are comma-separated (=bubble,memory).
MPIPIPE_LESSON_FIGURES=FILE.json writes every checked figure there (the tests read it).
"""

import json
import os
import sys
from dataclasses import asdict, dataclass

from mpi4py import MPI

BUBBLE_TOLERANCE = 0.30          # ranks with a core each
BUBBLE_TOLERANCE_SHARED = 0.45   # more ranks than cores
FLOOR_SLACK = 0.01
PLANTS = ("bubble", "memory", "stash", "messages", "equivalence", "formula", "gradient",
          "deadlock")


@dataclass
class Figure:
    kind: str            # bubble, memory, stash, messages, equivalence, ...
    label: dict          # what was measured: schedule, m, rank, ...
    measured: float
    low: float           # the check passes when low <= measured <= high
    high: float
    ok: bool
    lowest_step_excess: float | None = None   # bubble: min over steps of measured - replay


class Checks:
    """Collects a lesson's checks on rank 0; `finish()` (every rank) prints and exits."""

    def __init__(self, comm=MPI.COMM_WORLD):
        self.comm, self.figures = comm, []
        self.plants = set(filter(None, os.environ.get("MPIPIPE_LESSON_PLANT", "").split(",")))
        if self.plants - set(PLANTS):
            raise ValueError(f"MPIPIPE_LESSON_PLANT: {', '.join(sorted(self.plants - set(PLANTS)))}"
                             f"? expected some of {', '.join(PLANTS)}, comma-separated")

    def tolerance(self, summary):
        """The bubble tolerance for this run: larger when ranks take turns on the cores."""
        return BUBBLE_TOLERANCE if summary.ranks_on_node <= summary.cores else BUBBLE_TOLERANCE_SHARED

    def bubble(self, label, trained):
        """The measured bubble of `trained` (lessons/_figures.Trained) against its replay."""
        if trained.run.records is None:
            return
        tolerance = self.tolerance(trained.summary)
        measured = trained.bubble + (tolerance + 0.05 if "bubble" in self.plants else 0.0)
        floor = trained.replay_bubble
        ok = (trained.lowest_excess >= -FLOOR_SLACK and floor - FLOOR_SLACK <= measured
              <= floor + tolerance)
        self._add("bubble", label, measured, floor, floor + tolerance, ok)
        self.figures[-1].lowest_step_excess = trained.lowest_excess

    def exact(self, kind, label, measured, formula):
        """A count or a size that must equal its formula to the unit."""
        if self.comm.Get_rank() != 0:
            return
        measured += 1 if kind in self.plants else 0
        self._add(kind, label, measured, formula, formula, measured == formula)

    def close(self, kind, label, computed, formula, tolerance=1e-9):
        """A computed figure (a simulation, an arithmetic) against its closed formula."""
        if self.comm.Get_rank() != 0:
            return
        computed += 2 * tolerance + 0.01 if kind in self.plants else 0
        self._add(kind, label, computed, formula - tolerance, formula + tolerance,
                  abs(computed - formula) <= tolerance)

    def equivalence(self, label, summary):
        """The run against one process on the same batches (train(check=True))."""
        if self.comm.Get_rank() != 0:
            return
        check = summary.check
        error = max(check.loss_rel_err, check.weight_rel_err)
        if "equivalence" in self.plants:
            error += 1.0
        self._add("equivalence", label, error, 0.0, check.tolerance, error <= check.tolerance)

    def _add(self, kind, label, measured, low, high, ok):
        self.figures.append(Figure(kind, dict(label), float(measured), float(low), float(high),
                                   bool(ok)))

    def lines(self):
        """One line per kind of check that passed; one WRONG line per figure that did not."""
        lines = []
        for kind in dict.fromkeys(f.kind for f in self.figures):
            mine = [f for f in self.figures if f.kind == kind]
            wrong = [f for f in mine if not f.ok]
            lines += [_wrong(f) for f in wrong]
            if not wrong:
                lines.append(f"check {kind:<12} ok: {_passed(kind, mine)}")
        return lines

    def finish(self):
        """Every rank: print the checks (rank 0), write the figures if asked, and exit 1 on
        every rank when one is WRONG."""
        wrong = None
        if self.comm.Get_rank() == 0:
            wrong = sum(not f.ok for f in self.figures)
            print("\n".join(self.lines()), flush=True)
            if wrong:
                print(f"WRONG: {wrong} of {len(self.figures)} checked figures disagree with "
                      "what they should be", flush=True)
            path = os.environ.get("MPIPIPE_LESSON_FIGURES")
            if path:
                with open(path, "w") as out:
                    json.dump([asdict(f) for f in self.figures], out, indent=1)
        if self.comm.bcast(wrong, root=0):
            sys.exit(1)


def _describe(label):
    return " ".join(f"{k}={v}" for k, v in label.items())


def _wrong(f):
    if f.kind == "bubble":
        return (f"WRONG bubble {_describe(f.label)}: measured {f.measured:.3f}, outside "
                f"[{f.low:.3f}, {f.high:.3f}] (its replay, replay + tolerance)")
    if f.kind == "equivalence":
        return (f"WRONG {_describe(f.label)}: differs from one process by {f.measured:.1e} "
                f"(relative), more than {f.high:.0e}")
    measured, formula = _digits(f.measured, f.low)
    return f"WRONG {f.kind} {_describe(f.label)}: measured {measured}, formula {formula}"


def _digits(a, b):
    """a and b with enough digits that a reader sees where they differ (`:g` keeps six,
    so 0.1 + 0.2 and 0.3 would both print 0.3 on a line that calls them different)."""
    for digits in (6, 10):
        shown = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if shown[0] != shown[1]:
            return shown
    return repr(a), repr(b)


def _passed(kind, figures):
    if kind == "bubble":
        excess = max(f.measured - f.low for f in figures)
        tolerance = max(f.high - f.low for f in figures)
        return (f"every measured bubble between its replay and the replay + {tolerance:.2f} "
                f"(largest excess {excess:.3f})")
    if kind == "equivalence":
        return (f"every run the same training as one process (largest relative difference "
                f"{max(f.measured for f in figures):.0e})")
    return f"{len(figures)} figures equal their formulas"
