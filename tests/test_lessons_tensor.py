"""Lessons 10 and 11 (tensor parallelism) run as their pages say, print their measured
comparisons, and agree with their formulas (lessons/_checks.py: a disagreement prints
WRONG and exits 1, which a planted figure shows)."""

import os
import re
import subprocess
import sys

import pytest

from mpipipe.comm.launcher import mpiexec_command

FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lessons")
LESSONS = {   # file: lines it must print
    "10_tensor_or_pipeline": [
        "  m = 8, L = 2        64 x 18.0 KiB = 1152.0 KiB          8 x 18.0 KiB =  144.0 KiB",
        "pp = 2 wins once a forward's", "one process?         the same training",
        "check messages     ok: 24 figures equal their formulas", "read it: doubling m",
        "  why: a pipeline stage's forward took", "picture: lessons/out/10_tensor_or_pipeline.png"],
    "11_three_d": [
        "     5     1     0       1  4 5     5 7      1 5      16 x 4.5 KiB",
        "tensor all-reduces   4608 x 48 MiB = 216 GiB", "check formula      ok: 24 figures",
        "check messages     ok: 16 figures", "check equivalence  ok",
        "picture: lessons/out/11_three_d.png"],
}


def run(name, **environment):
    path = os.path.join(FOLDER, name + ".py")
    with open(os.path.join(FOLDER, name + ".md")) as page:     # the command its page states
        command = rf"^\.venv/bin/mpiexec -n (\d+) \.venv/bin/python lessons/{name}\.py$"
        ranks = int(re.search(command, page.read(), re.M).group(1))
    env = {k: v for k, v in os.environ.items() if k != "MPIPIPE_LESSON_PLANT"}
    return subprocess.run([*mpiexec_command(ranks), sys.executable, path], capture_output=True,
                          text=True, timeout=240, env={**env, **environment})


@pytest.mark.parametrize("name", list(LESSONS))
def test_lesson_runs_and_agrees_with_its_formulas(name):
    picture = os.path.join(FOLDER, "out", name + ".png")
    if os.path.exists(picture):
        os.remove(picture)
    done = run(name, MPLBACKEND="Agg")
    assert done.returncode == 0, done.stdout + done.stderr
    for line in LESSONS[name]:
        assert line in done.stdout, done.stdout
    assert "WRONG" not in done.stdout
    with open(picture, "rb") as drawn:        # the picture its page shows, drawn by this run
        assert drawn.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", list(LESSONS))
def test_the_page_asks_first_and_shows_the_runs_picture(name):
    with open(os.path.join(FOLDER, name + ".md")) as page:
        text = page.read()
    assert text.index("**Predict first.**") < text.index("```bash")
    assert f"(out/{name}.png)" in text


def test_a_planted_figure_is_caught():
    done = run("11_three_d", MPIPIPE_LESSON_PLANT="messages,equivalence")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "WRONG messages rank=0 count=tensor all-reduces: measured 17, formula 16" in done.stdout
    assert "WRONG grid=tp=2 x pp=2 x dp=2: differs from one process" in done.stdout
    assert "Traceback" not in done.stderr
