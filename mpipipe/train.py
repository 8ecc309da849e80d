"""`mpipipe train`: build this rank's stage, run the steps, gather what was measured.

Every rank calls run_training() with the same settings. It returns the same
result dict on every rank (losses, median step time, measured bubble, peak
stash, ...), gathered once at the end so that measuring never disturbs the
steps being measured.
"""

import os
import statistics
import time
from dataclasses import dataclass

import numpy as np

from . import checkpoint
from . import topology as topo
from .config import prepare
from .backend import select_device, to_host
from .data import batch_indices
from .engine import Engine
from .errors import ConfigError, NonFiniteError
from .faults import maybe_fail, planned_fault
from .losses import LOSSES
from .model import build_stage
from .optim import make_optimizer
from .p2p import WaitTimeout, quiet_barrier, wait
from .reference import relative_error, train_sequential
from .simulate import Costs, Event, costs_from_events, simulate
from .timeline import render
from .transport import choose as choose_transport


@dataclass
class Run:
    result: dict        # the same on every rank
    plan: object
    topology: object
    stages: list        # this rank's Stage per chunk (weights after training)
    weights: list = None  # on rank 0 only: each replica's whole flat parameter vector
    events: list = None   # on rank 0 only: replica 0's actions in the last step (seconds)
    records: list = None  # on rank 0 only: every rank's kept steps, for trace.chrome_trace
    replanned: object = None  # on rank 0 only: the last step's plan with its measured costs


def check_tolerance(dtype):
    """How close --check wants the pipeline to the single-process run."""
    return 1e-9 if dtype == "float64" else 1e-4


def run_training(config, comm=None, log=None, check=False, on_step=None, keep_all_steps=False):
    """Train with `config` on `comm` (default: COMM_WORLD).

    On rank 0, `log(line)` receives the human-readable lines and `on_step(step,
    loss)` is called after every step (for a progress bar). The per-action
    timestamps of every step are kept for a trace when `keep_all_steps`,
    otherwise those of the last step only.
    """
    if comm is None:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    plan = prepare(config, comm.Get_size())
    c = plan.config
    try:
        fault = planned_fault()
    except ValueError as error:
        raise ConfigError(str(error)) from None
    manifest = checkpoint.latest(c.checkpoint_dir, _checkpoint_info(plan)) if c.resume else None
    first_step = manifest["step"] if manifest else 0
    if first_step >= c.steps:
        raise ConfigError(f"nothing to do: the checkpoint is at step {first_step} and "
                          f"--steps is {c.steps}; ask for more steps")
    grid = topo.build(comm, c.pp, c.dp)
    device, xp, device_reason = select_device(c.device, grid.node.Get_rank())
    transport, transport_reason = choose_transport(c.transport, device)
    my_stages = plan.schedule.stage_map[grid.pp_index]      # one per chunk
    stages = [build_stage(plan.spec, plan.blocks[s], xp=xp) for s in my_stages]
    optimizers = [make_optimizer(c.optimizer, st.flat_params, c.lr) for st in stages]
    if manifest:
        for s, stage, optimizer in zip(my_stages, stages, optimizers):
            checkpoint.load_stage(c.checkpoint_dir, manifest, plan.blocks[s], stage, optimizer)
    engine = Engine(plan.schedule, grid, stages, optimizers, LOSSES[plan.dataset.loss](),
                    plan.shapes, plan.microbatch_size, np.dtype(c.dtype), xp, c.wait, c.timeout,
                    recompute=c.recompute, nan_check=c.nan_check, transport=transport)
    rank0 = comm.Get_rank() == 0
    say = log if (log and rank0) else (lambda line: None)
    say(_banner(plan))
    if c.resume:
        say(f"resuming after step {first_step} from {c.checkpoint_dir}" if manifest else
            f"no complete checkpoint in {c.checkpoint_dir}: starting from step 0")
    losses, step_times, busy, ends, waits, history = [], [], [], [], [], []
    quiet_barrier(comm, c.wait, c.timeout)
    run_start = time.perf_counter()
    for step in range(first_step, c.steps):
        inputs, targets = _microbatches(plan, grid, step, xp)
        start = time.perf_counter()
        try:
            local_loss = engine.run_step(inputs, targets, plan.loss_scale, on_start=lambda: maybe_fail(
                fault, grid.world_rank, step + 1, stages))
            loss = _sum_over_world(comm, float(local_loss), engine.first_non_finite, c)
        except WaitTimeout as error:
            raise WaitTimeout(f"rank {grid.world_rank}, step {step + 1}: {error}") from None
        if c.nan_check and not np.isfinite(loss):
            _stop_on_non_finite(comm, step + 1, engine.first_non_finite, loss)
        step_times.append(time.perf_counter() - start)
        losses.append(loss)
        compute = [e for e in engine.events if e.action.is_compute]
        busy.append(sum(e.end - e.start for e in compute))
        ends.append(max((e.end for e in compute), default=0.0))
        waits.append(engine.wait_time)
        if keep_all_steps or step == c.steps - 1:
            history.append((step, engine.t0 - run_start,
                            [(e.action, e.start, e.end) for e in engine.events]))
        if (step + 1) % c.log_every == 0 or step in (first_step, c.steps - 1):
            say(f"step {step + 1:>5}/{c.steps}  loss {loss:.6f}  "
                f"({step_times[-1] * 1e3:.2f} ms)")
        if on_step and rank0:
            on_step(step + 1, loss)
        if c.checkpoint_dir and ((c.checkpoint_every and (step + 1) % c.checkpoint_every == 0)
                                 or step + 1 == c.steps):
            _save_checkpoint(plan, grid, comm, step + 1, my_stages, stages, optimizers)
    mine = {"world_rank": grid.world_rank, "pp_index": grid.pp_index, "dp_index": grid.dp_index,
            "busy": busy, "ends": ends, "waits": waits, "history": history,
            "peak_stash": engine.peak_held, "peak_stash_bytes": engine.peak_bytes,
            "params": {s: to_host(st.flat_params) for s, st in zip(my_stages, stages)},
            "device": f"{device} ({device_reason})",
            "transport": f"{transport} ({transport_reason})"}
    quiet_barrier(comm, c.wait, c.timeout)
    gathered = comm.gather(mine, root=0)
    run = Run(None, plan, grid, stages)
    if rank0:
        last = c.steps - 1
        run.records = [(g["world_rank"], g["pp_index"], g["dp_index"], step, offset, actions)
                       for g in gathered for step, offset, actions in g["history"]]
        run.events = [Event(pp, a, start, end) for _, pp, dp, step, _, actions in run.records
                      if dp == 0 and step == last for a, start, end in actions]
        run.weights = []
        for d in range(c.dp):
            by_stage = {s: p for g in gathered if g["dp_index"] == d for s, p in g["params"].items()}
            run.weights.append(np.concatenate([by_stage[s] for s in sorted(by_stage)]))
        run.replanned = replan(plan, run.events)
        run.result = _summarise(plan, gathered, losses, step_times, run.events, run.weights,
                                check, first_step, run.replanned)
        run.result["ranks_on_node"] = grid.node.Get_size()
        run.result["device"] = sorted({g["device"] for g in gathered})
        run.result["transport"] = sorted({g["transport"] for g in gathered})
        run.result["cores"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count()
    quiet_barrier(comm, c.wait, c.timeout)   # rank 0 may take a while (--check)
    run.result = comm.bcast(run.result, root=0)
    return run


def _checkpoint_info(plan):
    c = plan.config
    return {"spec": plan.spec.to_dict(), "optimizer": c.optimizer, "lr": c.lr, "data": c.data,
            "vocab": plan.dataset.vocab,
            "seed": c.seed, "global_batch": c.global_batch, "schedule": c.schedule,
            "pp": c.pp, "dp": c.dp}


def _save_checkpoint(plan, grid, comm, step, my_stages, stages, optimizers):
    """Replica 0 writes its stages; then rank 0 marks the checkpoint complete."""
    c = plan.config
    if grid.dp_index == 0:
        for s, stage, optimizer in zip(my_stages, stages, optimizers):
            checkpoint.save_stage(c.checkpoint_dir, step, s, plan.blocks[s], stage, optimizer)
    quiet_barrier(comm, c.wait, c.timeout)
    if comm.Get_rank() == 0:
        checkpoint.save_manifest(c.checkpoint_dir, step, _checkpoint_info(plan), plan.partition,
                                 c.keep_checkpoints)
    quiet_barrier(comm, c.wait, c.timeout)


def _stop_on_non_finite(comm, step, mine, loss):
    """Every rank raises the same NonFiniteError, naming where the NaN/Inf began."""
    reports = comm.allgather(mine)
    seen = [r for r in reports if r is not None]
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


def _microbatches(plan, grid, step, xp=np):
    """This replica's share of the global batch of `step`, cut into micro-batches
    (on the rank's device: the one host-to-device copy of a step, its input)."""
    c, data = plan.config, plan.dataset
    rows = batch_indices(step, c.global_batch, len(data), c.seed)
    share = c.global_batch // c.dp
    mine = rows[grid.dp_index * share:(grid.dp_index + 1) * share]
    size = plan.microbatch_size
    cuts = [mine[i * size:(i + 1) * size] for i in range(c.microbatches)]
    schedule = plan.schedule
    holds_first = schedule.place(0)[0] == grid.pp_index
    holds_last = schedule.place(schedule.num_stages - 1)[0] == grid.pp_index
    inputs = [xp.asarray(data.inputs[r]) for r in cuts] if holds_first else None
    targets = [xp.asarray(data.targets[r]) for r in cuts] if holds_last else None
    return inputs, targets


def _sum_over_world(comm, value, non_finite, c):
    """Add up the last stages' losses (the other ranks add 0): the global-batch mean.

    A rank that saw a NaN/Inf adds one to the second slot and NaN to the loss,
    so every rank learns of it in the same all-reduce.
    """
    from mpi4py import MPI

    buffer = np.array([value, 0.0 if non_finite is None else 1.0])
    if non_finite is not None:
        buffer[0] = np.nan
    wait(comm.Iallreduce(MPI.IN_PLACE, buffer, op=MPI.SUM), c.wait, c.timeout, "the loss all-reduce")
    return float(buffer[0])


def replan(plan, events):
    """The last step planned again (in ms) with its own measured action times, each stage at
    its own speed: what is left between it and the measured step is messages and noise."""
    in_ms = [Event(e.rank, e.action, 1e3 * e.start, 1e3 * e.end) for e in events]
    costs = costs_from_events(in_ms, plan.schedule.chunks, plan.config.recompute, plan.schedule)
    return simulate(plan.schedule, costs)


def _summarise(plan, gathered, losses, step_times, events, weights, check, first_step,
               replanned):
    c = plan.config
    measured = slice(1, None) if len(losses) > 1 else slice(None)   # the first step warms up
    bubbles = []
    for step in range(len(losses)):
        makespan = max(g["ends"][step] for g in gathered)
        total_busy = sum(g["busy"][step] for g in gathered)
        bubbles.append(1.0 - total_busy / (len(gathered) * makespan) if makespan > 0 else 0.0)
    replica0 = sorted((g for g in gathered if g["dp_index"] == 0), key=lambda g: g["pp_index"])
    in_ms = [Event(e.rank, e.action, 1e3 * e.start, 1e3 * e.end) for e in events]
    planned = simulate(plan.schedule, Costs(recompute=c.recompute))
    result = {
        "schedule": c.schedule, "pp": c.pp, "dp": c.dp, "microbatches": c.microbatches,
        "virtual_stages": c.virtual_stages, "recompute": c.recompute,
        "microbatch_size": plan.microbatch_size, "global_batch": c.global_batch,
        "steps": c.steps, "first_step": first_step, "dtype": c.dtype,
        "partition": plan.partition,
        "losses": losses, "final_loss": losses[-1],
        "step_time_s": statistics.median(step_times[measured]),
        "step_times_s": step_times,
        "bubble_fraction": statistics.median(bubbles[measured]),
        "bubble_fraction_planned": planned.bubble_fraction,
        "bubble_fraction_last_step": bubbles[-1],
        "bubble_fraction_last_step_planned": replanned.bubble_fraction,
        "comm_wait_s": [statistics.median(g["waits"][measured]) for g in replica0],
        "peak_stash": [g["peak_stash"] for g in replica0],
        "peak_stash_bytes": [g["peak_stash_bytes"] for g in replica0],
        "timeline": render(in_ms, c.pp, unit="ms"),
    }
    if plan.dataset.held_out is not None:
        result.update(_held_out_scores(plan, weights[0]))
    elif plan.dataset.loss == "cross-entropy":
        result["accuracy"] = _accuracy(plan, weights[0])
    if check:
        ref_losses, ref_weights = train_sequential(plan)
        tolerance = check_tolerance(c.dtype)
        result["check"] = {
            "loss_rel_err": relative_error(losses, ref_losses[first_step:]),
            "weight_rel_err": max(relative_error(w, ref_weights) for w in weights),
            "tolerance": tolerance,
        }
        result["check"]["passed"] = (result["check"]["loss_rel_err"] < tolerance
                                     and result["check"]["weight_rel_err"] < tolerance)
    return result


def _accuracy(plan, weights):
    """Share of the whole data set the trained model classifies right."""
    model = build_stage(plan.spec, range(plan.spec.num_blocks))
    model.flat_params[...] = weights
    logits, _ = model.forward(plan.dataset.inputs)
    return float((logits.argmax(axis=-1) == plan.dataset.targets).mean())


def _held_out_scores(plan, weights):
    """Token data: loss on the held-out samples, and accuracy on the positions that count
    (for arithmetic: the digits of the answers), predicting each from the true prefix."""
    model = build_stage(plan.spec, range(plan.spec.num_blocks))
    model.flat_params[...] = weights
    inputs, targets = plan.dataset.held_out
    logits, _ = model.forward(inputs)
    loss, _ = LOSSES["cross-entropy"]()(logits, targets, targets.size)
    right = logits.argmax(axis=-1) == targets
    mask = plan.dataset.score_mask
    return {"held_out_loss": float(loss), "held_out_accuracy": float(right[mask].mean()),
            "held_out_exact": float(np.all(right | ~mask, axis=1).mean())}


def _banner(plan):
    c = plan.config
    chunks = f" x {c.virtual_stages} chunks" if c.virtual_stages > 1 else ""
    extra = ", recompute" if c.recompute else ""
    model = (f"GPT of {c.layers} blocks, width {c.hidden}, {c.heads} heads, "
             f"{plan.spec.seq_len} tokens" if c.model == "gpt" else
             f"{c.layers} layers of width {c.hidden}")
    return (f"mpipipe train: {c.schedule}{extra}, pp={c.pp}{chunks} x dp={c.dp}, "
            f"{c.microbatches} micro-batch(es) "
            f"of {plan.microbatch_size} (global batch {c.global_batch}), {model} "
            f"split {plan.partition}, {c.data} data, {c.dtype}, {c.optimizer} lr={c.lr:g}")
