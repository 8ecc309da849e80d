"""Where a one-process step's time goes, layer by layer: mpipipe's NumPy layers beside
PyTorch's on the same shapes, one thread.

The shapes are those of benchmarks/vs_pytorch.py's model: micro-batches of 32 rows
(global batch 256, m = 8), 8 blocks of Linear(1024, 1024) + GELU(tanh), MSE, SGD
with momentum over the 8.4 M parameters, float32. For each operation the table
gives the time of one call (median of --rounds, the two frameworks alternating
call by call) and its cost per training step (calls per step x time per call):

  linear forward       mpipipe Linear.forward       PyTorch addmm(b, x, W^T)
  linear input grad    Linear.backward_input        mm(dy, W)   (not for the first layer:
                                                                the data needs no gradient)
  linear weight grad   Linear.backward_weight       mm(dy^T, x) accumulated into W.grad
  gelu forward         GELU.forward                 gelu(x, approximate="tanh")
  gelu backward        GELU.backward_input          gelu_backward(dy, x)
  mse                  MeanSquaredError (value and gradient)   mse_loss forward + backward
  sgd step             SGD.step on the flat buffer  torch.optim.SGD.step (momentum 0.9)
  zero grads           Stage.zero_grads             optimizer.zero_grad() (set to None)

PyTorch's side is the work its autograd does for the same layers, called directly
(no graph), so the rows compare kernels and their temporaries, not frameworks'
bookkeeping; the one-process steps of vs_pytorch.py hold the rest. The first
micro-batch's weight gradient in PyTorch is stored, not added (AccumulateGrad takes
the new tensor when .grad is None): the row averages 1 store and m - 1 additions.

    python benchmarks/layer_profile.py [--rounds 7] [--microbatches 8] [--json FILE]

Run alone on the machine (one thread is set here, before NumPy loads).
"""

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from mpipipe.nn.layers import GELU  # noqa: E402
from mpipipe.nn.losses import MeanSquaredError  # noqa: E402
from mpipipe.nn.model import ModelSpec, build_stage  # noqa: E402
from mpipipe.nn.optim import SGD  # noqa: E402

WIDTH, LAYERS, GLOBAL_BATCH = 1024, 8, 256


def per_call_s(fn, seconds=0.05):
    """Seconds per call of fn(), from a batch of calls lasting about `seconds`."""
    fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / calls


def mpipipe_ops(m):
    """name -> (calls per step, a function making one call) for mpipipe's layers."""
    spec = ModelSpec(input_dim=WIDTH, output_dim=WIDTH, hidden=WIDTH, layers=LAYERS,
                     last_activation=True, dtype="float32")
    stage = build_stage(spec, range(LAYERS))
    linear = stage.layers[0].layers[0]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((GLOBAL_BATCH // m, WIDTH)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y, linear_cache = linear.forward(x)
    gelu = GELU()
    _, gelu_cache = gelu.forward(y)
    mse = MeanSquaredError()
    optimizer = SGD(stage.flat_params, lr=1e-9, momentum=0.9)
    stage.flat_grads[...] = 1e-3
    n = m * LAYERS
    return {
        "linear forward": (n, lambda: linear.forward(x)),
        "linear input grad": (n - m, lambda: linear.backward_input(dy, linear_cache)),
        "linear weight grad": (n, lambda: linear.backward_weight(dy, linear_cache)),
        "gelu forward": (n, lambda: gelu.forward(y)),
        "gelu backward": (n, lambda: gelu.backward_input(dy, gelu_cache)),
        "mse": (m, lambda: mse(y, x, GLOBAL_BATCH)),
        "sgd step": (1, lambda: optimizer.step(stage.flat_grads)),
        "zero grads": (1, stage.zero_grads),
    }


def torch_ops(m):
    """The same operations as PyTorch's autograd runs them for nn.Linear + nn.GELU."""
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((GLOBAL_BATCH // m, WIDTH)).astype(np.float32))
    dy = torch.from_numpy(rng.standard_normal(tuple(x.shape)).astype(np.float32))
    weight, bias = torch.randn(WIDTH, WIDTH) / WIDTH ** 0.5, torch.zeros(WIDTH)
    y = torch.addmm(bias, x, weight.t())
    params = [torch.nn.Parameter(torch.zeros(WIDTH, WIDTH)) for _ in range(LAYERS)]
    params += [torch.nn.Parameter(torch.zeros(WIDTH)) for _ in range(LAYERS)]
    for p in params:
        p.grad = torch.full_like(p, 1e-3)
    optimizer = torch.optim.SGD(params, lr=1e-9, momentum=0.9)
    grad = {"W": None, "calls": 0}

    def weight_grad():
        new = torch.mm(dy.t(), x)
        if grad["calls"] % m == 0:            # the first micro-batch: stored as it is
            grad["W"] = new
        else:
            grad["W"].add_(new)
        torch.sum(dy, 0)                      # the bias gradient
        grad["calls"] += 1

    def mse():
        loss = F.mse_loss(y, x)
        return loss, (y - x) * (2.0 / y.numel())

    def zero_grad():
        saved = [p.grad for p in params]
        optimizer.zero_grad()                 # set_to_none: nothing is written
        for p, g in zip(params, saved):
            p.grad = g

    n = m * LAYERS
    return {
        "linear forward": (n, lambda: torch.addmm(bias, x, weight.t())),
        "linear input grad": (n - m, lambda: torch.mm(dy, weight)),
        "linear weight grad": (n, weight_grad),
        "gelu forward": (n, lambda: F.gelu(y, approximate="tanh")),
        "gelu backward": (n, lambda: torch.ops.aten.gelu_backward(dy, y, approximate="tanh")),
        "mse": (m, mse),
        "sgd step": (1, optimizer.step),
        "zero grads": (1, zero_grad),
    }


def profile(m, rounds):
    """name -> {calls, mpipipe_ms, pytorch_ms}: per call, median over rounds alternating."""
    ours, theirs = mpipipe_ops(m), torch_ops(m)
    rows = {}
    for name, (calls, ours_fn) in ours.items():
        theirs_fn = theirs[name][1]
        times = {"mpipipe": [], "pytorch": []}
        for round_ in range(rounds):
            pair = [("mpipipe", ours_fn), ("pytorch", theirs_fn)]
            for framework, fn in (pair if round_ % 2 == 0 else pair[::-1]):
                times[framework].append(per_call_s(fn))
        rows[name] = {"calls": calls, **{f"{fw}_ms": statistics.median(t) * 1e3
                                         for fw, t in times.items()}}
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--microbatches", type=int, default=8)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("install the CPU build of PyTorch (no CUDA wheels):\n"
              "  pip install torch --index-url https://download.pytorch.org/whl/cpu")
        print("layer_profile: skipped (PyTorch not installed)")
        return
    m = args.microbatches
    rows = profile(m, args.rounds)
    print(f"one-process step, layer by layer: m={m} micro-batches of {GLOBAL_BATCH // m} rows, "
          f"{LAYERS} x Linear({WIDTH}, {WIDTH}) + GELU, float32, one thread, torch "
          f"{torch.__version__}; median of {args.rounds} alternating rounds\n")
    print("| operation | calls/step | mpipipe ms/call | PyTorch ms/call | mpipipe ms/step "
          "| PyTorch ms/step | mpipipe/PyTorch |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    totals = {"mpipipe": 0.0, "pytorch": 0.0}
    for name, r in rows.items():
        per_step = {fw: r["calls"] * r[f"{fw}_ms"] for fw in totals}
        for fw in totals:
            totals[fw] += per_step[fw]
        print(f"| {name} | {r['calls']} | {r['mpipipe_ms']:.3f} | {r['pytorch_ms']:.3f} "
              f"| {per_step['mpipipe']:.1f} | {per_step['pytorch']:.1f} "
              f"| {per_step['mpipipe'] / per_step['pytorch']:.2f} |")
    print(f"| **sum** | | | | {totals['mpipipe']:.1f} | {totals['pytorch']:.1f} "
          f"| {totals['mpipipe'] / totals['pytorch']:.2f} |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"microbatches": m, "rounds": args.rounds, "rows": rows,
                       "sum_ms": totals}, out, indent=1)


if __name__ == "__main__":
    main()
