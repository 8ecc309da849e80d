"""Run `mpipipe train` with every host-device copy counted, step by step.

    mpiexec -n 4 python tests/gpu/copy_audit.py OUT.json TRAIN-OPTIONS...

Counts, on each rank and for each training step, the calls that move data
between host and device: `ndarray.get`, `ndarray.set`, `cupy.asnumpy`,
`float()` and `.item()` of a device array (device to host), and `cupy.asarray`
or `cupy.array` of a host array (host to device). A call made inside another
counted call (asnumpy calls get) counts once. Rank 0 writes the counts of every
rank to OUT.json: [{"world_rank", "pp_index", "steps": [{"host_to_device",
"device_to_host"}, ...]}, ...]. tests/gpu/test_gpu.py compares them with the
list in docs/gpus.md.
"""

import json
import sys

import cupy
import numpy

import mpipipe.measure.summary
import mpipipe.train
from mpipipe.cli import main

steps = []          # one {"host_to_device": n, "device_to_host": n} per step
depth = [0]         # inside a counted call: do not count again
counting = [False]


def counted(function, direction, applies=lambda *args: True):
    def wrapper(*args, **kwargs):
        if counting[0] and depth[0] == 0 and applies(*args):
            steps[-1][direction] += 1
        depth[0] += 1
        try:
            return function(*args, **kwargs)
        finally:
            depth[0] -= 1
    return wrapper


def is_host(value, *rest):
    return isinstance(value, (numpy.ndarray, numpy.generic, list, tuple, int, float))


cupy.ndarray.get = counted(cupy.ndarray.get, "device_to_host")
cupy.ndarray.set = counted(cupy.ndarray.set, "host_to_device")
cupy.ndarray.__float__ = counted(cupy.ndarray.__float__, "device_to_host")
cupy.ndarray.item = counted(cupy.ndarray.item, "device_to_host")
cupy.asnumpy = counted(cupy.asnumpy, "device_to_host")
cupy.asarray = counted(cupy.asarray, "host_to_device", is_host)
cupy.array = counted(cupy.array, "host_to_device", is_host)

original_microbatches, original_report = mpipipe.train._microbatches, mpipipe.measure.summary.StepLog.report


def microbatches(*args, **kwargs):
    """Each step starts by cutting its micro-batches: a new count."""
    counting[0] = True
    steps.append({"host_to_device": 0, "device_to_host": 0})
    return original_microbatches(*args, **kwargs)


def report(self, topology, *args, **kwargs):
    """Training is over: stop counting, and gather every rank's counts."""
    counting[0] = False
    from mpi4py import MPI

    gathered = MPI.COMM_WORLD.gather({"world_rank": topology.world_rank,
                                      "pp_index": topology.pp_index, "steps": steps}, root=0)
    if gathered is not None:
        with open(sys.argv[1], "w") as out:
            json.dump(gathered, out)
    return original_report(self, topology, *args, **kwargs)


mpipipe.train._microbatches = microbatches
mpipipe.measure.summary.StepLog.report = report

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[2:]]))
