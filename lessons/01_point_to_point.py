"""Lesson 1: an activation goes forward, a gradient comes back.

    mpiexec -n 2 python lessons/01_point_to_point.py

Rank 0 plays stage 0, rank 1 plays stage 1. Both know the shapes in advance, so
the receiver allocates its buffer once and MPI copies raw bytes into it
(uppercase Send/Recv: no pickling). Then we build a deadlock on purpose, and
watch it safely, with non-blocking synchronous sends we can give up on.
"""

import time

import numpy as np

from _common import WORLD, main_guard, need_ranks, say

BATCH, WIDTH = 32, 1024
ROUNDS = 20


def forward_and_back():
    rank = WORLD.Get_rank()
    activation = np.empty((BATCH, WIDTH), dtype=np.float32)   # allocated once, reused
    gradient = np.empty((BATCH, WIDTH), dtype=np.float32)
    times = []
    for _ in range(ROUNDS):
        if rank == 0:
            activation[...] = np.random.default_rng(0).standard_normal(activation.shape)
            start = time.perf_counter()
            WORLD.Send(activation, dest=1, tag=1)   # stage 0 -> stage 1: F
            WORLD.Recv(gradient, source=1, tag=2)   # stage 1 -> stage 0: B
            times.append(time.perf_counter() - start)
        elif rank == 1:
            WORLD.Recv(activation, source=0, tag=1)
            gradient[...] = 2 * activation          # d(x^2)/dx, our toy stage
            WORLD.Send(gradient, dest=0, tag=2)
    if rank == 0:
        correct = np.array_equal(gradient, 2 * activation)
        say(f"rank 0 sent a {BATCH}x{WIDTH} float32 activation ({activation.nbytes / 1024:.0f} KiB)"
            f" and got its gradient back, {ROUNDS} times:",
            f"  first round trip {times[0] * 1e3:.3f} ms (connection set-up), median "
            f"{sorted(times)[ROUNDS // 2] * 1e3:.3f} ms; gradient {'correct' if correct else 'WRONG'}")


def deadlock_safely():
    """Both ranks send first, with synchronous sends: each waits for the other's receive."""
    rank = WORLD.Get_rank()
    if rank > 1:
        return
    peer = 1 - rank
    mine = np.full(4, rank, dtype=np.float64)
    theirs = np.empty(4)
    request = WORLD.Issend(mine, dest=peer, tag=3)  # like Ssend, but we may look away
    time.sleep(0.5)
    stuck = not request.Test()
    WORLD.Recv(theirs, source=peer, tag=3)          # now post the receive: it resolves
    request.Wait()
    if rank == 0:
        say("", "deadlock, safely: both ranks called a synchronous send before any receive.",
            f"after 0.5 s the sends were {'still waiting: a deadlock' if stuck else 'done'}.",
            "with blocking Ssend both ranks would wait forever. mpipipe never lets this",
            "happen: sends are non-blocking, and validate() proves every receive is met.")


def main():
    need_ranks(2)
    forward_and_back()
    deadlock_safely()


if __name__ == "__main__":
    main_guard(main)
