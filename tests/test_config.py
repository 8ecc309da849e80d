"""Input that cannot work is refused before any MPI call, with a message that says why."""

import pytest

from mpipipe.config import TrainConfig, prepare
from mpipipe.errors import ConfigError


@pytest.mark.parametrize("world,settings,message", [
    (4, dict(pp=3), "4 MPI rank\\(s\\) cannot form a pp=3 x dp=1 grid"),
    (3, dict(dp=2), "3 ranks cannot be split into dp=2"),
    (4, dict(pp=2, dp=2, global_batch=100), "global batch 100 does not split into 2 replica"),
    (2, dict(microbatches=0), "--microbatches must be at least 1"),
    (4, dict(layers=3), "4 pipeline stages but the model has only 3 layers"),
    (2, dict(schedule="naive", microbatches=4), "--microbatches 1"),
    (2, dict(schedule="zigzag"), "unknown schedule 'zigzag'"),
    (2, dict(lr=-1.0), "--lr must be positive"),
    (2, dict(steps=0), "--steps must be at least 1"),
    (2, dict(partition=[7, 2]), "covers 9 blocks, the model has 8"),
    (2, dict(global_batch=4096), "larger than the data set"),
    (2, dict(dtype="float16"), "unknown dtype"),
    (1, dict(dp=0), "--dp must be at least 1"),
    (6, dict(model="gpt", tp=2, pp=2, dp=2), "6 MPI rank\\(s\\) cannot form a tp=2 x pp=2 x dp=2 "
                                            "grid, which needs 8: launch with mpiexec -n 8"),
    (6, dict(model="gpt", tp=4), "6 ranks cannot be split into tp=4 x dp=1"),
    (2, dict(tp=2), "the mlp model is not split: use --model gpt"),
    (8, dict(model="gpt", tp=8), "--tp 8 is more than the 4 attention heads"),
    (4, dict(model="gpt", tp=4, hidden=48, heads=6), "--heads 6 do not split into --tp 4"),
    (4, dict(model="gpt", tp=4, hidden=18, heads=6), "--hidden 18 does not split into --tp 4"),
    (2, dict(model="gpt", tp=0), "--tp must be at least 1"),
])
def test_bad_settings_are_refused(world, settings, message):
    with pytest.raises(ConfigError, match=message):
        prepare(TrainConfig(**settings), world)


def test_defaults_are_filled_in():
    plan = prepare(TrainConfig(), 4)
    c = plan.config
    assert (c.pp, c.dp, c.microbatches, c.lr) == (4, 1, 8, 0.003)
    assert plan.partition == [2, 2, 2, 2]
    assert plan.microbatch_size == 256 // 8
    assert plan.shapes == [(2,), (64,), (64,), (64,), (3,)]   # spiral: 2 inputs, 3 classes
    assert prepare(TrainConfig(schedule="naive"), 2).config.microbatches == 1


def test_tensor_parallelism_fills_the_grid():
    c = prepare(TrainConfig(model="gpt", tp=2, dp=2), 8).config
    assert (c.tp, c.pp, c.dp) == (2, 2, 2)
    assert "tp=2 x pp=2 x dp=2" in prepare(TrainConfig(model="gpt", tp=2, dp=2), 8).banner()
