"""Lesson 10: tensor or pipeline parallelism? The same GPT on 2 ranks, split both ways.

    .venv/bin/mpiexec -n 2 .venv/bin/python lessons/10_tensor_or_pipeline.py

Tensor parallelism (tp = 2) gives each rank half of every block: half of the
attention heads, half of the MLP's hidden units (mpipipe/nn/tensor_parallel.py).
The ranks all-reduce inside every block: g after attention and after the MLP
going forward, f before each going backward, 4 per block and micro-batch.
Pipeline parallelism (pp = 2) gives each rank whole blocks and sends one
activation forward and one gradient back per micro-batch across the cut.

Both runs train the same model on the same batches, checked against one
process. The lesson counts every message and all-reduce, compares each count
with its formula (lessons/_checks.py: a disagreement prints WRONG and exits 1;
MPIPIPE_LESSON_PLANT=messages plants one), doubles the micro-batches and then
the layers to show how each kind of talk grows, and ends with the simulator's
answer to "when would the pipeline be faster?".
"""

import os
from statistics import mean

from _checks import Checks
from _common import OUT, WORLD, main_guard, need_ranks, say
from mpipipe.config import TrainConfig
from mpipipe.schedules import validated_schedule
from mpipipe.plan.simulate import Costs, allreduce_time, simulate, tensor_or_pipeline
from mpipipe.train import run_training

WIDTH, HEADS, BATCH = 64, 4, 32
GPT = dict(model="gpt", hidden=WIDTH, heads=HEADS, global_batch=BATCH, steps=4,
           dtype="float64", optimizer="adam", samples=512, schedule="1f1b")


def train(split, microbatches, layers):
    """One run on the 2 ranks: split "tp" or "pp"; (measure.Summary, rank 0's Run)."""
    grid = dict(tp=2, pp=1) if split == "tp" else dict(tp=1, pp=2)
    run = run_training(TrainConfig(microbatches=microbatches, layers=layers, **grid, **GPT),
                       WORLD, check=True)
    return run.summary, run


def expected(split, m, layers, sample_bytes):
    """(talks per step and rank, bytes per step and rank): the formulas."""
    if split == "tp":        # every rank holds every block: 4 all-reduces a block and micro-batch
        talks = 4 * layers * m
    else:                    # one cut: each rank sends one message per micro-batch across it
        talks = m
    return talks, talks * (BATCH // m) * sample_bytes


def main():
    need_ranks(2, exactly=2)
    checks, rows, runs = Checks(), [], {}
    for m, layers in ((4, 2), (8, 2), (4, 4)):
        cells = []
        for split in ("tp", "pp"):
            s, run = train(split, m, layers)
            runs[(split, m, layers)] = (s, run)
            label = {"split": split, "m": m, "L": layers}
            talks_measured = (s.tensor_allreduces_per_step if split == "tp"
                              else s.messages_per_step)
            bytes_measured = (s.tensor_bytes_per_step if split == "tp"
                              else s.message_bytes_per_step)
            talks, nbytes = expected(split, m, layers, run.setup.spec.seq_len * WIDTH * 8)
            for rank in range(2):
                checks.exact("messages", {**label, "rank": rank, "count": "talks"},
                             talks_measured[rank], talks)
                checks.exact("messages", {**label, "rank": rank, "count": "bytes"},
                             bytes_measured[rank], nbytes)
            checks.equivalence(label, s)
            each = bytes_measured[0] / max(1, talks_measured[0]) / 1024
            cells.append(f"{talks_measured[0]:>3} x {each:4.1f} KiB = "
                         f"{bytes_measured[0] / 1024:6.1f} KiB")
        rows.append(f"  {f'm = {m}, L = {layers}':<18} {cells[0]:<34} {cells[1]}")
    tp, tp_run = runs[("tp", 4, 2)]
    pp, pp_run = runs[("pp", 4, 2)]
    kib = lambda values: " / ".join(f"{v / 1024:.0f}" for v in values) + " KiB"   # noqa: E731
    row = lambda label, left, right="": f"{label:<20} {left:<34} {right}"        # noqa: E731
    same = lambda s: "the same training" if s.check.passed else "NOT the same training"  # noqa
    say(f"The same GPT (width {WIDTH}, {HEADS} heads, global batch {BATCH}, float64) on 2 ranks, "
        "two ways:", "",
        row("", "tensor parallel, tp = 2", "pipeline, pp = 2"),
        row("what it splits", "every block: 2 of 4 heads and", f"whole blocks: {pp.partition} "
            "per stage"),
        row("", "128 of 256 MLP units per rank", "(the embedding and the head count)"),
        row("how it talks", "Allreduce inside every block,", "Send/Recv at the cut,"),
        row("", "4 per block and micro-batch", "1 per micro-batch and rank"),
        "talk per step and rank, measured (checked below against the formulas: 4 L m",
        "all-reduces, m sends, each of one micro-batch's activation):",
        *rows,
        row("step time", f"{tp.step_time_s * 1e3:.1f} ms", f"{pp.step_time_s * 1e3:.1f} ms"),
        row("bubble", f"{tp.bubble_fraction:.3f} (one stage: none)",
            f"{pp.bubble_fraction:.3f} (planned {pp.bubble_fraction_planned:.3f})"),
        row("waiting for talk", f"{mean(tp.tensor_wait_s) * 1e3:.1f} ms in all-reduces",
            f"{mean(pp.comm_wait_s) * 1e3:.1f} ms for messages (per step)"),
        row("memory per rank", kib(tp.peak_memory_bytes), kib(pp.peak_memory_bytes)
            + " (rank 0 / 1)"),
        row("  activations", kib(tp.peak_stash_bytes), kib(pp.peak_stash_bytes) + " at the peak"),
        row("what stalls it", "a slow link: every block waits", "too few micro-batches:"),
        row("", "for its all-reduces", "the bubble (P-1)/(m+P-1)"),
        row("one process?", same(tp), same(pp)), "",
        "read it: doubling m doubles both counts and leaves the bytes alone (the same batch in",
        "smaller pieces); doubling the layers doubles tensor parallelism's talk and leaves the",
        "pipeline's alone: it talks only at the cut, tensor parallelism inside every layer.")
    if WORLD.Get_rank() == 0:
        break_even(tp_run, pp_run, checks)
    say("")
    checks.finish()


def break_even(tp_run, pp_run, checks):
    """The simulator with this machine's measured times: when would pp = 2 beat tp = 2?"""
    compute = {}
    for kind in ("F", "BW"):
        compute[kind] = mean(e.end - e.start - e.collective for e in tp_run.events
                             if e.action.kind == kind)
    talk = mean(e.collective for e in tp_run.events if e.action.kind == "F")
    m = tp_run.setup.config.microbatches
    costs = Costs(F=compute["F"], B=compute["BW"] / 2, W=compute["BW"] / 2, tp_comm=talk)
    versus = tensor_or_pipeline(validated_schedule("1f1b", 2, m), costs)
    even = versus.break_even_tp_comm
    spec = tp_run.setup.spec
    nbytes = tp_run.setup.microbatch_size * spec.seq_len * WIDTH * 8
    # a forward of 2 blocks makes 4 all-reduces; solve 4 x allreduce_time(bandwidth) = even
    latency = 5e-6
    per_allreduce = even / (2 * spec.layers)
    budget = per_allreduce / 2 - latency            # a ring of 2: 2 rounds of latency + bytes/2
    link = (nbytes / 2 / budget) if budget > 0 else None
    if link:   # the ring all-reduce at that bandwidth, 2 L of them: the break-even again
        checks.close("formula", {"break-even": "2 L x allreduce_time"},
                     2 * spec.layers * allreduce_time(nbytes, 2, latency, link), even, 1e-12)
    faster = "pipeline" if pp_run.summary.step_time_s < tp_run.summary.step_time_s else "tensor"
    say("", f"when would the pipeline be faster? (simulated, 1F1B, m = {m}, with the times "
        "measured above)",
        f"  a forward's compute {compute['F'] * 1e3:.3f} ms, its tensor all-reduces "
        f"{talk * 1e3:.3f} ms here",
        f"  pp = 2 wins once a forward's all-reduces take more than {even * 1e3:.3f} ms "
        f"({even / compute['F']:.0%} of its compute)",
        f"  = {2 * spec.layers} all-reduces of {nbytes / 1024:.0f} KiB each: on a link of 5 us "
        "latency, "
        + (f"one slower than {link / 1e9:.2f} GB/s" if link else "at any bandwidth"),
        f"  with {talk * 1e3:.3f} ms here the simulator expects the "
        f"{'pipeline' if talk > even else 'tensor split'} to be faster;",
        f"  measured, the {faster} was: pp {pp_run.summary.step_time_s * 1e3:.1f} ms, "
        f"tp {tp_run.summary.step_time_s * 1e3:.1f} ms per step")
    # The simulator above took a tensor rank's forward as a pipeline stage's: half the
    # model's compute either way. Measure the pipeline's own stages instead.
    stage = {kind: mean(e.end - e.start for e in pp_run.events if e.action.kind == kind)
             for kind in ("F", "BW")}
    own = Costs(F=stage["F"], B=stage["BW"] / 2, W=stage["BW"] / 2)
    pipeline_plan = simulate(validated_schedule("1f1b", 2, m), own)
    say(f"  why: a pipeline stage's forward took {stage['F'] * 1e3:.3f} ms here, a tensor "
        f"rank's {compute['F'] * 1e3:.3f} ms: the",
        "  tensor split does not halve the work (LayerNorm, the embedding and the head run "
        "whole on",
        "  both ranks; half-width matrices use a core less well). With the pipeline's own "
        "times the",
        f"  simulator plans pp {pipeline_plan.makespan * 1e3:.2f} ms against tp "
        f"{versus.tensor.makespan * 1e3:.2f} ms of compute and talk: the "
        f"{'pipeline' if pipeline_plan.makespan < versus.tensor.makespan else 'tensor split'}"
        " is faster.")
    say(draw_plans(versus.tensor, pipeline_plan, tp_run, pp_run))


def draw_plans(tensor_plan, pipeline_plan, tp_run, pp_run):
    """Each split planned with its own measured times, above the step as it ran."""
    from mpipipe.measure.plot import draw
    from mpipipe.plan.timeline import in_ms

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "no picture: matplotlib is missing (.venv/bin/pip install -e '.[plot]')"
    path = f"{OUT}/10_tensor_or_pipeline.png"
    os.makedirs(OUT, exist_ok=True)
    draw(path, [
        (in_ms(tensor_plan.events), 1, f"plan, tp = 2 (a rank's share of the compute, then its "
         f"all-reduces): {tensor_plan.makespan * 1e3:.2f} ms", "ms"),
        (in_ms(tp_run.events), 1, f"measured, tp = 2, tensor rank 0, the last step "
         f"(all-reduces dark); the median step: {tp_run.summary.step_time_s * 1e3:.2f} ms", "ms"),
        (in_ms(pipeline_plan.events), 2, f"plan, pp = 2 (each stage's measured F and BW): "
         f"{pipeline_plan.makespan * 1e3:.2f} ms", "ms"),
        (in_ms(pp_run.events), 2, f"measured, pp = 2, the last step; the median step: "
         f"{pp_run.summary.step_time_s * 1e3:.2f} ms", "ms")])
    return (f"picture: {os.path.relpath(path)} (each split's plan above its last step as it ran; "
            f"the step times printed are medians, as the panels' titles say)")

if __name__ == "__main__":
    main_guard(main)
