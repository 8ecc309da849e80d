"""The `mpipipe` command: train, simulate, export, topology, ...

    mpiexec -n 4 mpipipe train                     train on the embedded data, 1F1B on 4 ranks
    mpipipe simulate --schedule 1f1b --stages 4 --microbatches 8
    mpipipe simulate --schedule-file FILE.csv      a schedule in PyTorch's CSV format
    mpipipe export --schedule zbv --stages 4 --microbatches 8 FILE.csv
    mpipipe topology --tp 2 --pp 2 --dp 2

Each rank uses one BLAS thread unless OMP_NUM_THREADS or OPENBLAS_NUM_THREADS
says otherwise (see mpipipe/__init__.py). The heavier modules are imported
inside the commands, so `--help` and usage errors answer at once.
"""

import argparse
import json
import os
import sys
import textwrap
import time

from mpipipe.comm.launcher import ABORT_GRACE_S, launcher_rank
from .train import add_parser as add_train_parser

class Parser(argparse.ArgumentParser):
    """Usage errors are printed by one rank, not by all of them."""

    def error(self, message):
        if launcher_rank() in (None, 0):
            self.print_usage(sys.stderr)
            sys.stderr.write(f"{self.prog}: error: {message}\n")
        else:   # Open MPI ends the job at the first failed rank: let rank 0's message through
            time.sleep(ABORT_GRACE_S)
        sys.exit(2)


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser():
    from mpipipe.config import SCHEDULES, default_microbatches

    parser = Parser(prog="mpipipe", description="Pipeline-parallel training on MPI that you can "
                    "read, run, draw and measure.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    add_train_parser(commands)

    sim = commands.add_parser(
        "simulate", help="plan a schedule and draw its timeline (no MPI needed)",
        description="Simulate one step of a schedule with given action costs: the ASCII "
        "timeline, makespan, bubble fraction and peak stashed activations per rank.")
    sim.add_argument("--schedule", choices=SCHEDULES, help="the schedule to plan (default 1f1b)")
    sim.add_argument("--schedule-file", metavar="FILE.csv", help="plan the schedule in this "
                     "file instead, in PyTorch's CSV format (compute only, or compute + comms); "
                     "ranks, micro-batches and placement come from the file")
    sim.add_argument("--memory-budget", type=positive_int, metavar="N", help="instead of "
                     "--schedule: the shortest (under --costs) of zb-h2, zbv, zb-h1, v-half, "
                     "v-min whose stash fits N micro-batches' activations per rank")
    sim.add_argument("--stages", "--pp", type=positive_int, help="pipeline ranks P (default 4)")
    sim.add_argument("--microbatches", type=positive_int, help="micro-batches m (default "
                     f"{default_microbatches('1f1b')}; {default_microbatches('naive')} for naive)")
    sim.add_argument("--chunks", "--virtual-stages", dest="chunks", type=positive_int,
                     help="chunks (virtual stages) per rank (interleaved, looped-bfs: default 2)")
    sim.add_argument("--costs", default="", help="action costs of a rank's share of the model, "
                     "e.g. F=1,B=1,W=1 (the defaults); the fused backward BW costs B+W unless "
                     "BW= is given; a chunk costs 1/V; comm= adds a latency to every message; "
                     "tp_comm= the tensor-parallel all-reduces of one forward (the input "
                     "gradient pays as much again)")
    sim.add_argument("--versus-tp", action="store_true", help="also plan the same model on "
                     "the same ranks split by tensor parallelism instead (one stage, no bubble, "
                     "every forward and backward paying tp_comm), and say above which tp_comm "
                     "the pipeline is faster")
    sim.add_argument("--stage-costs", default="", help="a factor per stage (P x V of them) "
                     "multiplying its costs, e.g. 1,1,1,2 for a last stage twice as slow")
    sim.add_argument("--recompute", action="store_true", help="every backward first repeats "
                     "its forward (activation recomputation)")
    sim.add_argument("--width", type=positive_int, default=80, help="terminal columns (80)")
    sim.add_argument("--actions", action="store_true", help="also print every rank's action list")
    sim.add_argument("--json", action="store_true", help="print one JSON object instead")
    sim.add_argument("--timeline", metavar="FILE.png", help="also draw the plan as a PNG "
                     "(needs matplotlib: the plot extra)")
    sim.add_argument("--html", metavar="FILE.html", help="also write the plan as one "
                     "self-contained web page, every idle slot with its cause")
    sim.set_defaults(func=cmd_simulate)

    exp = commands.add_parser(
        "export", help="write a schedule as a PyTorch schedule file (CSV)",
        description="Write an mpipipe schedule in the CSV format of PyTorch's "
        "torch.distributed.pipelining (_load_csv): one row per rank, one cell per action, "
        "global stage numbers (2F0, 3I1, 0B4, 1SEND_F2, (0F7;7B3)OVERLAP_F_B). Compute only, "
        "or with --comms the lowered lists with their messages.")
    exp.add_argument("--schedule", default="1f1b", choices=SCHEDULES, help="(default 1f1b)")
    exp.add_argument("--stages", "--pp", type=positive_int, default=4, help="ranks P (default 4)")
    exp.add_argument("--microbatches", type=positive_int, help="micro-batches m (default "
                     f"{default_microbatches('1f1b')}; {default_microbatches('naive')} for naive)")
    exp.add_argument("--chunks", "--virtual-stages", dest="chunks", type=positive_int,
                     help="chunks (virtual stages) per rank, for the schedules that have them")
    exp.add_argument("--comms", action="store_true", help="also write the messages "
                     "(PyTorch's compute_comms format)")
    exp.add_argument("file", metavar="FILE.csv")
    exp.set_defaults(func=cmd_export)

    smp = commands.add_parser("sample", help="let a trained GPT write, from a checkpoint",
                              description="Rebuild the whole GPT from the newest checkpoint in "
                              "DIR (written by `mpipipe train --model gpt --checkpoint-dir DIR`) "
                              "and continue each prompt, one character at a time.")
    smp.add_argument("--checkpoint-dir", required=True, metavar="DIR")
    smp.add_argument("--prompt", action="append", help="text to continue (repeatable; default "
                     "for arithmetic: a few sums)")
    smp.add_argument("--length", type=positive_int, default=8, help="characters to add (8)")
    smp.add_argument("--temperature", type=float, default=0.0, help="0: always the likeliest "
                     "character (default); higher: more random")
    smp.add_argument("--seed", type=int, default=0)
    smp.set_defaults(func=cmd_sample)

    from .grade import EXIT_HELP, add_arguments as add_grade_arguments
    grd = commands.add_parser("grade", help="grade the course exercises in a folder",
                              description="Grade a student's copy of lessons/exercises: points "
                              "per exercise and what to fix first. The MPI exercise runs on 2 "
                              "ranks by itself.", epilog=EXIT_HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_grade_arguments(grd)
    grd.set_defaults(func=cmd_grade)

    rep = commands.add_parser("report", help="where the time went, from a saved trace",
                              description="Per rank: compute, waiting for messages, idle, "
                              "bubble fraction; and the slowest stage. Reads a trace written "
                              "by `mpipipe train --trace FILE.json`.")
    rep.add_argument("trace", metavar="FILE.json")
    rep.add_argument("--json", action="store_true", help="print one JSON object instead")
    rep.add_argument("--html", metavar="FILE.html", help="also write the trace's last step as "
                     "one self-contained web page, every idle slot with its cause")
    rep.set_defaults(func=cmd_report)

    top = commands.add_parser("topology", help="print the rank grid of a tp x pp x dp run",
                              description="Print which world rank holds which stage (and which "
                              "tensor shard of it) of which replica, and the communicators "
                              "Comm.Split builds.")
    top.add_argument("--tp", type=positive_int, default=1, help="tensor-parallel ranks per stage "
                     "(default 1)")
    top.add_argument("--pp", type=positive_int, default=4, help="pipeline stages (default 4)")
    top.add_argument("--dp", type=positive_int, default=2, help="data-parallel replicas (default 2)")
    top.set_defaults(func=cmd_topology)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["grade"]:   # exercise names may follow its options: its own parser reads
        from .grade import main as grade_main   # them intermixed (the subparser is its help)

        return grade_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:         # `mpipipe simulate ... | head`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def cmd_simulate(args):
    from dataclasses import replace

    from mpipipe.config import default_microbatches
    from mpipipe.errors import ConfigError, ScheduleError
    from mpipipe.measure.plot import check_writable, needs_matplotlib
    from mpipipe.plan.memory_budget import pick_schedule
    from mpipipe.plan.simulate import Costs, simulate, steady_state, tensor_or_pipeline
    from mpipipe.plan.timeline import render
    from mpipipe.schedules import (BUBBLE_FORMULAS, PEAK_MEMORY_FORMULAS, schedule_from_file, validate,
                                   validated_schedule)

    found = None
    try:
        if args.schedule_file:
            if args.schedule:
                raise ConfigError("give --schedule or --schedule-file, not both")
            found = schedule_from_file(args.schedule_file, args.stages, args.microbatches,
                                       args.chunks)
            schedule = validate(found.schedule)
        elif args.memory_budget is not None:
            if args.schedule or args.chunks:
                raise ConfigError("--memory-budget picks the schedule and its chunks itself: "
                                  "give it or --schedule/--chunks, not both")
            m = args.microbatches or default_microbatches("zbv")
            name = pick_schedule(args.stages or 4, m, args.memory_budget, Costs.parse(args.costs))
            schedule = validated_schedule(name, args.stages or 4, m)
        else:
            m = args.microbatches or default_microbatches(args.schedule or "1f1b")
            schedule = validated_schedule(args.schedule or "1f1b", args.stages or 4, m,
                                          args.chunks)
        costs = replace(Costs.parse(args.costs), recompute=args.recompute,
                        stage_factors=parse_stage_factors(args.stage_costs, schedule.num_stages))
        if args.timeline:
            needs_matplotlib()
            check_writable(args.timeline)
        if args.html:
            check_writable(args.html)
    except (ConfigError, ScheduleError, ValueError) as error:
        print(f"mpipipe simulate: error: {error}", file=sys.stderr)
        return 2
    name, P, m, V = schedule.name, schedule.num_ranks, schedule.num_microbatches, schedule.chunks
    timeline = simulate(schedule, costs)
    steady_time, steady_bubble = steady_state(schedule, costs)
    formula = None if found else BUBBLE_FORMULAS.get(name)
    plain = (costs.comm == 0 and costs.tp_comm == 0 and not costs.recompute
             and not costs.stage_factors)
    textbook = formula(P, m, V, costs) if formula and plain else None
    ideal = max(timeline.busy)       # the busiest rank's work, with no waiting at all
    peak_formula = None if found or m < P else PEAK_MEMORY_FORMULAS.get(name)
    paper_peak = peak_formula(P) if peak_formula else None
    summary = {"schedule": name, "stages": P, "chunks": V, "microbatches": m,
               "costs": {"F": costs.F, "B": costs.B, "W": costs.W,
                         "BW": costs.of("BW") - costs.tp_comm, "comm": costs.comm,
                         "tp_comm": costs.tp_comm, "recompute": costs.recompute},
               "makespan": timeline.makespan, "bubble_fraction": timeline.bubble_fraction,
               "bubble_per_rank": timeline.makespan - ideal,
               "bubble_fraction_formula": textbook,
               "steady_state_step": steady_time, "steady_state_bubble_fraction": steady_bubble,
               "peak_stash": timeline.peak_stash,
               "peak_memory_microbatches": max(timeline.peak_stash, default=0) / V,
               "peak_memory_formula": paper_peak}
    versus = tensor_or_pipeline(schedule, costs) if args.versus_tp else None
    if versus:
        summary["versus_tp"] = {"pipeline_step": versus.pipeline.makespan,
                                "tensor_step": versus.tensor.makespan,
                                "break_even_tp_comm": versus.break_even_tp_comm}
    if found:
        summary["schedule_file"] = {"path": found.path, "flavour": found.flavour,
                                    "placement": found.placement,
                                    "stage_map": schedule.stage_map, "notes": found.notes}
    if args.html:
        from mpipipe.measure import html

        html.write(args.html, html.page_data(
            f"mpipipe simulate: {name}, P={P}, m={m}" + (f", V={V}" if V > 1 else ""),
            schedule, planned=timeline.events, unit="time units",
            bubbles={"planned": timeline.bubble_fraction, "textbook": textbook},
            facts=[f"costs F={costs.F:g} B={costs.B:g} W={costs.W:g}, comm={costs.comm:g}; "
                   f"makespan {timeline.makespan:g}"]))
    if args.json:
        if args.actions:
            summary["actions"] = [[str(a) for a in program] for program in schedule.programs]
        if args.timeline:
            draw_plan(args, schedule, timeline, P, m, V)
        print(json.dumps(summary))
        return 0
    if found:
        print("\n".join(found.describe()))
    chunks = f" x {V} chunks" if V > 1 else ""
    header = (f"{name}: {P} ranks{chunks}, {m} micro-batches, costs F={costs.F:g} "
              f"B={costs.B:g} W={costs.W:g} (BW={costs.of('BW') - costs.tp_comm:g}), "
              f"comm={costs.comm:g}" + (f", tp_comm={costs.tp_comm:g}" if costs.tp_comm else "")
              + (", recompute" if costs.recompute else ""))
    print("\n".join(textwrap.wrap(header, args.width, subsequent_indent="  ")))
    print(render(timeline.events, P, timeline.makespan, width=args.width))
    print(f"makespan         {timeline.makespan:g}   (one flushed step; the busiest rank's "
          f"work alone is {ideal:g})")
    line = f"bubble fraction  {timeline.bubble_fraction:.4f}"
    if textbook is not None:
        line += f"   (textbook, equal stages, no comm: {textbook:.4f})"
    print(line)
    print(f"steady state     {steady_time:g} per step, bubble {steady_bubble:.4f}   "
          f"(steps back to back, no flush)")
    print(f"peak stash       {' '.join(map(str, timeline.peak_stash))} "
          f"{'chunk-' if V > 1 else ''}micro-batches (rank 0..{P - 1})")
    line = f"peak memory      {summary['peak_memory_microbatches']:g} micro-batches' activations, fullest rank"
    if paper_peak is not None:
        line += f"  (paper: {paper_peak:g})"
    print(line)
    if versus:
        print_versus(versus, costs)
    if args.actions:
        print(schedule)
    if args.timeline:
        draw_plan(args, schedule, timeline, P, m, V)
        print(f"timeline drawn in {args.timeline}")
    return 0


def print_versus(versus, costs):
    """`simulate --versus-tp`: the pipeline's step against tensor parallelism's."""
    N, m, even = versus.ranks, versus.microbatches, versus.break_even_tp_comm
    faster = "pipeline" if versus.pipeline.makespan < versus.tensor.makespan else "tensor"
    print(f"\nthe same model on {N} ranks, {m} micro-batches, each rank computing 1/{N} of it:")
    print(f"  pipeline  pp={N}: step {versus.pipeline.makespan:g} (bubble "
          f"{versus.pipeline.bubble_fraction:.4f}, messages of comm={costs.comm:g})")
    print(f"  tensor    tp={N}: step {versus.tensor.makespan:g} (no bubble; each forward and "
          f"each backward pays tp_comm={costs.tp_comm:g})")
    print(f"  -> the {faster} is faster here; the pipeline wins once one forward's tensor "
          f"all-reduces (tp_comm) cost more than {even:.4g} ({even / costs.F:.1%} of F)")


def draw_plan(args, schedule, timeline, P, m, V):
    from mpipipe.measure.plot import draw

    title = (f"plan: {schedule.name}, P={P}, m={m}" + (f", V={V}" if V > 1 else "")
             + f", bubble {timeline.bubble_fraction:.3f}")
    draw(args.timeline, [(timeline.events, P, title, "time units")])


def cmd_export(args):
    from mpipipe.config import default_microbatches
    from mpipipe.errors import ConfigError, ScheduleError
    from mpipipe.schedules import validated_schedule, write_schedule_file

    try:
        m = args.microbatches or default_microbatches(args.schedule)
        schedule = validated_schedule(args.schedule, args.stages, m, args.chunks)
        write_schedule_file(schedule, args.file, comms=args.comms)
    except (ConfigError, ScheduleError, OSError) as error:
        print(f"mpipipe export: error: {error}", file=sys.stderr)
        return 2
    flavour = "compute_comms" if args.comms else "compute_only"
    print(f"{args.file}: {args.schedule}, {args.stages} ranks x {schedule.chunks} chunk(s), "
          f"{m} micro-batches, {flavour.replace('_', ' + ' if args.comms else ' ')} (PyTorch: "
          f"schedule._load_csv({args.file!r}, format={flavour!r}); mpipipe: --schedule-file)")
    return 0


def cmd_sample(args):
    from mpipipe.errors import ConfigError
    from mpipipe.nn.data import ARITHMETIC_VOCAB
    from .sample import generate, load_model

    try:
        model, spec, vocab = load_model(args.checkpoint_dir)
        arithmetic = vocab == ARITHMETIC_VOCAB     # the embedded sums' characters, exactly
        prompts = args.prompt or (["12+34=", "7+58=", "99+1=", "40+40="] if arithmetic
                                  else [vocab[0]])
        stop = "." if arithmetic else None
        for prompt in prompts:
            print(generate(model, spec, vocab, prompt, args.length, args.temperature, args.seed,
                           stop))
    except (ConfigError, OSError) as error:
        print(f"mpipipe sample: error: {error}", file=sys.stderr)
        return 2
    return 0


def cmd_grade(args):
    from .grade import run

    return run(args)


def cmd_report(args):
    from mpipipe.measure.report import format_report, summarise
    from mpipipe.measure.trace import load

    from mpipipe.errors import ConfigError, ScheduleError

    try:
        trace = load(args.trace)
        summary = summarise(trace)
    except (OSError, ValueError, KeyError) as error:
        print(f"mpipipe report: error: cannot read {args.trace}: {error}", file=sys.stderr)
        return 2
    if args.html:
        from mpipipe.measure import html
        from mpipipe.measure.report import last_step

        try:
            schedule, events = last_step(trace)
            html.write(args.html, html.page_data(
                f"mpipipe report: {args.trace}, its last step", schedule, measured=events,
                bubbles={"measured": html.measured_bubble(events, schedule.num_ranks)},
                facts=[f"from the trace {args.trace}: replica 0, one row per pipeline rank"]))
        except (OSError, ConfigError, ScheduleError, ValueError, KeyError) as error:
            print(f"mpipipe report: error: --html {args.html}: {error}", file=sys.stderr)
            return 2
    print(json.dumps(summary) if args.json else format_report(summary))
    return 0


def parse_stage_factors(text, num_stages):
    if not text:
        return ()
    try:
        factors = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--stage-costs {text!r}: expected numbers like 1,1,1,2") from None
    if len(factors) != num_stages or min(factors) <= 0:
        raise ValueError(f"--stage-costs needs {num_stages} positive factors, one per stage")
    return factors


def cmd_topology(args):
    from mpipipe.comm.topology import grid

    print(grid(args.pp, args.dp, args.tp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
