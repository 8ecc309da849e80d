"""The documentation cannot drift from the code: the site builds with no broken link
or missing page, and every ```bash block of docs/ and the lessons runs as written.

A block runs from a scratch folder that looks like the repository's root (every
top-level entry linked in, so `.venv/bin/...` and `lessons/...` resolve and the
files a command writes stay out of the checkout), after the README's first
command (the suite's .venv has what it installs), with only the system's PATH:
no virtual environment on it, as for a user who never activated one. The blocks
of one page run in order in one folder, so an `export` can write the file a
later `simulate` reads. A page shortens a slow command by putting
`<!-- test: SHORTER COMMAND -->` right before its block.

Two kinds of block are not run here, and each is run elsewhere: the README's two
commands (the setup, which the suite itself stands on, and the suite itself) and a
lesson page's own run command, which tests/test_lessons.py and
tests/test_lessons_tensor.py read from the page and run with its output checked.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = sorted([*ROOT.glob("docs/**/*.md"), *ROOT.glob("lessons/*.md"),
                ROOT / "lessons" / "exercises" / "README.md", ROOT / "slurm" / "README.md",
                ROOT / "README.md"])
BLOCK = re.compile(r"(?:<!-- test: (.*?) -->\n)?```bash\n(.*?)```", re.S)
LESSON_RUN = re.compile(r"^\.venv/bin/mpiexec -n \d+ \.venv/bin/python (lessons/\d\d_\w+\.py)\n$")
README_OWN = 2       # the README's setup command and its test command
BLOCK_TIME_LIMIT = 300


def blocks(page, text=None):
    """(command as run, command as written) for every bash block of `page`, in order."""
    found = [(short or written, written)
             for short, written in BLOCK.findall(page.read_text() if text is None else text)]
    if page == ROOT / "README.md":
        found = found[README_OWN:]

    def own_lesson_run(written):
        lesson = LESSON_RUN.match(written)
        return page.parent == ROOT / "lessons" and lesson and lesson.group(1) == f"lessons/{page.stem}.py"

    return [(run, written) for run, written in found if not own_lesson_run(written)]


def system_path():
    """PATH without any virtual environment's bin folder, this interpreter's included."""
    ours = str(pathlib.Path(sys.executable).parent)
    kept = [p for p in os.environ.get("PATH", os.defpath).split(os.pathsep)
            if p and p != ours and not (pathlib.Path(p) / "activate").exists()]
    return os.pathsep.join(kept)


def scratch_root(folder):
    for entry in ROOT.iterdir():
        if entry.name not in (".git", "site"):
            (folder / entry.name).symlink_to(entry)
    return folder


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    first, second = BLOCK.findall(readme)[:2]
    assert first[1].startswith("python3 -m venv .venv && .venv/bin/pip install -e")
    assert second[1] == "bash tests/run_all.sh\n"


def test_only_a_lesson_pages_own_run_command_is_left_to_the_lesson_tests():
    own = ".venv/bin/mpiexec -n 2 .venv/bin/python lessons/03_gpipe.py\n"
    other = ".venv/bin/mpiexec -n 2 .venv/bin/python lessons/04_one_f_one_b.py\n"
    text = f"```bash\n{own}```\n\n```bash\n{other}```\n"
    assert [w for _, w in blocks(ROOT / "lessons" / "03_gpipe.md", text)] == [other]
    assert [w for _, w in blocks(ROOT / "docs" / "page.md", text)] == [own, other]


@pytest.fixture(scope="module")
def venv():
    if not (ROOT / ".venv" / "bin" / "mpipipe").exists():
        if os.environ.get("CI"):
            pytest.fail("no .venv: run the README's first command (bash tests/run_all.sh makes it)")
        pytest.skip("no .venv here: the pages' commands assume the README's first command ran")


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_bash_block_runs_as_written(page, venv, tmp_path):
    folder = scratch_root(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "MPIPIPE_"))}
    env["PATH"] = system_path()
    for run, written in blocks(page):
        try:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", run], cwd=folder, env=env,
                                  capture_output=True, text=True, timeout=BLOCK_TIME_LIMIT,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{page.relative_to(ROOT)}: ran past {BLOCK_TIME_LIMIT} s:\n{run}")
        assert done.returncode == 0, (
            f"{page.relative_to(ROOT)}: exit {done.returncode} from\n{run}\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}")


def test_the_site_builds_with_no_broken_link(tmp_path):
    """`mkdocs build --strict`: a broken link or anchor, or a page missing from the
    navigation, is an error. Also run by CI on its own."""
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("mkdocs is not installed: pip install -e '.[docs]'")
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "-d", str(tmp_path / "site")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "lessons" / "03_gpipe" / "index.html").exists()
    reference = (tmp_path / "site" / "cli" / "index.html").read_text()
    assert "--checkpoint-dir" in reference and "--stage-costs" in reference
