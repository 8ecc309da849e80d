"""What every exercise check shares: results, loading a student's file, calling it, a time limit."""

import importlib.util
import itertools
import signal
import threading
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


TIME_LIMIT = 20.0   # seconds per exercise: far more than a right answer needs


PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass
class StepResult:
    step: str           # the step's name, e.g. "runs_without_deadlock" (a test's name under pytest)
    points: int         # earned: max_points if passed, else 0
    max_points: int
    outcome: str        # PASSED, FAILED or SKIPPED (an earlier step failed)
    message: str = ""   # FAILED: the feedback; SKIPPED: which step failed first


@dataclass
class Result:
    exercise: str       # the file name without .py, e.g. "ex1_gpipe"
    points: int
    max_points: int
    feedback: str = ""  # what to fix first; "" when every step passed
    steps: list = field(default_factory=list)   # a StepResult per step, in order


class Wrong(Exception):
    """An answer failed a check; the message tells the student what to fix."""


class NeverArrived(Wrong):
    """A rank gave up waiting for a message. Its peer usually knows better why (it never
    sent it), so when ranks disagree about what went wrong the peer's feedback is shown."""


class TimeLimit(BaseException):
    """The student's code ran too long (a BaseException: their `except Exception` won't hide it)."""


class NotAnExercisesFolder(ValueError):
    """Nothing to grade: the path holds no exercise file, or a name matches no exercise (exit 2)."""


# -- calling the student's code -------------------------------------------------------------

def load_exercise(path):
    """Import a student's file by its path, under a fresh module name.

    A fresh name keeps exercises/ex1_gpipe.py and solutions/ex1_gpipe.py apart
    when both are graded in one process.
    """
    path = Path(path).resolve()
    name = f"graded_{path.stem}_{next(_fresh_number)}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:
        raise Wrong(f"{path.name} does not load: {describe(error, path)}") from None
    return module


_fresh_number = itertools.count()


def call(module, function_name, *args, shown=None):
    """Call the student's function; turn what it raises into feedback. `shown(args)` says
    how to write the arguments in that feedback (default: as they are, shortened)."""
    function = getattr(module, function_name, None)
    if not callable(function):
        raise Wrong(f"{Path(module.__file__).name} has no function {function_name}")
    try:
        return function(*args)
    except Wrong:
        raise
    except NotImplementedError:
        raise Wrong(f"{function_name}: not written yet") from None
    except Exception as error:
        text = call_text(function_name, args) if shown is None else f"{function_name}({shown(args)})"
        raise Wrong(f"{text} raised {describe(error, module.__file__)}") from None


def call_text(function_name, args):
    return f"{function_name}({', '.join(map(repr, args))})"


def describe(error, path):
    """'ZeroDivisionError: division by zero (line 12 of ex3_bubble.py)'."""
    path = str(path)
    if isinstance(error, SyntaxError):
        return f"SyntaxError: {error.msg} (line {error.lineno} of {Path(path).name})"
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
             if frame.filename == path]
    where = f" (line {lines[-1]} of {Path(path).name})" if lines else ""
    return f"{type(error).__name__}: {error}{where}"


@contextmanager
def time_limit(seconds):
    """Raise TimeLimit in the code below if it runs longer than `seconds` (an endless loop).

    Uses the SIGALRM timer, which only the main thread can set; called from
    another thread the code runs without a limit.
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    if not in_main_thread or not hasattr(signal, "setitimer"):
        yield
        return

    def stop(signum, frame):
        raise TimeLimit()

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def short(value, limit=60):
    """repr on one line, cut at `limit` characters."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
