"""Every lesson runs as its page says, checks itself, prints what its page quotes, and is
caught when one of its figures is planted wrong.

Each lesson runs once (cached) with the rank count its page states; the figures it
checked come back as JSON (MPIPIPE_LESSON_FIGURES) and are checked here again against
formulas written out below, independently of the lesson's own.
"""

import functools
import glob
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from mpipipe.comm.launcher import mpiexec_command

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
LESSONS = sorted(glob.glob(os.path.join(ROOT, "lessons", "0*.py")))
NAMES = [os.path.basename(p)[:-3] for p in LESSONS]
COMMAND = re.compile(r"^\.venv/bin/mpiexec -n (\d+) \.venv/bin/python (lessons/\S+\.py)$", re.M)
TOLERANCE = {True: 0.30, False: 0.45}       # bubble over its replay: a core per rank, or not
FLOOR_SLACK = 0.01
BATCH, WIDTH = 256, 512


def page(name):
    with open(os.path.join(ROOT, "lessons", name + ".md")) as text:
        return text.read()


def stated_ranks(name):
    """The rank count of the page's command, which must name the lesson itself."""
    found = COMMAND.search(page(name))
    assert found and found.group(2) == f"lessons/{name}.py", f"{name}.md: no command for itself"
    return int(found.group(1))


@functools.lru_cache(maxsize=None)
def run(name, **environment):
    """Run lesson `name` as its page says (with this Python's MPI); (done, figures)."""
    figures = os.path.join(ROOT, "lessons", "out", f"{name}-{os.getpid()}.json")
    os.makedirs(os.path.dirname(figures), exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MPIPIPE_LESSON_PLANT", "MPIPIPE_FAULT")}
    env.update(MPIPIPE_LESSON_FIGURES=figures, **environment)
    done = subprocess.run([*mpiexec_command(stated_ranks(name)), sys.executable,
                           os.path.join(ROOT, "lessons", name + ".py")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    found = []
    if os.path.exists(figures):
        with open(figures) as data:
            found = json.load(data)
        os.remove(figures)
    return done, found


def test_every_lesson_has_its_page_and_states_its_command():
    assert len(LESSONS) == 9
    for name in NAMES:
        ranks = stated_ranks(name)
        with open(os.path.join(ROOT, "lessons", name + ".py")) as source:
            assert f".venv/bin/mpiexec -n {ranks} .venv/bin/python lessons/{name}.py" in source.read()
        text = page(name)
        for needed in ("**Predict first.**", "**Try next.**", "exercises/ex", f"(out/{name}.png)"):
            assert needed in text, f"{name}.md lacks {needed}"
        for link in re.findall(r"\]\((exercises/[^)#]+)\)", text):
            assert os.path.exists(os.path.join(ROOT, "lessons", link)), f"{name}.md: {link}"


def test_lessons_readme_lists_every_lesson_as_its_page_runs_it():
    with open(os.path.join(ROOT, "lessons", "README.md")) as text:
        readme = text.read()
    for name in NAMES:
        assert f"`.venv/bin/mpiexec -n {stated_ranks(name)} .venv/bin/python lessons/{name}.py`" \
            in readme


def quoted_lines(name):
    """The lines the page shows in ```text blocks: each must be a line the lesson prints,
    `…` standing for one measured figure."""
    blocks = re.findall(r"```text\n(.*?)```", page(name), re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def as_pattern(line):
    """A whole printed line, any run of spaces for a run of spaces, `…` for a figure."""
    words = [r"\S+".join(re.escape(piece) for piece in word.split("…")) for word in line.split()]
    return re.compile(r"^\s*" + r"\s+".join(words) + r"\s*$", re.M)


@pytest.mark.parametrize("name", NAMES, ids=[n[:2] for n in NAMES])
def test_lesson_runs_checks_itself_and_prints_what_its_page_quotes(name):
    done, figures = run(name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WRONG" not in done.stdout and "check " in done.stdout
    assert "answer:" in done.stdout, "the answer to the page's question"
    assert figures and all(f["ok"] for f in figures)
    for line in quoted_lines(name):
        assert as_pattern(line).search(done.stdout), f"{name}.md quotes a line it does not print:" \
            f"\n{line}\n--- the lesson printed:\n{done.stdout}"
    if importlib.util.find_spec("matplotlib"):       # the plot extra
        assert os.path.exists(os.path.join(ROOT, "lessons", "out", name + ".png"))
    if f"out/{name}.html" in page(name):             # the page sends the student to it
        assert f"web page: lessons/out/{name}.html" in done.stdout
        assert "its longest idle slot: rank " in done.stdout
        assert os.path.exists(os.path.join(ROOT, "lessons", "out", name + ".html"))
    expected = EXPECTED.get(name[:2])
    if expected:
        expected(figures, stated_ranks(name))


# -- the figures, against formulas written out here ---------------------------------------

def activations(layers, rows, bytes_per_number=4):
    """A Linear keeps its input, a GELU its input and tanh(...): 3 arrays per layer."""
    return layers * 3 * rows * WIDTH * bytes_per_number


def of(figures, kind):
    return [f for f in figures if f["kind"] == kind]


def bubbles_within_tolerance(figures, P):
    bubbles = of(figures, "bubble")
    assert bubbles
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for f in bubbles:
        assert f["lowest_step_excess"] >= -FLOOR_SLACK, f
        assert f["low"] - FLOOR_SLACK <= f["measured"] <= f["low"] + TOLERANCE[P <= cores], f


def same_as_one_process(figures):
    assert of(figures, "equivalence")
    assert all(f["measured"] <= 1e-4 for f in of(figures, "equivalence"))


def expect_02(figures, P):
    bubbles_within_tolerance(figures, P)
    same_as_one_process(figures)
    assert [f["measured"] for f in of(figures, "stash")] == [1] * P
    assert [f["measured"] for f in of(figures, "memory")] == [activations(8 // P, BATCH)] * P


def expect_03(figures, P):
    bubbles_within_tolerance(figures, P)
    same_as_one_process(figures)
    for f in of(figures, "stash"):
        assert f["measured"] == f["label"]["m"]
    for f in of(figures, "memory"):
        m = f["label"]["m"]
        assert f["measured"] == m * activations(8 // P, BATCH // m)
    assert len(of(figures, "memory")) == 5 * P


def expect_04(figures, P):
    bubbles_within_tolerance(figures, P)
    same_as_one_process(figures)
    for f in of(figures, "stash"):
        label = f["label"]
        held = label["m"] if label["schedule"] == "gpipe" else min(P - label["rank"], label["m"])
        assert f["measured"] == held, f
    assert len(of(figures, "stash")) == 6 * P


def expect_05(figures, P):
    bubbles_within_tolerance(figures, P)
    same_as_one_process(figures)
    for f in of(figures, "memory"):
        label = f["label"]
        held = 8 if label["schedule"] == "gpipe" else min(P - label["rank"], 8)
        kept = BATCH // 8 * WIDTH * 4 if label["recompute"] else activations(8 // P, BATCH // 8)
        assert f["measured"] == held * kept, f


def expect_06(figures, P):
    bubbles_within_tolerance(figures, P)
    same_as_one_process(figures)
    assert sorted(f["measured"] for f in of(figures, "messages")) == \
        [2 * 8 * (V * P - 1) for V in (1, 2, 4)]
    for f in of(figures, "stash"):
        if f["label"]["V"] == 1:
            assert f["measured"] == min(P - f["label"]["rank"], 8)


def expect_07(figures, P):
    bubbles_within_tolerance(figures, P)
    same_as_one_process(figures)
    stash = {(f["label"]["schedule"], f["label"]["rank"]): f["measured"] for f in of(figures, "stash")}
    for rank in range(P):
        assert stash["1f1b", rank] == P - rank
        assert stash["zb-h1", rank] == P      # every rank keeps a micro-batch until its W
    # V-Half, V-Min: half-size chunks; the fullest rank holds (P+2)//2 and (P+4)//3 stages'
    assert stash["v-half", "fullest"] == 2 * ((P + 2) // 2)
    assert stash["v-min", "fullest"] == 2 * ((P + 4) // 3)
    # The planned trade-off at P = 8, m = 32: memory as the paper states it, and the bubble
    # of one flushed step from each rank's idle time with F = B = W = 1 (3m of work).
    planned = {(f["label"]["schedule"], f["label"]["what"]): f["measured"]
               for f in of(figures, "formula")}
    assert {name: planned[name, "memory"] for name in ("1f1b", "zb-h1", "zb-h2", "zbv", "v-half",
                                                       "v-min")} == \
        {"1f1b": 8, "zb-h1": 8, "zb-h2": 15, "zbv": 8, "v-half": 5, "v-min": 4}
    for name, idle in (("1f1b", 21), ("zb-h1", 7), ("v-half", 13), ("v-min", 13.5)):
        assert planned[name, "bubble"] == pytest.approx(idle / (96 + idle))


def expect_08(figures, P):
    same_as_one_process(figures)
    assert [f["measured"] for f in of(figures, "allreduce")] == [2, 4, 2, 4]
    assert of(figures, "equivalence")[0]["measured"] <= 1e-9     # float64
    bubbles_within_tolerance(figures, 4)


EXPECTED = {"02": expect_02, "03": expect_03, "04": expect_04, "05": expect_05,
            "06": expect_06, "07": expect_07, "08": expect_08}


# -- planted figures and bugs: the lessons must say WRONG and fail -----------------------

@pytest.mark.parametrize("name, plants", [
    ("02_naive_model_parallel", "bubble,memory,stash,equivalence"),
    ("06_interleaved", "messages"),
    ("09_cluster", "formula"),
    ("01_point_to_point", "gradient,deadlock"),
], ids=["02", "06", "09", "01"])
def test_a_planted_figure_is_flagged(name, plants):
    done, figures = run(name, MPIPIPE_LESSON_PLANT=plants)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "WRONG:" in done.stdout
    for kind in plants.split(","):
        assert f"WRONG {kind}" in done.stdout or kind == "equivalence", kind
        assert of(figures, kind) and not any(f["ok"] for f in of(figures, kind)), kind
    assert all(f["ok"] for f in figures if f["kind"] not in plants.split(","))


def test_a_training_that_differs_from_one_process_is_flagged():
    """A real bug, not a planted figure: rank 1's weights nudged at step 3."""
    done, figures = run("02_naive_model_parallel", MPIPIPE_FAULT="skew:1:3")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "WRONG P=4: differs from one process" in done.stdout
    assert not of(figures, "equivalence")[0]["ok"]
    assert all(f["ok"] for f in figures if f["kind"] != "equivalence")


def test_every_mpipipe_command_on_the_pages_runs(tmp_path):
    """The pages' `mpipipe simulate / export / topology` commands, in the order a page gives
    them (an export writes the file a later simulate reads), each in its own folder."""
    tried = 0
    for name in NAMES:
        text = re.sub(r"\s+", " ", page(name))
        folder = tmp_path / name
        folder.mkdir()
        for command in re.findall(r"`\.venv/bin/mpipipe ((?:simulate|export|topology)[^`]*)`", text):
            done = subprocess.run([sys.executable, "-m", "mpipipe", *command.split()],
                                  capture_output=True, text=True, timeout=60, cwd=folder)
            assert done.returncode == 0, f"{name}.md: mpipipe {command}\n{done.stderr}"
            tried += 1
    assert tried >= 10


def test_a_wrong_line_shows_the_digits_where_figure_and_formula_differ():
    """Six significant digits would print 0.1 + 0.2 and 0.3 alike on a line calling them
    different; the line must show where they part."""
    spec = importlib.util.spec_from_file_location("_checks", os.path.join(ROOT, "lessons", "_checks.py"))
    checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checks)

    def line(measured, formula):
        return checks._wrong(checks.Figure("memory", {"rank": 0}, measured, formula, formula, False))
    for measured, formula in ((0.1 + 0.2, 0.3), (1536.0000001, 1536), (1537, 1536)):
        shown = line(measured, formula).split("measured ")[1].split(", formula ")
        assert float(shown[0]) == measured and float(shown[1]) == formula
        assert shown[0] != shown[1]
