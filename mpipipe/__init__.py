"""mpipipe: pipeline-parallel training on MPI, small enough to read and honest enough to measure."""

__version__ = "0.1.0"
