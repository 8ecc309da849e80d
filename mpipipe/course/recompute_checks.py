"""Checks of exercise 7: what recomputation saves (the stash) and what it costs (a forward).

The references are mpipipe's own: the bytes the engine counts in its stash
for one micro-batch (engine.py keeps the forward's cache, or under
--recompute only the stage's input), measured on real layers; and the
simulator's step time for 1F1B with and without the repeated forward.
"""

import math
import numbers

import numpy as np

from mpipipe.nn.layers import cache_nbytes
from mpipipe.nn.model import ModelSpec, build_stage
from mpipipe.plan.simulate import Costs, simulate
from mpipipe.schedules import make_schedule

from .base import Wrong, call, short

# (blocks on the stage, micro-batch size, width)
STASH_CASES = [(2, 16, 32), (1, 4, 8), (4, 8, 64), (3, 1, 5), (8, 32, 16)]
BYTES_PER_NUMBER = 4   # float32


def engine_stash_bytes(num_blocks, microbatch_size, width, recompute):
    """What the engine stashes for one micro-batch on a stage of `num_blocks` blocks
    Linear(width, width) + GELU in float32: the forward's cache, or only its input."""
    spec = ModelSpec(input_dim=width, output_dim=width, hidden=width, layers=num_blocks,
                     activation="gelu", last_activation=True, dtype="float32")
    stage = build_stage(spec, range(num_blocks))
    x = np.random.default_rng(0).standard_normal((microbatch_size, width)).astype(np.float32)
    _, cache = stage.forward(x)
    return x.nbytes if recompute else cache_nbytes(cache)


def student_bytes(module, num_blocks, microbatch_size, width, recompute):
    got = call(module, "stash_bytes", num_blocks, microbatch_size, width, recompute)
    if not isinstance(got, numbers.Real) or isinstance(got, bool):
        raise Wrong(f"{stash_text(num_blocks, microbatch_size, width, recompute)} returned "
                    f"{short(got)}: expected a number of bytes")
    return got


def stash_text(num_blocks, microbatch_size, width, recompute):
    return f"stash_bytes({num_blocks}, {microbatch_size}, {width}, recompute={recompute})"


def stash_without_recompute(module):
    for L, b, n in STASH_CASES:
        got = student_bytes(module, L, b, n, False)
        expected = engine_stash_bytes(L, b, n, False)
        if got != expected:
            array = b * n * BYTES_PER_NUMBER
            hint = {array: "that is only the stage's input: what it keeps with recompute",
                    L * array: "that is one array a block; a GELU keeps two of its own"}.get(
                        got, "count the arrays each layer's forward keeps for its backward (the "
                             "cache in mpipipe/nn/layers.py), 4 bytes a number")
            raise Wrong(f"{stash_text(L, b, n, False)} returned {got:g}; mpipipe's engine holds "
                        f"{expected} bytes for one micro-batch of {b} on a stage of {L} block(s) "
                        f"Linear({n}, {n}) + GELU: {hint}")


def stash_with_recompute(module):
    for L, b, n in STASH_CASES:
        got = student_bytes(module, L, b, n, True)
        expected = engine_stash_bytes(L, b, n, True)
        if got != expected:
            raise Wrong(f"{stash_text(L, b, n, True)} returned {got:g}; with recompute the "
                        f"engine holds {expected} bytes for one micro-batch: only what the stage "
                        f"needs to run its forward again")


# (P, m, forward, backward): a rank's time for one micro-batch's F and fused backward
STEP_CASES = [(4, 8, 1.0, 2.0), (2, 4, 1.0, 2.0), (1, 3, 0.5, 1.0), (8, 2, 2.0, 3.0),
              (3, 9, 1.5, 1.5)]


def pays_one_more_forward(module):
    """1F1B's step time, with and without recompute, against the simulator."""
    for P, m, forward, backward in STEP_CASES:
        for recompute in (False, True):
            text = f"step_time({P}, {m}, {forward:g}, {backward:g}, recompute={recompute})"
            got = call(module, "step_time", P, m, forward, backward, recompute)
            expected = simulate(make_schedule("1f1b", P, m),
                                Costs(F=forward, BW=backward, recompute=recompute)).makespan
            if not isinstance(got, numbers.Real) or isinstance(got, bool):
                raise Wrong(f"{text} returned {short(got)}: expected a time, like {expected:g}")
            if math.isclose(got, expected, rel_tol=1e-9):
                continue
            if recompute:
                why = ("with recompute every backward first runs its stage's forward again, "
                       "on every rank")
            else:
                why = ("a rank computes m slots of forward + backward, and the step lasts "
                       "P - 1 slots longer (exercise 3)")
            raise Wrong(f"{text} returned {got:g}; the simulator's 1F1B step takes "
                        f"{expected:g}: {why}")
