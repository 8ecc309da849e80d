"""Schedule files written and read by PyTorch itself (skipped without PyTorch).

PyTorch's own schedule classes build their action lists on every rank without a
process group, from stage objects that only say which stage they are; here
small stand-ins play those stages. Their files go through `mpipipe simulate
--schedule-file` and `mpipipe train --schedule-file --check`, and mpipipe's
exports go through PyTorch's `_load_csv`, its validation and its lowering.
CI installs the CPU build of torch 2.13.0 and runs this file after the main tests.
"""

import csv
import json
import subprocess
import sys

import pytest

from mpipipe.cli import main
from mpipipe.comm.launcher import mpiexec_command
from mpipipe.schedules import GENERATORS, make_schedule, read_schedule_file, write_schedule_file

torch = pytest.importorskip("torch")
S = pytest.importorskip("torch.distributed.pipelining.schedules")

# PyTorch's schedules with several stages per rank: (class, placement)
MULTI = [("ScheduleInterleaved1F1B", "looped"), ("ScheduleLoopedBFS", "looped"),
         ("ScheduleInterleavedZeroBubble", "looped"), ("ScheduleZBVZeroBubble", "V"),
         ("ScheduleDualPipeV", "V")]


class StandInStage:
    """What a schedule's constructor reads of a pipeline stage: which stage of how many."""

    def __init__(self, stage, num_stages, ranks, rank=0):
        self.stage_index, self.num_stages = stage, num_stages
        self.group_size, self.group_rank = ranks, rank
        self.is_first, self.is_last = stage == 0, stage == num_stages - 1
        self.submod = torch.nn.Linear(1, 1)


def pytorch_schedule(name, P, m, stages_of_rank_0):
    stages = [StandInStage(s, 2 * P if len(stages_of_rank_0) == 2 else P, P)
              for s in stages_of_rank_0]
    cls = getattr(S, name)
    return cls(stages if issubclass(cls, S.PipelineScheduleMulti) else stages[0], m)


def dump_pytorch(tmp_path, name, placement, P, m, flavour):
    """The file PyTorch's _dump_csv writes for schedule class `name`."""
    stages = [0, 2 * P - 1] if placement == "V" else [0, P]
    path = str(tmp_path / f"{name}-{P}-{m}-{flavour}.csv")
    pytorch_schedule(name, P, m, stages)._dump_csv(path, format=flavour)
    return path


@pytest.mark.parametrize("flavour", ["compute_only", "compute_comms"])
@pytest.mark.parametrize("P,m", [(2, 4), (4, 8)])
@pytest.mark.parametrize("name,placement", MULTI)
def test_pytorchs_files_simulate(tmp_path, capsys, name, placement, P, m, flavour):
    path = dump_pytorch(tmp_path, name, placement, P, m, flavour)
    assert main(["simulate", "--schedule-file", path, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["stages"], summary["microbatches"], summary["chunks"]) == (P, m, 2)
    assert summary["schedule_file"]["placement"] == placement
    assert summary["schedule_file"]["flavour"] == flavour.replace("_", " + " if "comms" in
                                                                  flavour else " ")
    assert 0 < summary["bubble_fraction"] < 0.5


def test_pytorchs_single_stage_order_with_reduce_grad(tmp_path):
    """One stage per rank: ScheduleGPipe keeps its order (idle slots and REDUCE_GRAD
    included) in pipeline_order, written here as _dump_csv writes rows."""
    P, m = 4, 8
    order = pytorch_schedule("ScheduleGPipe", P, m, [0]).pipeline_order
    path = tmp_path / "gpipe.csv"
    with open(path, "w", newline="") as out:
        csv.writer(out).writerows(order[rank] for rank in range(P))
    found = read_schedule_file(str(path))
    assert found.markers["REDUCE_GRAD"] == P and found.placement == "one stage per rank"
    assert [[a for a in p if a.microbatch is not None] for p in found.schedule.programs] == \
        make_schedule("gpipe", P, m).programs


@pytest.mark.parametrize("P,m", [(1, 2), (2, 4), (2, 7), (3, 6), (4, 8), (4, 11)])
def test_mpipipes_dualpipev_is_pytorchs_action_for_action(tmp_path, P, m):
    theirs = dump_pytorch(tmp_path, "ScheduleDualPipeV", "V", P, m, "compute_only")
    ours = str(tmp_path / "ours.csv")
    write_schedule_file(make_schedule("dualpipev", P, m), ours)
    assert read_schedule_file(theirs).schedule.programs == \
        read_schedule_file(ours).schedule.programs


@pytest.mark.parametrize("comms", [False, True], ids=["compute_only", "compute_comms"])
@pytest.mark.parametrize("name", list(GENERATORS))
def test_pytorch_reads_mpipipes_exports(tmp_path, name, comms):
    """PyTorch validates the file, infers the placement, lowers it (compute only) and, where
    its simulation reads the file (messages, no pairs), finds no deadlock; its lowering,
    read back, is the same schedule."""
    P, m = 2, (1 if name == "naive" else 4)
    schedule = make_schedule(name, P, m)
    path = str(tmp_path / "mine.csv")
    write_schedule_file(schedule, path, comms=comms)
    stages = [StandInStage(s, schedule.num_stages, P) for s in schedule.stage_map[0]]
    runtime = S._PipelineScheduleRuntime(stages, m)
    runtime._load_csv(path, format="compute_comms" if comms else "compute_only")
    assert runtime.stage_index_to_group_rank == {s: r for r, stages in
                                                 enumerate(schedule.stage_map) for s in stages}
    if comms and name != "dualpipev":
        runtime._simulate()
    lowered_by_pytorch = str(tmp_path / "theirs.csv")
    runtime._dump_csv(lowered_by_pytorch, format="compute_comms")
    back = read_schedule_file(lowered_by_pytorch).schedule
    assert [[a for a in p if a.microbatch is not None] for p in back.programs] == \
        schedule.programs


def train_file(ranks, path, *args):
    command = [*mpiexec_command(ranks), sys.executable, "-m", "mpipipe", "train",
               "--schedule-file", path, "--steps", "2", "--global-batch", "32", "--layers", "6",
               "--check", "--quiet", "--json", "--timeout", "60", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name,placement,flavour,ranks,args", [
    ("ScheduleDualPipeV", "V", "compute_comms", 2, []),
    ("ScheduleInterleavedZeroBubble", "looped", "compute_only", 2, ["--recompute"]),
    ("ScheduleZBVZeroBubble", "V", "compute_comms", 4, ["--dp", "2"]),
])
def test_pytorchs_files_train_exactly(tmp_path, name, placement, flavour, ranks, args):
    path = dump_pytorch(tmp_path, name, placement, 2, 4, flavour)
    done = train_file(ranks, path, *args)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["check"]["passed"] and summary["schedule"] == path.rsplit("/", 1)[1]
    assert summary["schedule_file"] == path
