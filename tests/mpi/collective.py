"""Helpers that keep MPI tests from hanging: groups of ranks and collective verdicts."""

import pytest
from mpi4py import MPI


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
