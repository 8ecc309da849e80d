"""The 3D grid for real: tp = 2 x pp = 2 x dp = 2 on 8 ranks.

tests/run_all.sh runs this file alone under `mpiexec -n 8` (oversubscribed on
a small machine: the cases are tiny, a few seconds each); with fewer ranks it
skips. Each case is the single-process training to round-off (float64), every
replica ending with the same weights, and each rank talking to the ranks the
layout formula says: its tensor group, its pipeline, its data-parallel group.
"""

import pytest
from mpi4py import MPI

from mpipipe.config import TrainConfig
from mpipipe.comm.topology import coordinates
from mpipipe.train import run_training

from .collective import against_one_process, group_of, verdict

GPT = dict(model="gpt", tp=2, pp=2, dp=2, global_batch=16, steps=2, layers=2, hidden=8,
           heads=2, samples=64, optimizer="adam", lr=0.01, timeout=120, dtype="float64")


@pytest.mark.mpi(min_size=8)
@pytest.mark.parametrize("schedule,recompute", [("1f1b", False), ("zb-h1", True)])
def test_tp_x_pp_x_dp_trains_exactly_like_one_process(schedule, recompute):
    comm = group_of(8)
    run = run_training(TrainConfig(schedule=schedule, recompute=recompute, microbatches=2,
                                   **GPT), comm)
    problems = against_one_process(run)[0] if comm.Get_rank() == 0 else []
    ok, message = verdict(comm, problems)
    assert ok, message


@pytest.mark.mpi(min_size=8)
def test_each_rank_talks_to_the_ranks_the_layout_names():
    comm = group_of(8)
    run = run_training(TrainConfig(microbatches=2, **dict(GPT, steps=1)), comm)
    grid, rank = run.topology, comm.Get_rank()
    world_of = lambda sub: sorted(sub.allgather(rank))      # noqa: E731
    tensor, pipe, data = world_of(grid.tensor), world_of(grid.pipe), world_of(grid.data)
    tp_index, pp_index, dp_index = coordinates(rank, 2, 2)
    problems = []
    if (grid.tp_index, grid.pp_index, grid.dp_index) != (tp_index, pp_index, dp_index):
        problems.append(f"rank {rank} is {grid}")
    expected = {"tensor": [r for r in range(8) if r // 2 == rank // 2],
                "pipe": [r for r in range(8) if r % 2 == tp_index and r // 4 == dp_index],
                "data": [r for r in range(8) if r % 4 == rank % 4]}
    for name, found in (("tensor", tensor), ("pipe", pipe), ("data", data)):
        if found != expected[name]:
            problems.append(f"rank {rank}: its {name} communicator holds {found}, "
                            f"expected {expected[name]}")
    ok, message = verdict(comm, problems)
    assert ok, message
    assert MPI.COMM_WORLD.Get_size() >= 8
