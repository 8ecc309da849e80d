"""Pipelined training is the single-process training, re-ordered.

For every schedule and (pp, dp), three steps on a group of pp*dp ranks must give
the losses and final weights of `reference.train_sequential` (one process, the
whole global batch at once) to round-off in float64, and every data-parallel
replica must end with the same weights.

Run under `mpiexec -n 4 python -m pytest --with-mpi tests/mpi` (or -n 2: the
4-rank cases skip). The world is split into groups of pp*dp ranks that each run
the case; all ranks agree on the verdict before asserting.
"""

import pytest

from mpipipe.config import TrainConfig
from mpipipe.check import relative_error, train_sequential
from mpipipe.plan.simulate import peak_stash
from mpipipe.train import run_training

from .collective import against_one_process, group_of, verdict

CASES = [(1, 1), (2, 1), (4, 1), (2, 2)]
# Each schedule also varies something else, to cover the options. SGD is the
# stricter judge: Adam's update hardly changes if every gradient is scaled by
# the same wrong factor, so a mis-normalised loss could hide behind it.
SETTINGS = {
    "naive": dict(optimizer="sgd", data="teacher", layernorm=True),
    "gpipe": dict(optimizer="adam", data="spiral", partition="params"),
    "1f1b": dict(optimizer="sgd", data="teacher", activation="relu"),
    "interleaved": dict(optimizer="sgd", data="spiral"),
    "looped-bfs": dict(optimizer="adam", data="teacher", layernorm=True),
    "zb-h1": dict(optimizer="sgd", data="teacher", layernorm=True),
    "zb-h2": dict(optimizer="sgd", data="spiral", activation="relu"),
    "zbv": dict(optimizer="sgd", data="teacher", layernorm=True, partition="params"),
    "dualpipev": dict(optimizer="adam", data="spiral", activation="relu"),
    "v-half": dict(optimizer="sgd", data="spiral", layernorm=True),
    "v-min": dict(optimizer="adam", data="teacher", partition="params"),
}


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("recompute", [False, True], ids=["stash", "recompute"])
@pytest.mark.parametrize("schedule", list(SETTINGS))
@pytest.mark.parametrize("pp,dp", CASES)
def test_pipeline_trains_exactly_like_one_process(schedule, pp, dp, recompute):
    comm = group_of(pp * dp)
    microbatches = {"naive": 1, "dualpipev": max(4, 2 * pp)}.get(schedule, 4)
    config = TrainConfig(pp=pp, dp=dp, schedule=schedule, microbatches=microbatches,
                         global_batch=24 if schedule == "naive" else 32, steps=3, layers=9,
                         hidden=12, input_dim=6, output_dim=3, samples=200, timeout=60,
                         recompute=recompute, **SETTINGS[schedule])
    run = run_training(config, comm)
    problems = []
    if comm.Get_rank() == 0:
        problems, losses = against_one_process(run)
        planned = peak_stash(run.setup.schedule)
        if run.summary.peak_stash != planned:
            problems.append(f"measured peak stash {run.summary.peak_stash}, planned {planned}")
        if losses[-1] >= losses[0]:
            problems.append(f"the loss did not go down: {losses}")
    ok, message = verdict(comm, problems)
    assert ok, message


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("schedule", ["1f1b", "zb-h1"])
def test_the_host_staged_transport_changes_nothing(schedule):
    """Every message and the all-reduce through staging buffers: the same numbers."""
    comm = group_of(4)
    settings = dict(pp=2, dp=2, schedule=schedule, microbatches=4, global_batch=32, steps=3,
                    layers=4, hidden=12, data="teacher", input_dim=6, output_dim=3, samples=200,
                    optimizer="sgd", timeout=60)
    direct = run_training(TrainConfig(**settings), comm)
    staged = run_training(TrainConfig(transport="staged", **settings), comm)
    problems = []
    if comm.Get_rank() == 0:
        if staged.summary.losses != direct.summary.losses:
            problems.append(f"losses {staged.summary.losses} != {direct.summary.losses}")
        if not all((a == b).all() for a, b in zip(staged.weights, direct.weights)):
            problems.append("weights differ between staged and direct transport")
        if not staged.summary.transport[0].startswith("staged"):
            problems.append(f"transport was {staged.summary.transport}")
    ok, message = verdict(comm, problems)
    assert ok, message


@pytest.mark.mpi(min_size=2)
def test_check_catches_a_pipeline_that_is_wrong():
    """--check must be able to fail: corrupt one stage's gradient scaling and see it caught."""
    comm = group_of(2)
    config = TrainConfig(pp=2, schedule="1f1b", microbatches=2, global_batch=8, steps=2,
                         layers=2, hidden=4, data="teacher", input_dim=3, output_dim=2,
                         samples=50, timeout=60, optimizer="sgd")
    from mpipipe import engine

    original = engine.Engine._allreduce_gradients

    def corrupt(self):
        original(self)
        if self.pp_index == 1:
            self.chunks[0].layers.flat_grads *= 1.001

    engine.Engine._allreduce_gradients = corrupt
    try:
        run = run_training(config, comm, check=True)
    finally:
        engine.Engine._allreduce_gradients = original
    ok, message = verdict(comm, [] if not run.summary.check.passed else
                          [f"--check passed a corrupted run: {run.summary.check}"])
    assert ok, message


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "zb-h1"])
@pytest.mark.parametrize("pp", [2, 4])
def test_gpt_trains_exactly_like_one_process(schedule, pp):
    comm = group_of(pp)
    config = TrainConfig(pp=pp, model="gpt", schedule=schedule, microbatches=4, global_batch=8,
                         steps=2, layers=2, hidden=8, heads=2, samples=64, optimizer="sgd",
                         lr=0.1, timeout=60, dtype="float64")
    run = run_training(config, comm)
    problems = []
    if comm.Get_rank() == 0:
        losses, weights = train_sequential(run.setup)
        if relative_error(run.summary.losses, losses) > 1e-9:
            problems.append(f"losses {run.summary.losses} != {losses}")
        err = relative_error(run.weights[0], weights)
        if err > 1e-9:
            problems.append(f"weights differ, relative error {err:.2e}")
    ok, message = verdict(comm, problems)
    assert ok, message
