"""Helpers that keep MPI tests from hanging: groups of ranks and collective verdicts."""

import pytest
from mpi4py import MPI

from mpipipe.check import relative_error, train_sequential


def group_of(size):
    """A communicator of `size` ranks for this rank (the world cut into groups), or skip."""
    world = MPI.COMM_WORLD
    if world.Get_size() < size or world.Get_size() % size:
        pytest.skip(f"needs a multiple of {size} ranks, have {world.Get_size()}")
    return world.Split(color=world.Get_rank() // size, key=world.Get_rank())


def verdict(comm, problems):
    """Every rank of the world learns whether any rank of any group found a problem."""
    world = MPI.COMM_WORLD
    messages = world.allgather(problems)
    found = [f"world rank {r}: {p}" for r, ps in enumerate(messages) for p in ps]
    return not found, "\n".join(found)


def against_one_process(run, tolerance=1e-9):
    """(what differs from the one-process run: losses, each replica's final weights; the
    reference losses). Call on the rank that holds the gathered result (rank 0)."""
    problems = []
    losses, weights = train_sequential(run.setup)
    if relative_error(run.summary.losses, losses) > tolerance:
        problems.append(f"losses {run.summary.losses} != {losses}")
    for replica, w in enumerate(run.weights):
        error = relative_error(w, weights)
        if error > tolerance:
            problems.append(f"replica {replica}: weights differ, relative error {error:.2e}")
    return problems, losses
