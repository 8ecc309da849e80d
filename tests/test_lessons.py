"""Every lesson runs, with the rank count its docstring states, within a time limit."""

import glob
import os
import re
import subprocess
import sys

import pytest

from mpipipe.launcher import mpiexec_command

LESSONS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "lessons", "0*.py")))
EXPECT = {   # a line each lesson must print: its point, measured or computed
    "01": "gradient correct", "02": "formula (P-1)/P = 0.750", "03": "formula: (P-1)/(m+P-1)",
    "04": "1F1B's stash is min(P - rank, m)", "05": "R: the repeated forward",
    "06": "interleaved  4", "07": "zb-h2", "08": "the same training.", "09": "interleaved  3",
}


def stated_ranks(path):
    with open(path) as source:
        return int(re.search(r"mpiexec -n (\d+) python lessons/", source.read()).group(1))


def test_every_lesson_has_its_page():
    assert len(LESSONS) == 9
    for path in LESSONS:
        assert os.path.exists(path[:-3] + ".md"), path


@pytest.mark.parametrize("path", LESSONS, ids=[os.path.basename(p)[:2] for p in LESSONS])
def test_lesson_runs(path):
    ranks = stated_ranks(path)
    done = subprocess.run([*mpiexec_command(ranks), sys.executable, path],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert EXPECT[os.path.basename(path)[:2]] in done.stdout, done.stdout
    assert "WRONG" not in done.stdout and "NOT the same" not in done.stdout
