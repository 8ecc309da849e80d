"""The data-parallel all-reduce of a chunk starts once its last weight gradient is done."""

import json
import subprocess
import sys
from collections import defaultdict

import pytest

from mpipipe.comm.launcher import mpiexec_command

RUN = ["--pp", "2", "--dp", "2", "--schedule", "interleaved", "--microbatches", "4",
       "--global-batch", "32", "--layers", "8", "--hidden", "16", "--data", "teacher",
       "--samples", "128", "--steps", "3", "--quiet", "--check"]


def traced(tmp_path, *extra):
    trace = tmp_path / "trace.json"
    done = subprocess.run([*mpiexec_command(4), sys.executable, "-m", "mpipipe", "train", *RUN,
                           *extra, "--trace", str(trace)], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0 and "check         passed" in done.stdout, done.stderr
    slices = [e for e in json.loads(trace.read_text())["traceEvents"] if e.get("ph") == "X"]
    steps = defaultdict(list)             # (rank, step) -> its slices
    for e in slices:
        steps[e["pid"], e["args"]["step"]].append(e)
    return steps


def reductions_against_gradients(steps):
    """For each rank and step: per chunk, (its all-reduce's start, the end of its last BW,
    the end of the rank's last compute)."""
    found = []
    for events in steps.values():
        actions = [e for e in events if e["cat"] != "reduce"]
        list_end = max(e["ts"] + e["dur"] for e in actions if e["cat"] == "compute")
        for reduce in (e for e in events if e["cat"] == "reduce"):
            chunk = reduce["args"]["chunk"]
            last_gradient = max(e["ts"] + e["dur"] for e in actions
                                if e["args"]["kind"] in ("BW", "W") and e["args"]["chunk"] == chunk)
            found.append((reduce["ts"], last_gradient, list_end))
    return found


@pytest.mark.parametrize("when", ["overlap", "end"])
def test_each_chunk_is_reduced_after_its_last_gradient_and_training_stays_exact(tmp_path, when):
    found = reductions_against_gradients(traced(tmp_path, "--allreduce", when))
    assert len(found) == 4 * 3 * 2                 # 4 ranks, 3 steps, 2 chunks each
    assert all(start >= last_gradient - 1e-3 for start, last_gradient, _ in found)
    early = [start < list_end - 1e-3 for start, _, list_end in found]
    if when == "overlap":           # interleaved: a rank's chunk 1 finishes its gradients first
        assert sum(early) == len(found) // 2, found
    else:
        assert not any(early), found
