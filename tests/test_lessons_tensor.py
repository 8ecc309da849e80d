"""Lessons 10 and 11 (tensor parallelism) run with the rank counts their docstrings state,
print their measured comparisons, and agree with their formulas (a disagreement prints
WRONG and exits 1)."""

import os
import re
import subprocess
import sys

import pytest

from mpipipe.launcher import mpiexec_command

FOLDER = os.path.join(os.path.dirname(__file__), "..", "lessons")
LESSONS = {   # file: lines it must print
    "10_tensor_or_pipeline": ["  m = 8, L = 2        64 x 18.0 KiB = 1152.0 KiB  ok",
                              "8 x 18.0 KiB =  144.0 KiB  ok", "pp = 2 wins once a forward's",
                              "one process?         the same training"],
    "11_three_d": ["     5     1     0       1  4 5     5 7      1 5      16 x 4.5 KiB",
                   "the same training.", "tensor all-reduces   4608 x 48 MiB = 216 GiB"],
}


@pytest.mark.parametrize("name", list(LESSONS))
def test_lesson_runs_and_agrees_with_its_formulas(name):
    path = os.path.join(FOLDER, name + ".py")
    assert os.path.exists(os.path.join(FOLDER, name + ".md"))
    with open(path[:-3] + ".md") as page:     # the command its page states
        command = rf"^\.venv/bin/mpiexec -n (\d+) \.venv/bin/python lessons/{name}\.py$"
        ranks = int(re.search(command, page.read(), re.M).group(1))
    done = subprocess.run([*mpiexec_command(ranks), sys.executable, path],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    for line in LESSONS[name]:
        assert line in done.stdout, done.stdout
    assert "WRONG" not in done.stdout and "NOT the same" not in done.stdout
