"""What every lesson shares: print once, run a training, measure it, never hang.

The lessons are short programs, run from the repository root with
`.venv/bin/mpiexec -n N .venv/bin/python lessons/NN_name.py`. Every rank runs the
same file; only rank 0 prints. An exception on any rank ends the whole job
(MPI_Abort) instead of leaving the other ranks waiting for a message that will
never come.

`train(**settings)` runs one training of the lesson model and returns a
`Trained`: the run's summary on every rank and, on rank 0, the figures the
lessons print beside the textbook's: each measured step, and the same step
replayed with its own action times and free messages (see _figures.py).
"""

import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if "numpy" in sys.modules and "OMP_NUM_THREADS" not in os.environ:
    # NumPy read its BLAS thread count when it loaded: two ranks each running several BLAS
    # threads on the same cores slow each other down many times over (see mpipipe/__init__.py)
    raise ImportError("a lesson must import _common before NumPy (OMP_NUM_THREADS=1 is set there)")

import mpipipe  # noqa: E402,F401  (one BLAS thread per rank, before NumPy loads)
from mpi4py import MPI  # noqa: E402

from mpipipe.config import TrainConfig  # noqa: E402
from mpipipe.comm.launcher import abort  # noqa: E402
from mpipipe.train import run_training  # noqa: E402

from _figures import Trained  # noqa: E402

WORLD = MPI.COMM_WORLD
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")           # where the lessons draw their pictures

# A model big enough that compute, not Python, fills the timeline, small enough
# for a laptop: 8 x [Linear(512, 512) + GELU], float32, global batch 256.
MODEL = dict(data="teacher", input_dim=512, output_dim=512, hidden=512, layers=8,
             last_activation=True, dtype="float32", optimizer="sgd", lr=0.001,
             global_batch=256, samples=1024, steps=6)
BYTES_PER_NUMBER = 4      # float32
ARRAYS_KEPT_PER_LAYER = 3  # Linear keeps its input x; GELU its input and tanh(...): see layers.py


def say(*lines):
    """Print on rank 0 only, whole lines at a time."""
    if WORLD.Get_rank() == 0:
        print("\n".join(str(line) for line in lines), flush=True)


def train(check=False, **settings):
    """One training run on all ranks with the lesson model (settings override MODEL).

    `check` also trains in one process on rank 0 and compares (mpipipe train --check)."""
    run = run_training(TrainConfig(**{**MODEL, **settings}), WORLD, check=check,
                       keep_all_steps=True)
    return Trained.of(run)


def activation_bytes(layers, microbatch_size, width=512, bytes_per_number=BYTES_PER_NUMBER):
    """What one micro-batch leaves behind in `layers` Linear+GELU layers until its backward:
    ARRAYS_KEPT_PER_LAYER arrays of microbatch_size x width numbers per layer."""
    return layers * ARRAYS_KEPT_PER_LAYER * microbatch_size * width * bytes_per_number


def main_guard(main):
    """Run `main()`; on any exception print it with the rank and end every rank.
    SystemExit is an ending every rank agreed on (need_ranks, a failed check): it passes."""
    try:
        main()
    except SystemExit:
        raise
    except BaseException:
        rank = WORLD.Get_rank()
        abort(WORLD, 1, "".join(f"[rank {rank}] {line}\n"
                                for line in traceback.format_exc().splitlines()))


def command(ranks):
    """The command that runs this lesson with `ranks` ranks, as the pages write it."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]))
    return f".venv/bin/mpiexec -n {ranks} .venv/bin/python {script}"


def need_ranks(minimum, exactly=None):
    """Every rank calls this: the same decision everywhere, so every rank exits together."""
    size = WORLD.Get_size()
    if size < minimum or (exactly is not None and size != exactly):
        say(f"this lesson needs {'exactly' if exactly else 'at least'} {exactly or minimum} "
            f"ranks: {command(exactly or minimum)}")
        sys.exit(2)
