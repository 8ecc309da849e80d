"""Training on MPI: build this rank's chunks, run the steps, gather what was measured.

Every rank calls run_training() with the same settings. It returns a Run whose
summary (measure.Summary: losses, median step time, measured bubble, peak
stash, ...) is the same on every rank, gathered once at the end so that
measuring never disturbs the steps being measured.
"""

import sys
import time
from dataclasses import dataclass

import numpy as np

from mpipipe.comm import topology as topo
from mpipipe.comm.backend import select_device
from mpipipe.comm.launcher import local_rank
from mpipipe.comm.p2p import Waiter, WaitTimeout
from mpipipe.comm.transport import choose as choose_transport
from mpipipe.measure import summary as measure
from mpipipe.nn import autopartition
from mpipipe.nn.data import batch_indices
from mpipipe.nn.model import build_stage
from mpipipe.nn.optim import make_optimizer
from mpipipe.nn.tensor_parallel import TensorGroup
from . import checkpoint
from .check import check_against_one_process
from .config import prepare
from .engine import Chunk, Engine
from .errors import ConfigError, NonFiniteError
from .faults import maybe_fail, planned_fault


@dataclass
class Run:
    summary: object         # measure.Summary, the same on every rank
    setup: object           # config.Setup
    topology: object
    chunks: list            # this rank's engine.Chunk objects (weights after training)
    weights: list = None    # on rank 0 only: each replica's whole flat parameter vector
    events: list = None     # on rank 0 only: replica 0's actions in the last step (seconds)
    records: list = None    # on rank 0 only: every rank's kept steps, for trace.chrome_trace
    resimulated: object = None  # on rank 0 only: the last step planned with its measured costs


def run_training(config, comm=None, log=None, check=False, on_step=None, keep_all_steps=False):
    """Train with `config` on `comm` (default: COMM_WORLD).

    On rank 0, `log(line)` receives the human-readable lines and `on_step(step,
    loss)` is called after every step (for a progress bar). `check` compares
    the result with a one-process run (--check). The per-action timestamps of
    every step are kept for a trace when `keep_all_steps`, else the last step's.
    """
    if comm is None:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    setup = prepare(config, comm.Get_size())
    c = setup.config
    try:
        fault = planned_fault()
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if c.checkpoint_dir:
        checkpoint.check_folder(c.checkpoint_dir, comm)
    manifest, notes = checkpoint.resume_point(setup, comm)
    first_step = manifest["step"] if manifest else 0
    if first_step >= c.steps:
        raise ConfigError(f"nothing to do: the checkpoint is at step {first_step} and "
                          f"--steps is {c.steps}; ask for more steps")
    grid = topo.build(comm, c.pp, c.dp, c.tp)
    device, xp, device_reason = select_device(c.device, _local_rank(grid))
    transport, transport_reason = choose_transport(c.transport, device)
    waiter = Waiter.for_node(c.wait, c.timeout, grid.node.Get_size())
    rank0 = comm.Get_rank() == 0
    say = log if (log and rank0) else (lambda line: None)
    if c.partition == "auto":
        setup = autopartition.choose(setup, comm, xp, say)
    tensor = TensorGroup.of(grid.tensor, waiter)
    chunks = _build_chunks(setup, grid, xp, manifest, tensor)
    engine = Engine(setup, grid, chunks, xp, waiter, transport, tensor)
    say(setup.banner())
    if c.resume:
        say(f"resuming after step {first_step} from {c.checkpoint_dir}" if manifest else
            f"no complete checkpoint in {c.checkpoint_dir}: starting from step 0")
    for note in notes if rank0 else ():
        print(f"mpipipe train: note: {note}", file=sys.stderr, flush=True)
    waiter.barrier(comm)
    steps = measure.StepLog(keep_all_steps, c.steps - 1, time.perf_counter(), keep_state=check)
    for step in range(first_step, c.steps):
        inputs, targets = _microbatches(setup, grid, step, xp)
        steps.before(step, chunks)
        start = time.perf_counter()
        try:
            local_loss = engine.run_step(inputs, targets, on_start=lambda: maybe_fail(
                fault, grid.world_rank, step + 1, chunks))
            loss = _sum_over_world(comm, float(local_loss), engine.first_non_finite, waiter)
        except WaitTimeout as error:
            raise WaitTimeout(f"rank {grid.world_rank}, step {step + 1}: {error}") from None
        if c.nan_check and not np.isfinite(loss):
            _stop_on_non_finite(comm, step + 1, engine.first_non_finite, loss)
        steps.record(step, loss, time.perf_counter() - start, engine)
        if (step + 1) % c.log_every == 0 or step in (first_step, c.steps - 1):
            say(f"step {step + 1:>5}/{c.steps}  loss {loss:.6f}  "
                f"({steps.step_times[-1] * 1e3:.2f} ms)")
        if on_step and rank0:
            on_step(step + 1, loss)
        if c.checkpoint_dir and ((c.checkpoint_every and (step + 1) % c.checkpoint_every == 0)
                                 or step + 1 == c.steps):
            checkpoint.save(setup, grid, step + 1, chunks, waiter, fault)
    report = steps.report(grid, engine, chunks, f"{device} ({device_reason})",
                          f"{transport} ({transport_reason})")
    waiter.barrier(comm)
    reports = comm.gather(report, root=0)
    run = Run(None, setup, grid, chunks)
    if rank0:
        run.records = measure.records_of(reports)
        run.events = measure.last_step_events(run.records, c.steps - 1)
        run.weights = measure.replica_weights(setup, reports)
        run.resimulated = measure.resimulate(setup, run.events)
        verdict = (check_against_one_process(setup, steps.losses, run.weights, first_step,
                                             measure.state_before_last(setup, reports))
                   if check else None)
        run.summary = measure.summarise(setup, reports, steps, first_step, run.events,
                                        run.resimulated, run.weights, verdict,
                                        grid.node.Get_size())
    waiter.barrier(comm)   # rank 0 may take a while (--check)
    run.summary = comm.bcast(run.summary, root=0)
    return run


def _local_rank(grid):
    """This rank's place on its node, which picks its GPU: the launcher's word (mpipipe
    train chose the GPU from it before MPI started), checked against the node's
    communicator (Split_type), which stands in where no launcher said."""
    told, counted = local_rank(), grid.node.Get_rank()
    if told is not None and told != counted:
        print(f"mpipipe train: note: rank {grid.world_rank}: the launcher says local rank "
              f"{told}, the node's communicator {counted}; the launcher's is used",
              file=sys.stderr, flush=True)
    return counted if told is None else told


def _build_chunks(setup, grid, xp, manifest, tensor):
    """This rank's chunks (its tensor shard of them), with fresh weights or, when
    resuming, the checkpoint's."""
    c, chunks = setup.config, []
    for stage in setup.schedule.stage_map[grid.pp_index]:
        layers = build_stage(setup.spec, setup.blocks[stage], xp=xp, tensor=tensor)
        chunk = Chunk(stage, setup.blocks[stage], layers,
                      make_optimizer(c.optimizer, layers.flat_params, c.lr))
        if manifest:
            checkpoint.load_stage(c.checkpoint_dir, manifest, chunk.blocks, layers,
                                  chunk.optimizer, setup.spec, tensor)
        chunks.append(chunk)
    return chunks


def _microbatches(setup, grid, step, xp=np):
    """This replica's share of the global batch of `step`, cut into micro-batches
    (on the rank's device: the one host-to-device copy of a step, its input)."""
    c, data = setup.config, setup.dataset
    rows = batch_indices(step, c.global_batch, len(data), c.seed)
    share = c.global_batch // c.dp
    mine = rows[grid.dp_index * share:(grid.dp_index + 1) * share]
    size = setup.microbatch_size
    cuts = [mine[i * size:(i + 1) * size] for i in range(c.microbatches)]
    schedule = setup.schedule
    holds_first = schedule.place(0)[0] == grid.pp_index
    holds_last = schedule.place(schedule.num_stages - 1)[0] == grid.pp_index
    inputs = [xp.asarray(data.inputs[r]) for r in cuts] if holds_first else None
    targets = [xp.asarray(data.targets[r]) for r in cuts] if holds_last else None
    return inputs, targets


def _sum_over_world(comm, value, non_finite, waiter):
    """Add up the last stages' losses (the other ranks add 0): the global-batch mean.

    A rank that saw a NaN/Inf adds one to the second slot and NaN to the loss,
    so every rank learns of it in the same all-reduce.
    """
    from mpi4py import MPI

    buffer = np.array([value, 0.0 if non_finite is None else 1.0])
    if non_finite is not None:
        buffer[0] = np.nan
    waiter.wait(comm.Iallreduce(MPI.IN_PLACE, buffer, op=MPI.SUM), "the loss all-reduce")
    return float(buffer[0])


def _stop_on_non_finite(comm, step, mine, loss):
    """Every rank raises the same NonFiniteError, naming where the NaN/Inf began."""
    seen = [r for r in comm.allgather(mine) if r is not None]
    forwards = sorted(r for r in seen if r[1] == "forward")
    backwards = sorted((r for r in seen if r[1] == "backward"), reverse=True)
    if forwards:     # a NaN travels forward, so the lowest stage saw it first
        stage, direction, action = forwards[0]
    elif backwards:  # ... and backward from the highest
        stage, direction, action = backwards[0]
    else:
        stage, direction, action = None, "loss", None
    where = (f"in the {direction} of stage {stage} ({action})" if stage is not None
             else "in the loss, with every activation finite")
    raise NonFiniteError(f"step {step}: the loss is {loss}; NaN/Inf first appeared {where}. "
                         f"Try a smaller --lr; --no-nan-check turns this check off")
