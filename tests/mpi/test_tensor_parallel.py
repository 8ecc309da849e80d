"""Tensor parallelism on MPI: the single-process training, re-ordered and split.

On 2 ranks: tp = 2 alone; on 4 ranks: tp = 2 x pp = 2 under every kind of
schedule (flushed, interleaved, zero-bubble, V-shaped). Each case must give
the losses and the final weights (the shards joined back) of
`reference.train_sequential` to round-off in float64, and its counted
all-reduces and pipeline messages must match their formulas. The 8-rank
tp x pp x dp run is tests/mpi/test_three_d.py.
"""

import os

import pytest

from mpipipe.nn import tensor_parallel
from mpipipe.config import TrainConfig
from mpipipe.check import relative_error, train_sequential
from mpipipe.train import run_training

from .collective import against_one_process, group_of, verdict

GPT = dict(model="gpt", global_batch=8, steps=2, layers=2, hidden=8, heads=2, samples=64,
           optimizer="sgd", lr=0.1, timeout=60, dtype="float64")


def problems_against_one_process(run, recompute=False):
    """What differs from one process, and from the formulas for the counted talk."""
    c, (problems, _) = run.setup.config, against_one_process(run)
    s, schedule = run.summary, run.setup.schedule
    activation = run.setup.microbatch_size * run.setup.spec.seq_len * c.hidden * 8
    for rank in range(c.tp * c.pp):            # replica 0's ranks, in world order
        pp_index = rank // c.tp
        stages = schedule.stage_map[pp_index]
        blocks = sum(1 for st in stages for b in run.setup.blocks[st]
                     if 0 < b < run.setup.spec.num_blocks - 1)     # transformer blocks held
        expected = c.microbatches * blocks * tensor_parallel.allreduces_per_block(recompute)
        if s.tensor_allreduces_per_step[rank] != expected:
            problems.append(f"rank {rank}: {s.tensor_allreduces_per_step[rank]} tensor "
                            f"all-reduces per step, the formula says {expected}")
        if s.tensor_bytes_per_step[rank] != expected * activation:
            problems.append(f"rank {rank}: {s.tensor_bytes_per_step[rank]} tensor bytes, "
                            f"expected {expected * activation}")
        # a send per micro-batch across each boundary to a stage on another rank
        boundaries = sum(1 for st in stages for neighbour in (st - 1, st + 1)
                         if 0 <= neighbour < schedule.num_stages
                         and schedule.place(neighbour)[0] != pp_index)
        if s.messages_per_step[rank] != c.microbatches * boundaries:
            problems.append(f"rank {rank}: {s.messages_per_step[rank]} pipeline sends per "
                            f"step, expected {c.microbatches * boundaries}")
        if s.message_bytes_per_step[rank] != c.microbatches * boundaries * activation:
            problems.append(f"rank {rank}: {s.message_bytes_per_step[rank]} pipeline bytes")
    return problems


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("schedule,recompute", [("1f1b", False), ("zb-h1", True)])
def test_tensor_parallel_alone_trains_exactly_like_one_process(schedule, recompute):
    comm = group_of(2)
    run = run_training(TrainConfig(tp=2, pp=1, schedule=schedule, microbatches=2,
                                   recompute=recompute, **GPT), comm)
    problems = problems_against_one_process(run, recompute) if comm.Get_rank() == 0 else []
    ok, message = verdict(comm, problems)
    assert ok, message


@pytest.mark.mpi(min_size=4)
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "interleaved", "zb-h1", "zbv",
                                      "dualpipev"])
def test_tensor_x_pipeline_trains_exactly_like_one_process(schedule):
    comm = group_of(4)
    chunks = {"interleaved": 2}.get(schedule)
    settings = dict(GPT, layers=4 if schedule in ("interleaved", "zbv", "dualpipev") else 2)
    run = run_training(TrainConfig(tp=2, pp=2, schedule=schedule, chunks=chunks,
                                   microbatches=4, **settings), comm)
    problems = problems_against_one_process(run) if comm.Get_rank() == 0 else []
    ok, message = verdict(comm, problems)
    assert ok, message


@pytest.mark.mpi(min_size=2)
def test_check_catches_a_row_parallel_bias_added_before_the_sum(monkeypatch):
    """--check must be able to fail: the bias added on every rank before g counts T times."""
    comm = group_of(2)

    def bias_before_g(self, x):
        partial = x @ self.params["W"] + self.params["b"]
        return tensor_parallel.g_forward(partial, self.group), x

    monkeypatch.setattr(tensor_parallel.RowParallelLinear, "forward", bias_before_g)
    run = run_training(TrainConfig(tp=2, pp=1, microbatches=2, **GPT), comm, check=True)
    ok, message = verdict(comm, [] if not run.summary.check.passed else
                          [f"--check passed a wrong tensor-parallel layer: {run.summary.check}"])
    assert ok, message


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("first,then", [(2, 1), (1, 2)], ids=["tp2-to-tp1", "tp1-to-tp2"])
def test_a_checkpoint_reshards_into_another_tp(tmp_path_factory, first, then):
    """Written with one tp, resumed with another: the end equals one process's end."""
    comm = group_of(2)
    folder = comm.bcast(str(tmp_path_factory.mktemp("ck")) if comm.Get_rank() == 0 else None)
    settings = dict(GPT, optimizer="adam", lr=0.01, microbatches=2, checkpoint_dir=folder)
    run_training(TrainConfig(tp=first, pp=2 // first, **dict(settings, steps=2)), comm)
    resumed = run_training(TrainConfig(tp=then, pp=2 // then, resume=True,
                                       **dict(settings, steps=4)), comm)
    problems = []
    if comm.Get_rank() == 0:
        files = sorted(os.listdir(os.path.join(folder, "step-00000004")))
        expected = (["stage000.tp0.npz", "stage000.tp1.npz"] if then == 2 else
                    ["stage000.npz", "stage001.npz"])
        if files != ["manifest.json", *expected]:
            problems.append(f"the checkpoint holds {files}")
        losses, weights = train_sequential(resumed.setup)
        if relative_error(resumed.summary.losses, losses[2:]) > 1e-9:
            problems.append(f"losses {resumed.summary.losses} != {losses[2:]}")
        error = relative_error(resumed.weights[0], weights)
        if error > 1e-9:
            problems.append(f"weights differ after resharding, relative error {error:.2e}")
    ok, message = verdict(comm, problems)
    assert ok, message


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("corrupt", [False, True], ids=["right", "last-step-wrong"])
def test_a_long_check_follows_the_first_steps_then_replays_the_last(monkeypatch, corrupt):
    """Past TRAJECTORY_STEPS --check replays the last step from the run's own state: it
    passes a right run and fails one whose last step alone is wrong (the first steps,
    followed as before, are right)."""
    from mpipipe import engine
    from mpipipe.config import CHECK_TRAJECTORY_STEPS

    comm = group_of(2)
    steps = CHECK_TRAJECTORY_STEPS["float64"] + 3
    original, done = engine.Engine._allreduce_gradients, []

    def last_step_wrong(self):
        original(self)
        done.append(1)
        if corrupt and len(done) == steps:
            self.chunks[0].layers.flat_grads *= 1.001

    monkeypatch.setattr(engine.Engine, "_allreduce_gradients", last_step_wrong)
    run = run_training(TrainConfig(tp=2, pp=1, microbatches=2, **dict(
        GPT, steps=steps, optimizer="adam", lr=0.01)), comm, check=True)
    check = run.summary.check
    problems = []
    if check.trajectory_steps != CHECK_TRAJECTORY_STEPS["float64"]:
        problems.append(f"the check followed {check.trajectory_steps} steps")
    if check.passed == corrupt:
        problems.append(f"--check {'passed' if check.passed else 'failed'}: {check}")
    ok, message = verdict(comm, problems)
    assert ok, message
