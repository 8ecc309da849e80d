"""`mpipipe train`: the command around run_training.

Everything a user of the command sees besides the training itself: the
progress bar, the summary, the pictures and the trace, and above all what
happens when something goes wrong. Every path ends the whole job: a bad
setting exits 2 on every rank with one message, a NaN exits 3, a time-out or
an unexpected exception aborts every rank (MPI_Abort) after printing the
failing rank's message once.
"""

import json
import os
import sys
import time
import traceback

LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS")
LAUNCHER_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID")


def launcher_rank():
    """This process's rank as the launcher told it, without starting MPI (None if unknown)."""
    for name in LAUNCHER_RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return None


def cmd_train(args):
    from mpi4py import MPI

    from .config import TrainConfig
    from .errors import ConfigError, NonFiniteError, ScheduleError
    from .p2p import WaitTimeout
    from .train import run_training

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    if args.nan_check:      # the check names where NaN/Inf began; NumPy's warnings add noise
        import numpy

        numpy.seterr(over="ignore", invalid="ignore", divide="ignore", under="ignore")
    gpt = args.model == "gpt"
    config = TrainConfig(
        pp=args.pp, dp=args.dp, schedule=args.schedule, microbatches=args.microbatches,
        virtual_stages=args.virtual_stages, recompute=args.recompute,
        global_batch=given(args.global_batch, 64 if gpt else 256),
        steps=given(args.steps, 1200 if gpt else 100), hidden=args.hidden,
        layers=given(args.layers, 4 if gpt else 8),
        model=args.model, text=args.text, seq_len=args.seq_len, heads=args.heads,
        activation=args.activation, layernorm=args.layernorm,
        last_activation=args.last_activation, dtype=args.dtype or ("float32" if gpt else "float64"),
        seed=args.seed,
        lr=args.lr, optimizer=args.optimizer, data=args.data, samples=args.samples,
        input_dim=args.input_dim, output_dim=args.output_dim, partition=args.partition or ("params" if gpt else "uniform"),
        device=args.device, transport=args.transport, wait=args.wait, timeout=args.timeout,
        log_every=args.log_every, nan_check=args.nan_check,
        checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints, resume=args.resume)
    from .progress import Progress

    progress = Progress(config.steps, config.global_batch,
                        enabled=rank == 0 and not (args.quiet or args.json))
    log = None if args.quiet else progress.print
    try:
        check_launcher(comm.Get_size())
        check_outputs(args, comm)
        run = run_training(config, comm, log=log, check=args.check, on_step=progress.update,
                           keep_all_steps=bool(args.trace))
        progress.close()
    except (ConfigError, ScheduleError) as error:
        if rank == 0:
            print(f"mpipipe train: error: {error}", file=sys.stderr, flush=True)
        return 2
    except NonFiniteError as error:
        if rank == 0:
            print(f"mpipipe train: stopped: {error}", file=sys.stderr, flush=True)
        return 3
    except WaitTimeout as error:
        abort(comm, 4, f"mpipipe train: timeout: {error}\n")
    except BaseException:       # anything else, KeyboardInterrupt included: end the whole job
        abort(comm, 1, "".join(f"[rank {rank}] {line}\n"
                               for line in traceback.format_exc().splitlines()))
    if rank == 0:
        print_summary(run.result)
        try:
            save_pictures(args, run)
        except OSError as error:
            print(f"mpipipe train: error: {error}", file=sys.stderr, flush=True)
            return 1
        if args.json:
            summary = {k: v for k, v in run.result.items() if k != "timeline"}
            print(json.dumps(summary), flush=True)
    return 0 if run.result.get("check", {}).get("passed", True) else 1


def given(value, default):
    """A flag's value if the user gave one (0 included), else the model's default."""
    return default if value is None else value


ABORT_GRACE_S = 1.0


def abort(comm, code, message):
    """Print once from this rank and end every rank of the job (nobody waits forever).

    The message travels from this process's stderr through the launcher's I/O
    forwarding (MPICH: a proxy per node, then mpiexec). MPI_Abort makes the
    launcher tear that chain down, and on a loaded machine it can do so before
    the message has passed: the job then ends with the right exit status and no
    word of why. Waiting a moment before Abort lets the message through.
    """
    sys.stderr.write(message)
    sys.stderr.flush()
    time.sleep(ABORT_GRACE_S)
    comm.Abort(code)
    os._exit(code)      # Abort may return before the launcher has ended this process


def check_outputs(args, comm):
    """Before training, on every rank: can the pictures and the trace be written?"""
    from .errors import ConfigError

    if args.compare and not args.timeline:
        raise ConfigError("--compare draws into the --timeline picture: give --timeline FILE.png")
    if args.timeline:
        needs_matplotlib()
    problem = None
    if comm.Get_rank() == 0:        # only rank 0 writes them
        for path in filter(None, (args.timeline, args.trace)):
            try:
                check_writable(path)
            except ConfigError as error:
                problem = str(error)
    problem = comm.bcast(problem, root=0)
    if problem:
        raise ConfigError(problem)


def save_pictures(args, run):
    """--trace and --timeline (rank 0, after training)."""
    r = run.result
    if args.trace:
        from .trace import chrome_trace, save

        meta = {k: r[k] for k in ("schedule", "pp", "dp", "microbatches", "virtual_stages",
                                  "recompute", "global_batch", "dtype")}
        save(args.trace, chrome_trace(run.records, meta))
        print(f"trace saved in {args.trace} (mpipipe report {args.trace})", flush=True)
    if args.timeline:
        from .plot import draw
        from .simulate import Event

        in_ms = [Event(e.rank, e.action, 1e3 * e.start, 1e3 * e.end) for e in run.events]
        chunks = run.plan.schedule.chunks
        name = (f"{r['schedule']}, P={r['pp']}, m={r['microbatches']}"
                + (f", V={chunks}" if chunks > 1 else "") + (", recompute" if r["recompute"] else ""))
        panels = [(in_ms, r["pp"], f"measured: {name}, bubble {r['bubble_fraction']:.3f} "
                   f"(median), this step {measured_bubble(in_ms, r['pp']):.3f}", "ms")]
        if args.compare:
            planned = run.replanned
            panels.insert(0, (planned.events, r["pp"], f"plan with each stage's measured mean "
                              f"action times: {name}, bubble {planned.bubble_fraction:.3f}", "ms"))
        draw(args.timeline, panels)
        print(f"timeline drawn in {args.timeline}", flush=True)


def measured_bubble(events, num_ranks):
    compute = [e for e in events if e.action.is_compute]
    span = max((e.end for e in compute), default=0.0)
    busy = sum(e.end - e.start for e in compute)
    return 1.0 - busy / (num_ranks * span) if span else 0.0


def needs_matplotlib():
    import importlib.util

    from .errors import ConfigError

    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError("--timeline needs matplotlib: pip install 'mpipipe[plot]'")


def check_writable(path):
    """Before any work: can `path` be written? (ConfigError saying why not)"""
    from .errors import ConfigError

    folder = os.path.dirname(os.path.abspath(path))
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"cannot write {path}: {folder} is not a writable folder")


def check_launcher(world_size):
    """Catch N separate one-rank jobs started by a launcher from another MPI library."""
    from .errors import ConfigError

    for name in LAUNCHER_SIZE_VARIABLES:
        told = os.environ.get(name, "")
        if told.isdigit() and int(told) != world_size:
            raise ConfigError(
                f"the launcher started {told} processes ({name}) but MPI sees {world_size}: "
                f"mpiexec and mpi4py come from different MPI libraries. Use the mpiexec of "
                f"the MPI that mpi4py loads (python -m mpi4py --mpi-lib-version tells which)")


def print_summary(result):
    lines = ["", "summary",
             f"  schedule      {result['schedule']}  (pp={result['pp']}, dp={result['dp']}, "
             f"{result['microbatches']} micro-batches of {result['microbatch_size']}"
             + (f", {result['virtual_stages']} chunks per rank" if result["virtual_stages"] > 1 else "")
             + (", recompute" if result["recompute"] else "") + ")",
             f"  device        {'; '.join(result['device'])}",
             f"  transport     {'; '.join(result['transport'])}",
             f"  step time     {result['step_time_s'] * 1e3:.2f} ms (median over steps 2..)",
             f"  bubble        {result['bubble_fraction']:.3f} measured, "
             f"{result['bubble_fraction_planned']:.3f} planned (equal stages, no comm)",
             f"  last step     bubble {result['bubble_fraction_last_step']:.3f} measured, "
             f"{result['bubble_fraction_last_step_planned']:.3f} planned with each stage's "
             f"measured action times",
             "  comm wait     " + " ".join(f"{w * 1e3:.2f}" for w in result["comm_wait_s"])
             + " ms per step (rank 0..)",
             "  peak stash    " + " ".join(map(str, result["peak_stash"]))
             + " micro-batches, " + " ".join(f"{b / 1024:.0f}" for b in result["peak_stash_bytes"])
             + " KiB (rank 0..)",
             f"  final loss    {result['final_loss']:.6f}"]
    if result["ranks_on_node"] > result["cores"]:
        lines.append(f"  note          {result['ranks_on_node']} ranks share {result['cores']} cores "
                     f"here: at most {result['cores'] / result['ranks_on_node']:.0%} of the "
                     f"rank-time can be compute")
    if "held_out_accuracy" in result:
        lines.append(f"  held out      loss {result['held_out_loss']:.4f}, "
                     f"{result['held_out_accuracy']:.1%} of answer characters right, "
                     f"{result['held_out_exact']:.1%} of samples entirely right")
    if "accuracy" in result:
        lines.append(f"  accuracy      {result['accuracy']:.3f} on the whole data set")
    if "check" in result:
        check = result["check"]
        verdict = "passed" if check["passed"] else "FAILED"
        lines.append(f"  check         {verdict}: losses rel. error {check['loss_rel_err']:.2e}, "
                     f"weights {check['weight_rel_err']:.2e} (tolerance {check['tolerance']:g}) "
                     f"against the single-process run")
        if not check["passed"] and result["dtype"] == "float32":
            lines.append("                float32 rounds differently in another summation order, "
                         "and training makes the differences grow step by step: "
                         "for an exact check use --dtype float64")
    lines += ["", "timeline of the last step (measured, pipeline of replica 0):", result["timeline"]]
    print("\n".join(lines), flush=True)
