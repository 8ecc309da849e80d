"""mpipipe: pipeline-parallel training on MPI, small enough to read and honest enough to measure.

Importing mpipipe before NumPy limits each process to one BLAS thread, unless
OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS are already set: the
MPI ranks, not threads inside them, are what share the cores, and two ranks
each running two BLAS threads on two cores slow each other down badly.
"""

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

__version__ = "0.1.0"
