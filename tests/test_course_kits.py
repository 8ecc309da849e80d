"""The instructors' kits run as their hosts would run them: the GitHub Classroom workflow's
steps in a template repository built by the command on docs/instructors.md, and the
Gradescope autograder unzipped into a folder standing for /autograder, setup.sh first.
Each grades the reference solutions (full marks) and the untouched exercises (zero).

Both install mpipipe into a fresh virtual environment from a copy of this checkout,
as the kits do from the course's copy: a missing file or dependency fails here.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

from mpipipe.cli.grade import EXERCISES

from .test_docs import scratch_root, system_path

ROOT = Path(__file__).resolve().parent.parent
TOTAL = sum(e.max_points for e in EXERCISES)
PAGE = ROOT / "docs" / "instructors.md"
INSTALL_TIME_LIMIT = 300


def page_command(needle):
    """The one bash block of the instructors' page that contains `needle`."""
    found = [block for block in re.findall(r"```bash\n(.*?)```", PAGE.read_text(), re.S)
             if needle in block]
    assert len(found) == 1, needle
    return found[0]


def run(command, cwd, env=None, timeout=INSTALL_TIME_LIMIT):
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return done


def plain_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "MPIPIPE_"))}
    env["PATH"] = system_path()
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The page's two build commands, run in a scratch copy of the repository's root."""
    folder = scratch_root(tmp_path_factory.mktemp("root"))
    for needle in ("course-template", "autograder.zip"):
        done = run(page_command(needle), folder, plain_env())
        assert done.returncode == 0, done.stdout + done.stderr
    return folder


def fill(folder, source):
    """The student's files: the solutions' or the untouched exercises' ex*.py."""
    for path in source.glob("ex*.py"):
        shutil.copy(path, folder / path.name)


CASES = [("lessons/solutions", TOTAL), ("lessons/exercises", 0)]


@pytest.mark.parametrize("source, points", CASES, ids=["solutions", "untouched"])
def test_the_github_classroom_workflow_grades(built, tmp_path, source, points):
    import yaml

    template = tmp_path / "repository"
    shutil.copytree(built / "course-template", template)   # a student's repository
    fill(template / "exercises", ROOT / source)
    workflow = yaml.safe_load((template / ".github" / "workflows" / "grade.yml").read_text())
    python = tmp_path / "python"          # what actions/setup-python puts first on PATH
    subprocess.run([sys.executable, "-m", "venv", str(python)], check=True, timeout=120)
    summary = tmp_path / "summary.md"
    env = plain_env(**workflow["env"], GITHUB_STEP_SUMMARY=str(summary),
                    PATH=f"{python / 'bin'}{os.pathsep}{system_path()}")
    env["MPIPIPE"] = f"{built / 'autograder' / 'mpipipe'}[mpich]"   # the course's copy
    failed = []
    for step in workflow["jobs"]["grade"]["steps"]:
        if "run" not in step or (failed and step.get("if") != "always()"):
            continue                       # uses: checkout, setup-python, upload-artifact
        done = run(step["run"], template, env)
        if done.returncode != 0:
            failed.append((step["name"], done.returncode, done.stdout + done.stderr))
    expected_failures = [] if points == TOTAL else ["Grade"]
    assert [name for name, *_ in failed] == expected_failures, failed
    suite = ET.parse(template / "grade.xml").getroot().find("testsuite")
    totals = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert totals == {"points": str(points), "max_points": str(TOTAL)}
    assert re.search(rf"^total +{points}/{TOTAL}$", summary.read_text(), re.M), summary.read_text()


@pytest.fixture(scope="module")
def autograder(built, tmp_path_factory):
    """/autograder after Gradescope unzipped the autograder into source/ and ran setup.sh."""
    root = tmp_path_factory.mktemp("autograder")
    with zipfile.ZipFile(built / "autograder.zip") as archive:
        archive.extractall(root / "source")
    for script in ("setup.sh", "run_autograder"):   # (zipfile keeps no modes; Gradescope
        (root / "source" / script).chmod(0o755)     # runs them with bash)
    done = run(f"bash {root / 'source' / 'setup.sh'}", root / "source",
               plain_env(AUTOGRADER=str(root)))
    assert done.returncode == 0, done.stdout + done.stderr
    return root


@pytest.mark.parametrize("source, points, into", [
    *[(s, p, "") for s, p in CASES], ("lessons/solutions", TOTAL, "exercises")],
    ids=["solutions", "untouched", "from-a-repository"])
def test_the_gradescope_autograder_grades(autograder, source, points, into):
    submission = autograder / "submission"
    shutil.rmtree(submission, ignore_errors=True)
    shutil.rmtree(autograder / "results", ignore_errors=True)
    (submission / into).mkdir(parents=True)
    fill(submission / into, ROOT / source)
    done = run(f"bash {autograder / 'source' / 'run_autograder'}", autograder,
               plain_env(AUTOGRADER=str(autograder)), timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((autograder / "results" / "results.json").read_text())
    assert results["score"] == points
    assert sum(t["max_score"] for t in results["tests"]) == TOTAL
    assert sum(t["score"] for t in results["tests"]) == points


def test_a_submission_without_exercises_gets_0_and_says_why(autograder):
    submission = autograder / "submission"
    shutil.rmtree(submission, ignore_errors=True)
    shutil.rmtree(autograder / "results", ignore_errors=True)
    submission.mkdir()
    (submission / "notes.txt").write_text("I did not do it\n")
    done = run(f"bash {autograder / 'source' / 'run_autograder'}", autograder,
               plain_env(AUTOGRADER=str(autograder)), timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((autograder / "results" / "results.json").read_text())
    assert results["score"] == 0 and results["tests"] == []
    assert "is not a folder of exercises" in results["output"]
