"""The engine on a single rank (pp = dp = 1, no peers): no mpiexec needed."""

from mpi4py import MPI

from mpipipe.config import TrainConfig
from mpipipe.check import relative_error, train_sequential
from mpipipe.train import run_training


def test_micro_batched_one_rank_run_equals_the_full_batch_run():
    config = TrainConfig(schedule="1f1b", microbatches=8, global_batch=64, steps=4, layers=3,
                         hidden=10, samples=300, optimizer="sgd")
    run = run_training(config, MPI.COMM_SELF)
    losses, weights = train_sequential(run.setup)
    assert relative_error(run.summary.losses, losses) < 1e-12
    assert relative_error(run.weights[0], weights) < 1e-12


def test_spiral_is_learned():
    """The default task, shortened: accuracy far above the 1/3 of guessing.

    Threshold: with 3 balanced classes, chance is 0.33; a linear model gets
    about 0.5 on these spirals; 0.9 needs a model that really fits them.
    """
    run = run_training(TrainConfig(steps=60, microbatches=4), MPI.COMM_SELF)
    assert run.summary.accuracy > 0.9, run.summary.accuracy
    assert run.summary.losses[-1] < 0.3 * run.summary.losses[0]


def test_result_has_the_promised_fields():
    run = run_training(TrainConfig(steps=2, layers=2, hidden=4, microbatches=2, global_batch=8),
                       MPI.COMM_SELF)
    for key in ("schedule", "pp", "dp", "microbatches", "losses", "step_time_s",
                "bubble_fraction", "peak_stash"):
        assert hasattr(run.summary, key)
    assert run.summary.peak_stash == [1]       # one stage: 1F1B keeps min(P - 0, m) = 1


def test_recompute_keeps_only_inputs_and_traces_the_extra_forward():
    settings = dict(schedule="gpipe", microbatches=4, global_batch=32, steps=2, layers=4,
                    hidden=16, samples=100, optimizer="sgd")
    stash = run_training(TrainConfig(**settings), MPI.COMM_SELF)
    again = run_training(TrainConfig(recompute=True, **settings), MPI.COMM_SELF)
    assert again.summary.losses == stash.summary.losses
    assert relative_error(again.weights[0], stash.weights[0]) == 0.0
    assert again.summary.peak_stash == stash.summary.peak_stash == [4]
    # 4 micro-batches of 8 x 2 inputs (float64) instead of every layer's activations
    assert again.summary.peak_stash_bytes == [4 * 8 * 2 * 8]
    assert stash.summary.peak_stash_bytes[0] > 10 * again.summary.peak_stash_bytes[0]
    kinds = [e.action.kind for e in again.events]
    assert kinds.count("R") == 4 and "R" not in [e.action.kind for e in stash.events]
    assert kinds.index("R") == kinds.index("BW") - 1      # right before its backward
