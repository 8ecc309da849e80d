"""Exercise 6: pass an activation from one stage to the next, with MPI.

Between pipeline stages, every micro-batch's activation goes from one rank
to the next as a NumPy array. mpi4py has two ways to send: lowercase
send/recv pickle any Python object; uppercase Send/Recv hand MPI the
array's memory directly, with no copy into a Python object. Pipelines use
the uppercase ones. The receiver must already have a buffer of the right
shape and dtype: pipeline stages know the shape of what comes in.

The grader runs your function under `mpiexec -n 2`, in both directions.

Grade it:  .venv/bin/mpipipe grade lessons/exercises ex6
"""

import numpy as np  # noqa: F401  (you will need it)


def pass_activation(comm, array, source, dest, tag):
    """Send `array` from rank `source` to rank `dest` with comm.Send and comm.Recv.

    Every rank calls this with the same source, dest and tag. On rank
    `source`, `array` holds the data to send. On rank `dest`, `array` only
    shows the shape and dtype of what will arrive (its values mean nothing).

    Return, on rank dest: a new array holding what source sent;
            on every other rank: None.

    Hint: comm.Get_rank() says which rank you are. The sender calls
    comm.Send(array, dest=..., tag=...); the receiver makes a buffer with
    np.empty_like(array) and calls comm.Recv(buffer, source=..., tag=...),
    which fills the buffer. Give both the tag: it tells messages apart.
    """
    raise NotImplementedError("write me: pass_activation")
