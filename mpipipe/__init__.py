"""mpipipe: pipeline-parallel training on MPI, small enough to read and honest enough to measure.

The package, from the bottom up (a module imports only from its own layer or
the layers below it; tests/test_layout.py checks it):

    errors       the exceptions and exit codes every layer may raise
    schedules/   a schedule as data: actions, one generator per schedule, lower, validate
    plan/        what runs without MPI or a model: simulate, timeline, partition
    comm/        the ranks and their messages: backend (NumPy/CuPy), transport, p2p, topology, launcher
    nn/          the model: layers with explicit backward passes, the GPT, tensor-parallel layers, optimizers, data
    measure/     measured events in, a typed summary out; traces and pictures
    course/      the exercises' grader
    engine, train, config, check, checkpoint, faults   one training run on one rank
    cli/         the `mpipipe` command

Importing mpipipe before NumPy limits each process to one BLAS thread, unless
OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS are already set: the
MPI ranks, not threads inside them, are what share the cores, and two ranks
each running two BLAS threads on two cores slow each other down badly.
"""

import importlib
import importlib.abc
import importlib.util
import os
import sys
import warnings

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

__version__ = "0.2.0"

# Modules that moved into sub-packages in 0.2. `import mpipipe.layers` still
# works (it is the module `mpipipe.nn.layers`, with a warning naming it), so
# code and exercises written for 0.1 keep running.
MOVED = {
    "reference": "check", "train_cli": "cli.train", "grade": "cli.grade",
    "sample": "cli.sample", "progress": "cli.progress",
    "simulate": "plan.simulate", "timeline": "plan.timeline", "partition": "plan.partition",
    "backend": "comm.backend", "transport": "comm.transport", "p2p": "comm.p2p",
    "topology": "comm.topology", "launcher": "comm.launcher",
    "layers": "nn.layers", "losses": "nn.losses", "transformer": "nn.transformer",
    "tensor_parallel": "nn.tensor_parallel", "model": "nn.model", "optim": "nn.optim",
    "data": "nn.data", "autopartition": "nn.autopartition",
    "trace": "measure.trace", "plot": "measure.plot", "report": "measure.report",
    "grading": "course",
}


class _MovedModule(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `mpipipe.<old name>` and hands back the module at its new place."""

    def find_spec(self, fullname, path=None, target=None):
        parts = fullname.split(".")
        if parts[0] != "mpipipe" or len(parts) < 2 or parts[1] not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        old = spec.name.split(".", 1)[1]
        head, _, rest = old.partition(".")
        new = "mpipipe." + MOVED[head] + ("." + rest if rest else "")
        warnings.warn(f"mpipipe.{old} moved to {new}: import that instead",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module):
        pass


sys.meta_path.append(_MovedModule())
