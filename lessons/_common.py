"""What every lesson shares: print once, run a training, never hang.

The lessons are short programs run with `mpiexec -n N python lessons/NN_name.py`.
Every rank runs the same file; only rank 0 prints. An exception on any rank
ends the whole job (MPI_Abort) instead of leaving the other ranks waiting for
a message that will never come.
"""

import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mpipipe  # noqa: E402,F401  (one BLAS thread per rank, before NumPy loads)
from mpi4py import MPI  # noqa: E402

from mpipipe.config import TrainConfig  # noqa: E402
from mpipipe.launcher import abort  # noqa: E402
from mpipipe.train import run_training  # noqa: E402

WORLD = MPI.COMM_WORLD

# A model big enough that compute, not Python, fills the timeline, small enough
# for a laptop: 8 x [Linear(512, 512) + GELU], float32, global batch 256.
MODEL = dict(data="teacher", input_dim=512, output_dim=512, hidden=512, layers=8,
             last_activation=True, dtype="float32", optimizer="sgd", lr=0.001,
             global_batch=256, samples=1024, steps=6)


def say(*lines):
    """Print on rank 0 only, whole lines at a time."""
    if WORLD.Get_rank() == 0:
        print("\n".join(str(line) for line in lines), flush=True)


def train(check=False, **settings):
    """One training run on all ranks with the lesson model; returns its measure.Summary."""
    return run_training(TrainConfig(**{**MODEL, **settings}), WORLD, check=check).summary


def main_guard(main):
    """Run `main()`; on any exception print it with the rank and end every rank."""
    try:
        main()
    except BaseException:
        rank = WORLD.Get_rank()
        abort(WORLD, 1, "".join(f"[rank {rank}] {line}\n"
                                for line in traceback.format_exc().splitlines()))


def need_ranks(minimum):
    if WORLD.Get_size() < minimum:
        say(f"this lesson needs at least {minimum} ranks: mpiexec -n {minimum} python {sys.argv[0]}")
        sys.exit(2)
