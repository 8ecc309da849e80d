"""Lesson 1: an activation goes forward, a gradient comes back.

    .venv/bin/mpiexec -n 2 .venv/bin/python lessons/01_point_to_point.py

Rank 0 plays stage 0, rank 1 plays stage 1. Both know the shapes in advance, so
the receiver allocates its buffer once and MPI copies raw bytes into it
(uppercase Send/Recv: no pickling). Then we build a deadlock on purpose, and
watch it safely, with non-blocking synchronous sends we can give up on.
"""

import os
import statistics
import time

# _common first: it limits BLAS to one thread per rank before NumPy loads
from _common import OUT, WORLD, main_guard, need_ranks, say
import numpy as np  # noqa: E402

from _checks import Checks
from mpipipe.schedules.actions import BW, F, RECV_B, RECV_F, SEND_B, SEND_F, Action, Event

BATCH, WIDTH = 32, 1024
ROUNDS = 20
DRAWN = 4          # round trips in the picture


def forward_and_back(checks):
    rank = WORLD.Get_rank()
    activation = np.empty((BATCH, WIDTH), dtype=np.float32)   # allocated once, reused
    gradient = np.empty((BATCH, WIDTH), dtype=np.float32)
    data = np.random.default_rng(0).standard_normal(activation.shape).astype(np.float32)
    times, events = [], []
    WORLD.Barrier()

    def note(kind, i, start, peer=None):
        """What this rank did, for the picture, in ms of the machine's clock (perf_counter
        is one clock for every process of a Linux or macOS machine)."""
        events.append(Event(rank, Action(kind, i, peer=peer), start * 1e3,
                            time.perf_counter() * 1e3))

    for i in range(ROUNDS):
        if rank == 0:
            start = time.perf_counter()
            np.add(data, i, out=activation)              # our toy stage 0: x + i
            note(F, i, start)
            start = time.perf_counter()
            WORLD.Send(activation, dest=1, tag=1)   # stage 0 -> stage 1: the activation
            note(SEND_F, i, start, 1)
            start = time.perf_counter()
            WORLD.Recv(gradient, source=1, tag=2)   # stage 1 -> stage 0: its gradient
            note(RECV_B, i, start, 1)
            times.append((events[-1].end - events[-2].start) / 1e3)   # Send + Recv
        elif rank == 1:
            start = time.perf_counter()
            WORLD.Recv(activation, source=0, tag=1)
            note(RECV_F, i, start, 0)
            start = time.perf_counter()
            gradient[...] = 2 * activation          # d(x^2)/dx, our toy stage 1
            note(BW, i, start)
            start = time.perf_counter()
            WORLD.Send(gradient, dest=0, tag=2)
            note(SEND_B, i, start, 0)
    everything = WORLD.gather(events, root=0)
    if rank == 0:
        checks.exact("gradient", dict(what="gradient == 2 x activation"),
                     int(np.array_equal(gradient, 2 * activation)), 1)
        median = statistics.median(times)
        kib = activation.nbytes / 1024
        say(f"rank 0 sent a {BATCH}x{WIDTH} float32 activation ({kib:.0f} KiB) and got its "
            f"gradient back, {ROUNDS} times:",
            f"  first round trip {times[0] * 1e3:.3f} ms (it also sets up the connection), median "
            f"{median * 1e3:.3f} ms: about {2 * activation.nbytes / median / 1e9:.1f} GB/s "
            "both ways together",
            picture([e for rank_events in everything for e in rank_events
                     if 1 <= e.action.microbatch <= DRAWN]), "",
            f"answer: a {kib:.0f} KiB message goes and comes back in {median * 1e3:.3f} ms "
            f"(median), {median * 1e6:.0f} microseconds.")


def picture(events):
    try:
        from mpipipe.measure.plot import draw
        import matplotlib  # noqa: F401
    except ImportError:
        return "no picture: matplotlib is missing (.venv/bin/pip install -e '.[plot]')"
    os.makedirs(OUT, exist_ok=True)
    start = min(e.start for e in events)
    shifted = [Event(e.rank, e.action, e.start - start, e.end - start) for e in events]
    draw(f"{OUT}/01_point_to_point.png", [(shifted, 2, f"round trips 1 to {DRAWN}: "
                                           "make the activation (F), send it, its gradient (BW)"
                                           " comes back", "ms")])
    return f"  picture: {os.path.relpath(OUT)}/01_point_to_point.png"


def deadlock_safely(checks):
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
        checks.exact("deadlock", dict(what="both sends still waiting after 0.5 s"), int(stuck), 1)
        say("", "deadlock, safely: both ranks called a synchronous send before any receive.",
            f"after 0.5 s the sends were {'still waiting: a deadlock' if stuck else 'done'}.",
            "with blocking Ssend both ranks would wait forever. mpipipe never lets this",
            "happen: sends are non-blocking, and validate() proves every receive is met.", "")


def main():
    need_ranks(2)
    checks = Checks()
    forward_and_back(checks)
    deadlock_safely(checks)
    checks.finish()


if __name__ == "__main__":
    main_guard(main)
