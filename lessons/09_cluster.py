"""Lesson 9: putting it together on a cluster. Choosing P, m and V.

    mpiexec -n 1 python lessons/09_cluster.py      (the simulator alone: no ranks needed)

The worked example is GPT-3 175B as Megatron-LM trained it on 1024 GPUs
(Narayanan et al., 2021): 96 transformer layers, tensor parallel 8 x pipeline
16 x data parallel 8, global batch 1536 sequences, micro-batch 1.

  - Tensor parallelism (TP 8) splits every layer over the 8 GPUs of a node: it
    all-reduces inside every layer, so it needs the node's fastest links.
  - Pipeline parallelism (PP 16) cuts the 96 layers into 16 stages of 6, one per
    node: one activation per micro-batch crosses between nodes.
  - Data parallelism (DP 8): 8 copies of that pipeline, each on 1536/8 = 192
    sequences per step, all-reducing gradients once per step.
With micro-batch 1 each pipeline runs m = 192 micro-batches per step. The
simulator below shows what the schedule choice is worth at that size, and what
happens when messages are not free. mpipipe's rank layout (world rank =
dp_index * pp + pp_index) keeps a replica's stages together; on a real cluster
add TP as the innermost level, inside a node. The Slurm scripts in slurm/ start
such jobs; slurm/README.md says which lines to edit.
"""

from _common import main_guard, say
from mpipipe.schedules import validated_schedule
from mpipipe.simulate import Costs, peak_stash, simulate

P, LAYERS, DP, GLOBAL_BATCH = 16, 96, 8, 1536


def main():
    m = GLOBAL_BATCH // DP
    lines = [f"{'schedule':>12} {'V':>2} {'m':>4} {'bubble':>7} {'with comm':>10} {'stash rank 0':>13}"]
    for name, V in (("gpipe", 1), ("1f1b", 1), ("interleaved", 2), ("interleaved", 3),
                    ("zb-h1", 1), ("zb-h2", 1)):
        for micro in (32, m):
            schedule = validated_schedule(name, P, micro, V)
            free = simulate(schedule).bubble_fraction
            # a message taking 5% of a stage's forward (F = 1): latency plus bandwidth
            slow = simulate(schedule, Costs(comm=0.05)).bubble_fraction
            stash = peak_stash(schedule)[0]
            lines.append(f"{name:>12} {V:>2} {micro:>4} {free:>7.3f} {slow:>10.3f} {stash:>13}")
    say(f"GPT-3 175B on {P * 8 * DP} GPUs: TP 8 x PP {P} x DP {DP}, {LAYERS // P} layers per stage,",
        f"m = {GLOBAL_BATCH} / {DP} = {m} micro-batches per pipeline and step (simulated, F=B=W):",
        *lines, "",
        "what to read in it:",
        "  - with m = 192 every flushed schedule is within a few per cent of the bound;",
        "    with m = 32 the choice matters: interleaving divides the bubble by V,",
        "    the zero-bubble schedules nearly remove it;",
        "  - GPipe's stash is m micro-batches per stage: at m = 192 that is why 1F1B exists;",
        "  - interleaving multiplies the messages by V: when they are not free",
        "    ('with comm') part of its gain goes back to the network.",
        "choose m >= 4P if the batch allows it, 1F1B or ZB-H1 by default, interleaving",
        "when m must be small and the links between stages are fast.")


if __name__ == "__main__":
    main_guard(main)
