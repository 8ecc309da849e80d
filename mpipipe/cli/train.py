"""`mpipipe train`: its options, and the command around run_training.

Everything a user of the command sees besides the training itself: the
options and their help, the progress bar, the summary, the pictures and the
trace, and above all what happens when something goes wrong. Every path ends
the whole job: a bad setting exits 2 on every rank with one message, a NaN
exits 3, a time-out (4) or an unexpected exception (1) aborts every rank
(MPI_Abort) after printing the failing rank's message once.

Every option defaults to None here: config.py holds the defaults, and --help
reads them from there.
"""

import argparse
import json
import sys
import time
import traceback
from dataclasses import fields

from mpipipe import config
from mpipipe.schedules import GENERATORS, default_chunks


def partition_arg(text):
    if text in config.PARTITIONS:
        return text
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use uniform, params, or block counts per stage like 3,3,2 (or auto)") from None


def default(name):
    """A setting's default as config.py sets it, for --help: 'default 256; gpt 64'."""
    per_model = {model: values[name] for model, values in config.MODEL_DEFAULTS.items()
                 if name in values}
    if per_model:
        mlp = per_model.pop("mlp")
        return f"default {mlp}" + "".join(f"; {m} {v}" for m, v in per_model.items())
    value = next(f.default for f in fields(config.TrainConfig) if f.name == name)
    return f"default {value}"


def add_parser(commands):
    """The `train` command's options, in groups, on the subparsers `commands`."""
    with_chunks = sorted(name for name in GENERATORS if default_chunks(name) > 1)
    train = commands.add_parser(
        "train", help="train a model with a pipeline schedule (run it under mpiexec)",
        description="Train a model (an MLP, or with --model gpt a small transformer) on "
        "embedded data or a text file, pipelined: each MPI rank holds one pipeline stage (or "
        f"several chunks, for {', '.join(with_chunks)}), and dp replicas of the pipeline "
        "average their gradients; with --tp every stage is itself split over tp ranks. Launch "
        "with e.g. `mpiexec -n 4 mpipipe train`: ranks = tp x pp x dp.",
        epilog="Rank layout: world rank = (dp_index * pp + pp_index) * tp + tp_index (see "
        "`mpipipe topology`).")
    add = train.add_argument_group("parallelism").add_argument
    add("--tp", type=int, help="tensor-parallel ranks per stage: every transformer block's "
        "heads and MLP split among them (Megatron-style; --model gpt only) "
        f"({default('tp')})")
    add("--pp", type=int, help="pipeline stages (default: all ranks / (tp x dp))")
    add("--dp", type=int, help=f"data-parallel replicas ({default('dp')})")
    add("--schedule", choices=config.SCHEDULES,
        help=f"pipeline schedule ({default('schedule')})")
    add("--schedule-file", metavar="FILE.csv", help="run the schedule in this file instead, in "
        "PyTorch's CSV format (compute only or compute + comms; `mpipipe export` writes one); "
        "micro-batches and chunks default to the file's")
    add("--memory-budget", type=int, metavar="N", help="instead of --schedule: the shortest of "
        "zb-h2, zbv, zb-h1, v-half and v-min whose stash fits N micro-batches' activations per "
        "rank (a whole stage's each; planned with equal F, B, W); exit 2 if none fits")
    add("--microbatches", type=int, help="micro-batches per replica and step (default "
        f"{config.default_microbatches('1f1b')}; {config.default_microbatches('naive')} for naive)")
    add("--chunks", "--virtual-stages", dest="chunks", type=int, help="chunks (virtual stages) "
        f"per rank, for {', '.join(with_chunks)} (default "
        + ", ".join(f"{name} {default_chunks(name)}" for name in with_chunks)
        + "; zbv and dualpipev take only 2; the others 1)")
    add("--recompute", action="store_true", default=None, help="activation recomputation: keep "
        "only each stage's input, redo its forward before the backward")
    add("--partition", type=partition_arg, help="uniform (equal layer counts), params (balanced "
        "parameter counts), auto (profile each block's F, B and W, then the cut the simulator "
        "finds fastest for the schedule) or explicit layers per stage, e.g. 3,3,2 "
        f"({default('partition')})")
    add = train.add_argument_group("model and data").add_argument
    add("--model", choices=config.MODELS, help="mlp: Linear + activation layers; gpt: a "
        "decoder-only transformer (embedding, --layers blocks, head) on character data "
        f"({default('model')})")
    add("--data", choices=config.DATA, help="spiral: 3-class spirals, cross-entropy; teacher: "
        "regression on a random teacher network, MSE; arithmetic: sums like 12+7=19 for the "
        f"gpt; text: --text FILE ({default('data')})")
    add("--text", metavar="FILE", help="train the gpt on this text file, character by "
        "character (--seq-len characters per sample)")
    add("--seq-len", type=int, help=f"text data: characters per sample ({default('seq_len')})")
    add("--heads", type=int, help=f"gpt: attention heads ({default('heads')})")
    add("--samples", type=int, help="data set size (default: the data set's own, spiral 3000, "
        "teacher 4096)")
    add("--input-dim", type=int, help=f"teacher data: input width ({default('input_dim')})")
    add("--output-dim", type=int, help=f"teacher data: output width ({default('output_dim')})")
    add("--layers", type=int, help=f"Linear layers, or gpt transformer blocks ({default('layers')})")
    add("--hidden", type=int, help=f"hidden width ({default('hidden')})")
    add("--activation", choices=config.ACTIVATIONS, help=f"({default('activation')})")
    add("--layernorm", action="store_true", default=None, help="LayerNorm after each activation")
    add("--last-activation", action="store_true", default=None,
        help="the last layer has the activation too (default: plain Linear)")
    add("--dtype", choices=config.DTYPES, help=default("dtype"))
    add = train.add_argument_group("optimisation").add_argument
    add("--global-batch", type=int, help="samples per step, all replicas together "
        f"({default('global_batch')})")
    add("--steps", type=int, help=f"training steps ({default('steps')})")
    add("--optimizer", choices=config.OPTIMIZERS, help=f"({default('optimizer')})")
    add("--lr", type=float, help="learning rate (default: "
        + ", ".join(f"{name} {lr:g}" for name, lr in config.DEFAULT_LR.items()) + ")")
    add("--seed", type=int, help=f"seeds weights and data ({default('seed')})")
    add = train.add_argument_group("run").add_argument
    add("--device", choices=config.DEVICES, help="where weights and activations live: cpu "
        "(NumPy), gpu (CuPy, the gpu extra; rank k of a node takes GPU k) or auto (a GPU if "
        f"CuPy sees one) ({default('device')})")
    add("--transport", choices=config.TRANSPORTS, help="gpu: hand device arrays to MPI "
        "(cuda-aware) or copy them through host buffers (staged); auto asks the MPI library "
        f"(MPIPIPE_CUDA_AWARE=0/1 overrides) ({default('transport')})")
    add("--wait", choices=config.WAIT_MODES, help="how a rank waits for a message: poll "
        "(yield, then sleep; frees the core) or block (MPI's Wait, which spins in MPICH) "
        f"({default('wait')})")
    add("--allreduce", choices=config.ALLREDUCE_STARTS, help="when a chunk's data-parallel "
        "all-reduce starts: overlap (as soon as its last weight gradient is done, while the "
        f"rank computes on) or end (after the whole step) ({default('allreduce')})")
    add("--timeout", type=float, help="fail, naming the message, if a wait exceeds this many "
        "seconds (default: wait forever)")
    add("--log-every", type=int, help="print the loss every N steps (default steps/20)")
    add("--no-nan-check", dest="nan_check", action="store_false", default=None, help="do not "
        "stop at the first NaN/Inf (the check looks at every activation and gradient)")
    add("--check", action="store_true", help="re-run the training in one process and fail "
        "unless losses and weights agree (float64: rel. error < 1e-9; float32: < 1e-4); a long "
        "run is followed for its first steps ("
        + ", ".join(f"{d} {n}" for d, n in config.CHECK_TRAJECTORY_STEPS.items())
        + "), then its last step is replayed from its own weights and optimizer state")
    add("--json", action="store_true", help="end with one line of JSON: the summary (and no "
        "progress bar)")
    add("--quiet", action="store_true", help="no banner, no per-step lines, no progress bar")
    add = train.add_argument_group("checkpoints").add_argument
    add("--checkpoint-dir", metavar="DIR", help="write checkpoints here (at the end, and every "
        "--checkpoint-every steps)")
    add("--checkpoint-every", type=int, metavar="K", help="also every K steps")
    add("--keep-checkpoints", type=int, metavar="N",
        help=f"complete checkpoints to keep, 0 for all ({default('keep_checkpoints')})")
    add("--resume", action="store_true", default=None, help="continue from the newest "
        "complete checkpoint in --checkpoint-dir (any pp/dp; the same model and optimizer)")
    add("--resume-step", type=int, metavar="S", help="continue from the checkpoint of step S "
        "instead (an older one, when the newest is damaged: the error names it)")
    add = train.add_argument_group("pictures and traces").add_argument
    add("--timeline", metavar="FILE.png", help="draw the last step as it ran (needs "
        "matplotlib: the plot extra)")
    add("--compare", action="store_true", help="with --timeline: draw the plan (the "
        "simulator, fed with each stage's measured mean action times) above the measurement")
    add("--html", metavar="FILE.html", help="write the last step as one self-contained web "
        "page: its plan and its run per rank, aligned, every idle slot with its cause (opens "
        "from disk, fetches nothing)")
    add("--trace", metavar="FILE.json", help="save every action of every step as a Chrome "
        "trace (open in ui.perfetto.dev; `mpipipe report FILE.json`)")
    train.set_defaults(func=cmd_train)
    return train


def cmd_train(args):
    from mpipipe.comm.launcher import abort, check_launcher
    from mpipipe.comm.p2p import WaitTimeout
    from mpipipe.errors import ConfigError, NonFiniteError, ScheduleError
    from .progress import Progress

    settings = config.TrainConfig.from_options(args)
    if not pick_gpu_before_mpi(settings.device):
        return 2
    from mpi4py import MPI      # initialises MPI

    from mpipipe.train import run_training

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    if args.nan_check is not False:   # the check names where NaN/Inf began; NumPy's warnings add noise
        import numpy

        numpy.seterr(over="ignore", invalid="ignore", divide="ignore", under="ignore")
    try:
        if args.schedule and args.schedule_file:
            raise ConfigError("give --schedule or --schedule-file, not both")
        if args.memory_budget is not None and (args.schedule or args.schedule_file or args.chunks):
            raise ConfigError("--memory-budget picks the schedule and its chunks itself: give it "
                              "or --schedule/--schedule-file/--chunks, not both")
        check_launcher(comm.Get_size())
        check_outputs(args, comm)
        resolved = config.with_defaults(settings, comm.Get_size())   # for the progress bar
        progress = Progress(resolved.steps, resolved.global_batch,
                            enabled=rank == 0 and not (args.quiet or args.json))
        run = run_training(settings, comm, log=None if args.quiet else progress.print,
                           check=args.check, on_step=progress.update,
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
        print_summary(run.summary)
        try:
            save_pictures(args, run)
        except OSError as error:
            print(f"mpipipe train: error: {error}", file=sys.stderr, flush=True)
            return 1
        if args.json:
            print(json.dumps(run.summary.to_json()), flush=True)
    return 0 if run.summary.check is None or run.summary.check.passed else 1


def pick_gpu_before_mpi(device):
    """--device gpu/auto: set this process's GPU from the launcher's local rank before MPI
    starts (Open MPI's smcuda and PSM2 want it so); run_training checks it against the
    node's communicator. False (after rank 0 said why) if the GPU cannot be had."""
    from mpipipe.comm.backend import select_device
    from mpipipe.comm.launcher import ABORT_GRACE_S, launcher_rank, local_rank
    from mpipipe.errors import ConfigError

    local = local_rank()
    if device == "cpu" or local is None:
        return True
    try:
        select_device(device, local)
    except ConfigError as error:
        if launcher_rank() in (None, 0):
            print(f"mpipipe train: error: {error}", file=sys.stderr, flush=True)
        else:       # Open MPI ends the job at the first failed rank: let rank 0's message out
            time.sleep(ABORT_GRACE_S)
        return False
    return True


def check_outputs(args, comm):
    """Before training, on every rank: can the pictures and the trace be written?"""
    from mpipipe.errors import ConfigError
    from mpipipe.measure.plot import check_writable, needs_matplotlib

    if args.compare and not args.timeline:
        raise ConfigError("--compare draws into the --timeline picture: give --timeline FILE.png")
    if args.timeline:
        needs_matplotlib()
    problem = None
    if comm.Get_rank() == 0:        # only rank 0 writes them
        for path in filter(None, (args.timeline, args.trace, args.html)):
            try:
                check_writable(path)
            except ConfigError as error:
                problem = str(error)
    problem = comm.bcast(problem, root=0)
    if problem:
        raise ConfigError(problem)


def save_html(path, run):
    """--html: the last step, planned with its own action times and as it ran (rank 0)."""
    from mpipipe.measure import html
    from mpipipe.plan.timeline import in_ms

    s = run.summary
    title = (f"mpipipe train: {s.schedule}, P={s.pp}, m={s.microbatches}"
             + (f", V={s.chunks}" if s.chunks > 1 else "") + (f", tp={s.tp}" if s.tp > 1 else "")
             + (f", dp={s.dp}" if s.dp > 1 else "") + f", step {s.steps}")
    facts = [f"the last step (step {s.steps}) of replica 0, one row per pipeline rank"
             + (", tensor rank 0 of each stage" if s.tp > 1 else "")
             + "; planned: the simulator with this step's measured action times",
             f"step time {s.step_time_s * 1e3:.2f} ms (median), partition {s.partition}, "
             f"{'; '.join(s.device)}"]
    html.write(path, html.page_data(
        title, run.setup.schedule, planned=run.resimulated.events, measured=in_ms(run.events),
        bubbles={"textbook": s.bubble_fraction_planned,
                 "replay": s.bubble_fraction_last_step_replay,
                 "measured": s.bubble_fraction_last_step},
        bytes_each=html.bytes_per_microbatch(s), facts=facts))


def save_pictures(args, run):
    """--trace and --timeline (rank 0, after training)."""
    from mpipipe.plan.timeline import Timeline, in_ms

    s = run.summary
    if args.trace:
        from mpipipe.measure.trace import chrome_trace, save

        meta = {k: getattr(s, k) for k in ("schedule", "tp", "pp", "dp", "microbatches", "chunks",
                                           "recompute", "global_batch", "dtype", "schedule_file")}
        save(args.trace, chrome_trace(run.records, meta))
        print(f"trace saved in {args.trace} (mpipipe report {args.trace})", flush=True)
    if args.html:
        save_html(args.html, run)
        print(f"web page saved in {args.html} (open it in a browser: every idle slot says "
              f"what it waited for)", flush=True)
    if args.timeline:
        from mpipipe.measure.plot import draw

        measured = Timeline.of_events(in_ms(run.events), s.pp)
        name = (f"{s.schedule}, P={s.pp}, m={s.microbatches}"
                + (f", V={s.chunks}" if s.chunks > 1 else "") + (", recompute" if s.recompute else ""))
        panels = [(measured.events, s.pp, f"measured: {name}, bubble {s.bubble_fraction:.3f} "
                   f"(median), this step {measured.bubble_fraction:.3f}", "ms")]
        if args.compare:
            planned = run.resimulated
            panels.insert(0, (planned.events, s.pp, f"plan with each stage's measured mean "
                              f"action times: {name}, bubble {planned.bubble_fraction:.3f}", "ms"))
        draw(args.timeline, panels)
        print(f"timeline drawn in {args.timeline}", flush=True)


def idle_lines(s):
    """Where each rank's idle time in the last step went (measure/idle.py), and its
    longest idle slot: the first place to look for the bubble's cause."""
    from mpipipe.measure.idle import CAUSES

    lines = []
    for rank, row in enumerate(s.idle_ms_last_step):
        parts = [f"{cause} {row[cause]:.2f}" for cause in CAUSES if row[cause] >= 0.005]
        lines.append(f"  {'idle' if rank == 0 else '':<13} rank {rank}: "
                     + (", ".join(parts) + " ms" if parts else "none"))
    slot = s.longest_idle
    if slot:
        why = f", waiting for {slot['waited_for']}" if slot["waited_for"] else ""
        lines.append(f"  {'longest idle':<13} rank {slot['rank']}, {slot['start']:.2f} .. "
                     f"{slot['end']:.2f} ms: {slot['cause']}{why}")
    return lines


def print_summary(s):
    """The summary block of `mpipipe train` (measure.Summary `s`)."""
    kib = lambda values: " ".join(f"{v / 1024:.0f}" for v in values)    # noqa: E731
    grid = (f"tp={s.tp}, " if s.tp > 1 else "") + f"pp={s.pp}, dp={s.dp}"
    lines = ["", "summary",
             f"  schedule      {s.schedule}  ({grid}, {s.microbatches} micro-batches "
             f"of {s.microbatch_size}" + (f", {s.chunks} chunks per rank" if s.chunks > 1 else "")
             + (", recompute" if s.recompute else "") + ")",
             f"  device        {'; '.join(s.device)}",
             f"  transport     {'; '.join(s.transport)}",
             f"  step time     {s.step_time_s * 1e3:.2f} ms (median over steps 2..)",
             f"  bubble        {s.bubble_fraction:.3f} measured, "
             f"{s.bubble_fraction_planned:.3f} planned (equal stages, no comm)",
             f"  last step     bubble {s.bubble_fraction_last_step:.3f} measured, "
             f"{s.bubble_fraction_last_step_planned:.3f} planned with each stage's measured "
             f"action times, {s.bubble_fraction_last_step_replay:.3f} replayed (each action as "
             f"long as it took, free messages: the floor)",
             *idle_lines(s),
             "  messages      " + " ".join(map(str, s.messages_per_step)) + " sends, "
             + kib(s.message_bytes_per_step) + " KiB per step (pipeline, rank 0..)",
             "  comm wait     " + " ".join(f"{w * 1e3:.2f}" for w in s.comm_wait_s)
             + " ms per step (rank 0..)"]
    if s.tp > 1:
        lines += ["  tensor        " + " ".join(map(str, s.tensor_allreduces_per_step))
                  + " all-reduces, " + kib(s.tensor_bytes_per_step) + " KiB, "
                  + " ".join(f"{w * 1e3:.2f}" for w in s.tensor_wait_s)
                  + " ms in them per step (rank 0..)"]
    lines += ["  peak stash    " + " ".join(map(str, s.peak_stash)) + " micro-batches, "
              + kib(s.peak_stash_bytes) + " KiB (rank 0..)",
              "  memory        " + kib(s.peak_memory_bytes) + " KiB at the peak (rank 0..): "
              + kib(s.weight_bytes) + " KiB weights, gradients, optimizer state + the stash",
              f"  final loss    {s.final_loss:.6f}"]
    if s.planned_span_s is not None:
        lines.append(f"  partition     {s.partition} (auto): planned {s.planned_span_s * 1e3:.2f} ms "
                     f"from a step's start to its last compute, bubble "
                     f"{s.planned_bubble_fraction:.3f}; measured {s.span_s * 1e3:.2f} ms, "
                     f"bubble {s.bubble_fraction:.3f} (medians)")
    if s.ranks_on_node > s.cores:
        lines.append(f"  note          {s.ranks_on_node} ranks share {s.cores} cores here: at "
                     f"most {s.cores / s.ranks_on_node:.0%} of the rank-time can be compute")
    if s.held_out_accuracy is not None:
        lines.append(f"  held out      loss {s.held_out_loss:.4f}, {s.held_out_accuracy:.1%} of "
                     f"answer characters right, {s.held_out_exact:.1%} of samples entirely right")
    if s.accuracy is not None:
        lines.append(f"  accuracy      {s.accuracy:.3f} on the whole data set")
    if s.check is not None:
        check = s.check
        lines.append(f"  check         {'passed' if check.passed else 'FAILED'}: losses rel. "
                     f"error {check.loss_rel_err:.2e}, weights {check.weight_rel_err:.2e} "
                     f"(tolerance {check.tolerance:g}) against the single-process run")
        if check.trajectory_steps:
            lines.append(f"                (its first {check.trajectory_steps} steps, then its last "
                         f"step replayed from the run's own weights and optimizer state: longer "
                         f"runs part by round-off, which training makes grow)")
        if not check.passed and s.dtype == "float32":
            lines.append("                float32 rounds differently in another summation order, "
                         "and training makes the differences grow step by step: "
                         "for an exact check use --dtype float64")
    lines += ["", "timeline of the last step (measured, pipeline of replica 0"
              + (", tensor rank 0 of each stage" if s.tp > 1 else "") + "):", s.timeline]
    print("\n".join(lines), flush=True)
