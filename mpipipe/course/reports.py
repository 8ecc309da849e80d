"""One grading run, three files an autograder reads: JUnit XML, Gradescope's results.json,
and a plain JSON summary. All three are written from the same Results, so they agree
with each other and with the table `mpipipe grade` prints.

    JUnit XML      one <testcase> a step (classname: the exercise), properties points and
                   max_points on each and the totals on the suite; a failed step carries
                   its feedback as the failure message, a step after it is skipped naming
                   it. GitHub Classroom, GitLab and Jenkins show this format.
    results.json   Gradescope's autograder format: "score" and one entry a step in
                   "tests", each with name, score, max_score, status and output.
    summary JSON   {"points", "max_points", "full_marks", "exercises": [...]}: one entry an
                   exercise with its points, feedback and steps, for scripts of one's own.
"""

import json
import xml.etree.ElementTree as ET

from .base import FAILED, SKIPPED


def totals(results):
    return sum(r.points for r in results), sum(r.max_points for r in results)


def summary(results):
    points, most = totals(results)
    return {
        "points": points, "max_points": most, "full_marks": points == most,
        "exercises": [{
            "exercise": r.exercise, "points": r.points, "max_points": r.max_points,
            "feedback": r.feedback,
            "steps": [{"step": s.step, "points": s.points, "max_points": s.max_points,
                       "outcome": s.outcome, "message": s.message} for s in r.steps],
        } for r in results],
    }


def gradescope(results, output=""):
    """Gradescope's results.json: a test per step, so a student sees which step cost what."""
    points, _ = totals(results)
    tests = []
    for number, r in enumerate(results, start=1):
        for index, s in enumerate(r.steps, start=1):
            tests.append({"name": f"{r.exercise}: {s.step}", "number": f"{number}.{index}",
                          "score": s.points, "max_score": s.max_points,
                          "status": "passed" if s.points == s.max_points else "failed",
                          "output": s.message})
    return {"score": points, "output": output, "visibility": "visible", "tests": tests}


def junit_xml(results, suite_name="mpipipe-grade"):
    """The JUnit XML text: the same shape pytest's --junitxml gives the grading tests."""
    points, most = totals(results)
    steps = [(r, s) for r in results for s in r.steps]
    root = ET.Element("testsuites")
    suite = ET.SubElement(root, "testsuite", name=suite_name, tests=str(len(steps)),
                          failures=str(sum(s.outcome == FAILED for _, s in steps)),
                          skipped=str(sum(s.outcome == SKIPPED for _, s in steps)), errors="0")
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="points", value=str(points))
    ET.SubElement(properties, "property", name="max_points", value=str(most))
    for r, s in steps:
        case = ET.SubElement(suite, "testcase", classname=r.exercise, name=s.step)
        step_properties = ET.SubElement(case, "properties")
        for name, value in (("exercise", r.exercise), ("points", s.points),
                            ("max_points", s.max_points)):
            ET.SubElement(step_properties, "property", name=name, value=str(value))
        if s.outcome == FAILED:
            ET.SubElement(case, "failure", message=s.message).text = s.message
        elif s.outcome == SKIPPED:
            ET.SubElement(case, "skipped", message=s.message)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_reports(results, junit=None, gradescope_file=None, json_file=None, output=""):
    """Write each report asked for (a path, or None for not)."""
    if junit:
        with open(junit, "w") as f:
            f.write(junit_xml(results))
    if gradescope_file:
        with open(gradescope_file, "w") as f:
            json.dump(gradescope(results, output), f, indent=1)
    if json_file:
        with open(json_file, "w") as f:
            json.dump(summary(results), f, indent=1)
