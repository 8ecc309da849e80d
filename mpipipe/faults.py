"""Fault injection, for testing that failures end the job and lose nothing.

MPIPIPE_FAULT="KIND:RANK:STEP" makes world rank RANK misbehave at the start of
step STEP (counted from 1), once every rank has entered the step:

    raise   raise an exception (the job must end, naming the rank)
    kill    say so on stderr, then kill itself with SIGKILL (the launcher must end the job)
    nan     put a NaN into its first stage's weights (--nan-check must catch it)
    hang    stop answering for an hour (--timeout must catch it)
    skew    nudge its first stage's weights by 0.1% (--check must catch it)
    save    kill itself halfway through writing its stage file of the checkpoint of
            step STEP (the previous checkpoint must resume; the next save tidies up)

It exists for the test suite and for courses that show what failure looks like;
without the variable nothing here runs.
"""

import os
import signal
import sys
import time

KINDS = ("raise", "kill", "nan", "hang", "skew", "save")


class InjectedFault(RuntimeError):
    pass


def planned_fault():
    """(kind, rank, step) from MPIPIPE_FAULT, or None."""
    text = os.environ.get("MPIPIPE_FAULT")
    if not text:
        return None
    parts = text.split(":")
    if len(parts) != 3 or parts[0] not in KINDS or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"MPIPIPE_FAULT={text!r}: expected KIND:RANK:STEP, KIND one of "
                         f"{', '.join(KINDS)}")
    return parts[0], int(parts[1]), int(parts[2])


def maybe_fail(fault, world_rank, step, chunks):
    """Carry out the planned fault if it is this rank's and this step's."""
    if fault is None or fault[1] != world_rank or fault[2] != step:
        return
    kind = fault[0]
    if kind == "raise":
        raise InjectedFault(f"injected fault on rank {world_rank} at step {step}")
    if kind == "kill":
        die(world_rank, f"at step {step}")
    if kind == "nan":
        chunks[0].layers.flat_params[0] = float("nan")
    if kind == "hang":
        time.sleep(3600)
    if kind == "skew":
        chunks[0].layers.flat_params[...] *= 1.001


def dies_in_save(fault, world_rank, step):
    """Whether this rank is to die while writing the checkpoint of `step` (kind save)."""
    return fault is not None and fault == ("save", world_rank, step)


def die(world_rank, when):
    """Say so on stderr, then kill this rank with SIGKILL: no clean-up runs, as in a crash."""
    sys.stderr.write(f"[rank {world_rank}] MPIPIPE_FAULT: killing this rank (SIGKILL) {when}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
