"""The pieces of `mpipipe.grade`: shared helpers, the schedule checks, the MPI exercise."""
