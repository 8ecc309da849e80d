"""Lesson 11: tensor x pipeline x data parallelism for real, a miniature of GPT-3's layout.

    .venv/bin/mpiexec -n 8 .venv/bin/python lessons/11_three_d.py

GPT-3 175B was trained on 1024 GPUs as tensor parallel 8 (inside a node) x
pipeline 16 (across nodes) x data parallel 8 (lesson 9 did its pipeline
arithmetic). Here 8 ranks run the same layout at 2 x 2 x 2: each stage of the
GPT is split over a tensor group of 2 ranks, the 2 stages form a pipeline,
and 2 such pipelines average their gradients. The ranks are laid out as
mpipipe/comm/topology.py says (world rank = (dp_index * pp + pp_index) * tp +
tp_index) and split with Comm.Split into their three communicators.

The lesson prints the grid, what each rank's communicators hold, and for each
rank what it said per step (tensor all-reduces, pipeline messages, the
data-parallel all-reduce), each checked against its formula (lessons/_checks.py:
a mismatch prints WRONG and exits 1; MPIPIPE_LESSON_PLANT=messages plants one). The training is checked against one process. Then the
same formulas, fed GPT-3's sizes, give what each GPU of the real run says per
step: the reason tensor parallelism stays inside a node.
"""

import os

from _checks import Checks
from _common import OUT, WORLD, main_guard, need_ranks, say
from mpipipe.config import TrainConfig
from mpipipe.comm.topology import communicators, grid
from mpipipe.train import run_training

TP, PP, DP = 2, 2, 2
WIDTH, BATCH, MICRO = 32, 16, 4


def talk_per_step(width, tokens, sample_batch, m, blocks, neighbours, params, number_bytes):
    """Per rank and step: (tensor all-reduces, their bytes), (pipeline sends, their bytes),
    data-parallel all-reduce bytes. One activation is sample_batch x tokens x width."""
    activation = sample_batch * tokens * width * number_bytes
    tensor = 4 * blocks * m                 # g, g forward; f, f backward, per block and micro-batch
    sends = neighbours * m                  # one per micro-batch to each neighbouring stage
    return (tensor, tensor * activation), (sends, sends * activation), params * number_bytes


def params_of_a_rank(width, vocab, tokens, tp, blocks, embedding, head):
    """Parameters a tensor rank holds: its share of each block, the whole embedding/head."""
    h = width
    shard = (h * 3 * h + 3 * h) // tp + (h * h) // tp + h        # q/k/v; out rows; out bias
    shard += (h * 4 * h + 4 * h) // tp + (4 * h * h) // tp + h   # MLP up; down rows; down bias
    shard += 2 * 2 * h                                           # two LayerNorms, replicated
    total = blocks * shard
    total += (vocab * h + tokens * h) if embedding else 0
    total += (2 * h + h * vocab + vocab) if head else 0
    return total


def main():
    need_ranks(TP * PP * DP, exactly=TP * PP * DP)
    config = TrainConfig(model="gpt", tp=TP, pp=PP, dp=DP, layers=2, hidden=WIDTH, heads=2,
                         partition=[2, 2], global_batch=BATCH, microbatches=MICRO, steps=3,
                         samples=256, dtype="float64", optimizer="adam", schedule="1f1b")
    run = run_training(config, WORLD, check=True)
    g, s, setup = run.topology, run.summary, run.setup
    mine = {"rank": g.world_rank, "tp": g.tp_index, "pp": g.pp_index, "dp": g.dp_index,
            "tensor": g.tensor.allgather(g.world_rank), "pipe": g.pipe.allgather(g.world_rank),
            "data": g.data.allgather(g.world_rank),
            "params": sum(ch.layers.flat_params.size for ch in run.chunks)}
    ranks = WORLD.gather(mine, root=0)
    checks = Checks()
    if WORLD.Get_rank() == 0:
        report(ranks, s, setup, checks)
        say(draw_step(run), "")
    checks.finish()


def draw_step(run):
    """Replica 0's last step, tensor rank 0 of each stage: its replay above it as it ran,
    the part of each action spent in tensor all-reduces dark."""
    from mpipipe.measure.plot import draw
    from mpipipe.plan.simulate import replay
    from mpipipe.schedules.actions import COMPUTE
    from mpipipe.plan.timeline import Timeline, in_ms

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "no picture: matplotlib is missing (.venv/bin/pip install -e '.[plot]')"
    measured = in_ms(run.events)
    replayed = replay(run.setup.schedule, measured)
    busy = sum(e.end - e.start for e in measured if e.action.kind in COMPUTE)
    all_reduce = sum(e.collective for e in measured) / busy
    path = f"{OUT}/11_three_d.png"
    os.makedirs(OUT, exist_ok=True)
    draw(path, [
        (replayed.events, PP, "replay of the last step (each action as long as measured, "
         f"all-reduces included; free messages): bubble {replayed.bubble_fraction:.3f}", "ms"),
        (measured, PP, f"measured, replica 0, tensor rank 0 of each stage: bubble "
         f"{Timeline.of_events(measured, PP).bubble_fraction:.3f}; dark: in tensor all-reduces "
         f"({all_reduce:.0%} of the actions' time)", "ms")])
    return (f"picture: {os.path.relpath(path)} (the last step of the 2 x 2 x 2 grid, replay above, "
            f"measurement below; {all_reduce:.0%} of its actions' time in tensor all-reduces)")


def report(ranks, s, setup, checks):
    """Rank 0: every rank's figures against their formulas, the table, GPT-3's arithmetic."""
    vocab, tokens = setup.spec.input_dim, setup.spec.seq_len
    groups, rows = communicators(TP, PP, DP), []
    for r in ranks:
        label = {"rank": r["rank"]}
        for kind in ("tensor", "pipe", "data"):      # 1: the group the layout formula names
            checks.exact("formula", {**label, "communicator": kind},
                         int(sorted(r[kind]) in groups[kind]), 1)
        first, last = r["pp"] == 0, r["pp"] == PP - 1
        formula = talk_per_step(WIDTH, tokens, BATCH // (DP * MICRO), MICRO, 1, 1,
                                params_of_a_rank(WIDTH, vocab, tokens, TP, 1, first, last), 8)
        (tensor, tensor_bytes), (sends, send_bytes), data_bytes = formula
        if r["dp"] == 0:          # the summary's per-rank figures are replica 0's
            i = r["tp"] + TP * r["pp"]
            for what, measured, expected in (
                    ("tensor all-reduces", s.tensor_allreduces_per_step[i], tensor),
                    ("tensor bytes", s.tensor_bytes_per_step[i], tensor_bytes),
                    ("pipeline sends", s.messages_per_step[i], sends),
                    ("pipeline bytes", s.message_bytes_per_step[i], send_bytes)):
                checks.exact("messages", {**label, "count": what}, measured, expected)
        checks.exact("memory", {**label, "count": "gradient bytes"}, r["params"] * 8, data_bytes)
        members = [" ".join(map(str, r[kind])) for kind in ("tensor", "pipe", "data")]
        rows.append(f"  {r['rank']:>4} {r['tp']:>5} {r['pp']:>5} {r['dp']:>7}  {members[0]:<7} "
                    f"{members[1]:<8} {members[2]:<7} {tensor:>3} x "
                    f"{tensor_bytes // tensor / 1024:.1f} KiB      {sends:>2} x "
                    f"{send_bytes // sends / 1024:.1f} KiB    {data_bytes / 1024:.1f} KiB")
    say(grid(PP, DP, TP), "",
        "each rank: where it sits, its communicators as Comm.Split made them, and what it says",
        "per step, each figure measured and checked against its formula:",
        "                           communicators            per step",
        "  rank shard stage replica  tensor  pipeline data    tensor all-reduces  "
        "pipeline sends  gradients",
        *rows, "",
        f"the GPT (width {WIDTH}, blocks per stage {setup.partition}), {s.steps} steps, "
        f"{MICRO} micro-batches of {s.microbatch_size} per replica:",
        f"final loss {s.final_loss:.6f}; against one process: losses differ by "
        f"{s.check.loss_rel_err:.1e}, weights by {s.check.weight_rel_err:.1e}", "")
    checks.equivalence({"grid": f"tp={TP} x pp={PP} x dp={DP}"}, s)
    gpt3()
    say("")


def gpt3():
    """The same formulas with GPT-3 175B's sizes (Megatron-LM's 1024-GPU run, fp16)."""
    width, tokens, layers, tp, pp, dp, batch = 12288, 2048, 96, 8, 16, 8, 1536
    m, blocks = batch // dp, layers // pp             # micro-batch 1: m = 192 per pipeline
    params = blocks * 12 * width * width // tp        # a block: 4 h^2 attention + 8 h^2 MLP
    (tensor, tensor_bytes), (sends, send_bytes), grads = talk_per_step(
        width, tokens, 1, m, blocks, 2, params, 2)
    gib = 1024 ** 3
    say(f"the same formulas for GPT-3 175B: tp={tp} x pp={pp} x dp={dp} = {tp * pp * dp} GPUs, "
        f"{blocks} blocks a stage,",
        f"m = {batch}/{dp} = {m} micro-batches of 1 sequence, fp16; one GPU of a middle stage, "
        "per step:",
        f"  tensor all-reduces   {tensor} x {tensor_bytes // tensor / 2**20:.0f} MiB = "
        f"{tensor_bytes / gib:.0f} GiB   inside its node (NVLink, hundreds of GB/s)",
        f"  pipeline sends       {sends} x {send_bytes // sends / 2**20:.0f} MiB = "
        f"{send_bytes / gib:.0f} GiB    to the next and previous node (Megatron-LM sends",
        f"                       1/{tp} of each, one slice per tensor rank, and gathers it "
        f"again: {send_bytes / tp / gib:.1f} GiB)",
        f"  gradient all-reduce  1 x {grads / gib:.1f} GiB             once per step, "
        f"across the {dp} replicas",
        f"tensor parallelism moves {tensor_bytes / send_bytes:.0f} times the pipeline's bytes "
        f"({tensor_bytes * tp / send_bytes:.0f} times with the slices), in every layer,",
        "on the critical path: that is why it stays on the links inside a node.")


if __name__ == "__main__":
    main_guard(main)
