"""Lets pytest grade the exercises in this folder (do not change it).

    .venv/bin/python -m pytest lessons/exercises

runs one test per grading step, with the same checks, points and feedback as
`mpipipe grade lessons/exercises`; README.md says more. The grader itself is
mpipipe/course/pytest_plugin.py: this file only hands pytest its hooks.
"""

from mpipipe.course.pytest_plugin import (  # noqa: F401
    pytest_addoption, pytest_collect_file, pytest_collection_modifyitems,
    pytest_configure, pytest_report_teststatus, pytest_sessionfinish, pytest_terminal_summary)
