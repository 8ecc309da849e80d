"""Schedules read from PyTorch-format files train exactly like one process.

Hand-written files (an overlapped pair, REDUCE_GRAD starting the data-parallel
all-reduce early, sharding markers that do nothing, messages in PyTorch's early
places) and mpipipe's own exports, run under `mpipipe train --schedule-file`'s
road (TrainConfig.schedule_file) and held to `reference.train_sequential`.
"""

import pytest
from mpi4py import MPI

from mpipipe.config import TrainConfig
from mpipipe.schedules import make_schedule, write_schedule_file
from mpipipe.train import run_training

from .collective import against_one_process, group_of, verdict

# V placement, a pair, markers; messages as PyTorch places them (receives early).
V_COMMS_MARKED = """\
0UNSHARD,3UNSHARD,0F0,0SEND_F0,0F1,0SEND_F1,3RECV_F0,3F0,3I0,3SEND_B0,3W0,3RECV_F1,0RECV_B0,(3F1;0B0)OVERLAP_F_B,3B1,3SEND_B1,3REDUCE_GRAD,0RECV_B1,0B1,0REDUCE_GRAD,0RESHARD,3RESHARD
1RECV_F0,1F0,2F0,2SEND_F0,1RECV_F1,2RECV_B0,2RECV_B1,1F1,2F1,2SEND_F1,2B0,1B0,1SEND_B0,2B1,2REDUCE_GRAD,1B1,1SEND_B1,1REDUCE_GRAD
"""


def _own(tmp_path, name):
    """A path of this world rank's own (each rank writes its own copy of a file)."""
    return str(tmp_path / f"{name}-{MPI.COMM_WORLD.Get_rank()}.csv")


def _check(run, comm):
    return against_one_process(run)[0] if comm.Get_rank() == 0 else []


SMALL = dict(steps=3, layers=6, hidden=10, data="teacher", input_dim=5, output_dim=3,
             samples=120, optimizer="sgd", timeout=60)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("dp", [1, 2])
def test_a_hand_written_file_with_a_pair_and_markers(tmp_path, dp):
    comm = group_of(2 * dp)
    path = _own(tmp_path, "v")
    with open(path, "w") as out:
        out.write(V_COMMS_MARKED)
    run = run_training(TrainConfig(dp=dp, schedule_file=path, global_batch=8 * dp, **SMALL), comm)
    problems = _check(run, comm)
    if comm.Get_rank() == 0 and run.summary.schedule != path.rsplit("/", 1)[1]:
        problems.append(f"the summary names {run.summary.schedule}, not the file")
    ok, message = verdict(comm, problems)
    assert ok, message


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("name,comms", [("interleaved", True), ("dualpipev", False)])
def test_an_exported_schedule_read_back(tmp_path, name, comms):
    comm = group_of(2)
    path = _own(tmp_path, name)
    write_schedule_file(make_schedule(name, 2, 4), path, comms=comms)
    run = run_training(TrainConfig(schedule_file=path, global_batch=16, recompute=True, **SMALL),
                       comm)
    ok, message = verdict(comm, _check(run, comm))
    assert ok, message
