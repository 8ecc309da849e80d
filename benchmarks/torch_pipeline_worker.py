"""The PyTorch side of benchmarks/vs_pytorch.py: one training run, one JSON line on rank 0.

Pipeline (launched as `mpiexec -n P python torch_pipeline_worker.py --schedule 1f1b
--microbatches M --steps N`, or under torchrun): torch.distributed with the gloo
backend on the CPU, MASTER_ADDR / MASTER_PORT from the environment, the rank
from PMI_RANK/PMI_SIZE (MPICH's mpiexec) or RANK/WORLD_SIZE (torchrun). Rank r
holds blocks [r L/P, (r+1) L/P), each Linear(1024, 1024) + GELU(tanh), wrapped in
torch.distributed.pipelining.PipelineStage and driven by Schedule1F1B or
ScheduleGPipe with n_microbatches=M; MSE (mean) on each micro-batch, gradients
scaled by 1/M (scale_grads=True), SGD lr 0.001 momentum 0.9, one thread.

One process (`--single`, no torch.distributed): the same blocks as a plain
nn.Sequential, gradients accumulated over the same M micro-batches.

Weights and data are mpipipe's own (mpipipe.nn.model.build_block, mpipipe.nn.data.teacher,
mpipipe.nn.data.batch_indices, seed 0), copied into torch, so step 1 of both
frameworks sees the same model and batch and their losses can be compared.

Each step is timed from just after a barrier (dist.barrier) to just after
optimizer.step(); the step time is the slowest rank's, the reported figure the
median over steps 2..N. Rank 0 prints one JSON line: step_time_s, step_times_s,
losses (per step, mean over the micro-batches), and per rank the stage it held
(layer range, parameters, forward calls counted by a hook, gradient norm).
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from mpipipe.nn.data import batch_indices, teacher  # noqa: E402
from mpipipe.nn.model import ModelSpec, build_block  # noqa: E402

WIDTH, LAYERS, GLOBAL_BATCH, SAMPLES, LR, MOMENTUM, SEED = 1024, 8, 256, 1024, 0.001, 0.9, 0


def torch_block(spec, index):
    """Block `index`: Linear + GELU(tanh), with mpipipe's weights (W is (in, out) there)."""
    ours = build_block(spec, index).layers[0]
    linear = nn.Linear(ours.n_in, ours.n_out)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(ours.params["W"].T)))
        linear.bias.copy_(torch.from_numpy(ours.params["b"]))
    return nn.Sequential(linear, nn.GELU(approximate="tanh"))


def batch(data, step):
    rows = batch_indices(step, GLOBAL_BATCH, len(data), SEED)
    return torch.from_numpy(data.inputs[rows]), torch.from_numpy(data.targets[rows])


def rank_and_size():
    for rank, size in (("PMI_RANK", "PMI_SIZE"), ("RANK", "WORLD_SIZE"),
                       ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE")):
        if rank in os.environ:
            return int(os.environ[rank]), int(os.environ[size])
    return 0, 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedule", choices=["1f1b", "gpipe"], default="1f1b")
    parser.add_argument("--microbatches", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--single", action="store_true",
                        help="one process, plain nn.Sequential with gradient accumulation")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    torch.manual_seed(SEED)
    m = args.microbatches
    spec = ModelSpec(input_dim=WIDTH, output_dim=WIDTH, hidden=WIDTH, layers=LAYERS,
                     activation="gelu", last_activation=True, seed=SEED, dtype="float32")
    data = teacher(samples=SAMPLES, input_dim=WIDTH, output_dim=WIDTH, seed=SEED, dtype="float32")
    if args.single:
        return run_single(args, spec, data)

    import torch.distributed as dist
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    rank, world = rank_and_size()
    if LAYERS % world:
        sys.exit(f"{LAYERS} layers do not split evenly over {world} stages")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    per = LAYERS // world
    layers = range(rank * per, (rank + 1) * per)
    module = nn.Sequential(*[torch_block(spec, i) for i in layers])
    forwards = [0]
    module.register_forward_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
    # Dynamic metadata mode: shapes are inferred from the first micro-batch. (Static mode,
    # input_args/output_args given, takes requires_grad from the example tensors: plain
    # torch.empty examples make 2.13 skip the gradient messages and fail in backward.)
    stage = PipelineStage(module, rank, world, torch.device("cpu"))
    schedule_class = {"1f1b": Schedule1F1B, "gpipe": ScheduleGPipe}[args.schedule]
    schedule = schedule_class(stage, n_microbatches=m, loss_fn=nn.MSELoss(), scale_grads=True)
    optimizer = torch.optim.SGD(module.parameters(), lr=LR, momentum=MOMENTUM)
    first, last = rank == 0, rank == world - 1

    times, losses = [], []
    for step in range(args.steps):
        x, y = batch(data, step)
        mb_losses = []
        dist.barrier()
        start = time.perf_counter()
        optimizer.zero_grad()
        if first and last:
            schedule.step(x, target=y, losses=mb_losses, return_outputs=False)
        elif first:
            schedule.step(x, return_outputs=False)
        elif last:
            schedule.step(target=y, losses=mb_losses, return_outputs=False)
        else:
            schedule.step(return_outputs=False)
        optimizer.step()
        times.append(time.perf_counter() - start)
        if last:
            losses.append(float(torch.stack(mb_losses).detach().mean()))

    grad_norm = float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in module.parameters())))
    mine = {"rank": rank, "stage_index": stage.stage_index, "num_stages": stage.num_stages,
            "layers": [layers.start, layers.stop], "params": sum(p.numel() for p in module.parameters()),
            "forward_calls": forwards[0], "grad_norm": grad_norm, "times": times, "losses": losses}
    gathered = [None] * world
    dist.all_gather_object(gathered, mine)
    dist.destroy_process_group()
    if rank == 0:
        slowest = [max(g["times"][s] for g in gathered) for s in range(args.steps)]
        measured = slowest[1:] if len(slowest) > 1 else slowest
        print(json.dumps({
            "framework": "pytorch", "torch_version": torch.__version__, "schedule": args.schedule,
            "pp": world, "microbatches": m, "steps": args.steps,
            "step_time_s": statistics.median(measured), "step_times_s": slowest,
            "losses": gathered[-1]["losses"],
            "stages": [{k: g[k] for k in ("rank", "stage_index", "num_stages", "layers", "params",
                                           "forward_calls", "grad_norm")} for g in gathered],
        }), flush=True)


def run_single(args, spec, data):
    m = args.microbatches
    model = nn.Sequential(*[torch_block(spec, i) for i in range(LAYERS)])
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = nn.MSELoss()
    times, losses = [], []
    for step in range(args.steps):
        x, y = batch(data, step)
        start = time.perf_counter()
        optimizer.zero_grad()
        total = 0.0
        for xm, ym in zip(x.chunk(m), y.chunk(m)):
            loss = loss_fn(model(xm), ym) / m
            loss.backward()
            total += loss.detach()
        optimizer.step()
        times.append(time.perf_counter() - start)
        losses.append(float(total))
    measured = times[1:] if len(times) > 1 else times
    print(json.dumps({
        "framework": "pytorch", "torch_version": torch.__version__, "schedule": "single",
        "pp": 1, "microbatches": m, "steps": args.steps,
        "step_time_s": statistics.median(measured), "step_times_s": times, "losses": losses,
    }), flush=True)


if __name__ == "__main__":
    main()
