"""Lesson 9: putting it together on a cluster. Why 8 x 16 x 8, and choosing P, m and V.

    .venv/bin/mpiexec -n 1 .venv/bin/python lessons/09_cluster.py   (arithmetic and the simulator)

The worked example is GPT-3 175B (Brown et al., 2020: 96 layers, width 12288,
96 heads, sequences of 2048) as Megatron-LM trained it on 1024 A100 GPUs of
80 GB (Narayanan et al., 2021): tensor parallel 8 inside a node x pipeline 16
across nodes x data parallel 8, global batch 1536, micro-batch 1. First the
memory arithmetic that makes the model split 128 ways, then what each kind of
parallelism sends, then the simulator on the schedule choice. The assumptions
are constants below; change one and run again.
"""

from _checks import Checks
from _common import OUT, main_guard, say
from mpipipe.schedules import validated_schedule
from mpipipe.plan.simulate import Costs, peak_stash, simulate

LAYERS, WIDTH, HEADS, SEQ, VOCAB = 96, 12288, 96, 2048, 50257
TP, PP, DP, GLOBAL_BATCH, GPU_GB = 8, 16, 8, 1536, 80
# mixed-precision Adam: fp16 weights (2 bytes) and gradients (2), fp32 master weights,
# momentum and variance (4 + 4 + 4): 16 bytes a parameter (the ZeRO paper's count)
BYTES_PER_PARAMETER = {"weights": 2, "gradients": 2, "optimizer state": 12}
LINK_GB_S = 25           # one 200 Gb/s InfiniBand link per GPU between nodes
TFLOPS = 140             # per GPU: what Megatron-LM reports for this model (45% of A100's 312)
GB = 1e9


def parameters():
    """12 h^2 per layer (attention 4 h^2, MLP 8 h^2), plus the token and position embeddings."""
    return 12 * LAYERS * WIDTH ** 2 + (VOCAB + SEQ) * WIDTH


def activations_per_layer(t):
    """Bytes one layer keeps for one sequence until its backward, with tensor parallel t
    (Korthikanti et al., 2022): s b h (10 + 24/t + 5 a s / (h t)), 16-bit numbers."""
    return SEQ * WIDTH * (10 + 24 / t + 5 * HEADS * SEQ / (WIDTH * t))


def memory(checks):
    n = parameters()
    states = {k: n * b for k, b in BYTES_PER_PARAMETER.items()}
    total = sum(states.values())
    checks.close("formula", dict(what="parameters vs 175e9"), n / 175e9, 1.0, tolerance=0.01)
    layer = activations_per_layer(TP)
    lines = [f"memory: GPT-3 has {n / 1e9:.1f} billion parameters (12 x {LAYERS} layers x "
             f"{WIDTH}^2 + embeddings)",
             *(f"  {k:<16} {b} bytes each: {states[k] / GB:>6.0f} GB" for k, b in
               BYTES_PER_PARAMETER.items()),
             f"  {'together':<16} {sum(BYTES_PER_PARAMETER.values())} bytes each: "
             f"{total / GB:>6.0f} GB = {total / (GPU_GB * GB):.0f} GPUs of {GPU_GB} GB for the "
             "model states alone", "",
             f"  activations kept per layer and sequence, tensor parallel {TP}: "
             f"{layer / GB:.2f} GB ({activations_per_layer(1) / GB:.2f} GB unsplit)",
             f"  1F1B holds P micro-batches on stage 0, each through {LAYERS}/P layers: "
             f"{LAYERS} x {layer / GB:.2f} = {LAYERS * layer / GB:.1f} GB whatever P",
             f"  recomputation (lesson 5) keeps a stage's input per micro-batch, "
             f"{SEQ * WIDTH * 2 / GB:.2f} GB, and rebuilds one", "  micro-batch's "
             "activations at a time for its backward",
             "", f"{'P':>4} {'states/GPU':>11} {'1F1B acts':>10} {'total GB':>9} {'fits':>5}"
             f" {'recompute acts':>15} {'total GB':>9} {'fits':>5}"]
    smallest = smallest_recomputed = None
    for P in (4, 6, 8, 12, 16, 24, 32):
        per_gpu = total / (TP * P) / GB
        acts = LAYERS * layer / GB
        recomputed = (P * SEQ * WIDTH * 2 + LAYERS // P * layer) / GB
        fits, fits_recomputed = per_gpu + acts <= GPU_GB, per_gpu + recomputed <= GPU_GB
        smallest = smallest or (P if fits else None)
        smallest_recomputed = smallest_recomputed or (P if fits_recomputed else None)
        lines.append(f"{P:>4} {per_gpu:>11.1f} {acts:>10.1f} {per_gpu + acts:>9.1f} "
                     f"{'yes' if fits else 'no':>5} {recomputed:>15.1f} "
                     f"{per_gpu + recomputed:>9.1f} {'yes' if fits_recomputed else 'no':>5}")
    V = 2
    chunk_mbs = 2 * (PP - 1) + (V - 1) * PP + 1
    if smallest:
        lines += [f"of the P dividing {LAYERS} layers, P = {smallest} is the smallest whose stage "
                  "0 fits (before buffers", f"and workspace): TP {TP} x PP {smallest} = "
                  f"{TP * smallest} GPUs hold one copy, and {TP * PP * DP} GPUs make "
                  f"{TP * PP * DP // (TP * smallest)} copies."]
    else:
        lines.append(f"no P up to 32 fits {GPU_GB} GB without recomputation" +
                     (f"; with it, P = {smallest_recomputed}" if smallest_recomputed else ""))
    lines += [f"interleaving (V = {V}) would keep {chunk_mbs} chunk-micro-batches of "
              f"{LAYERS // PP // V} layers on stage 0 at P = {PP}:",
              f"  {chunk_mbs * LAYERS // PP // V * layer / GB:.1f} GB of activations, more than "
              "1F1B's without recomputation."]
    return lines, smallest, smallest_recomputed


def bandwidth():
    """What crosses a link per micro-batch: pipeline vs tensor vs data parallelism."""
    activation = SEQ * WIDTH * 2                                      # 16-bit, one sequence
    forward_flops = LAYERS // PP * (24 * SEQ * WIDTH ** 2 + 4 * SEQ ** 2 * WIDTH) / TP
    forward_s = forward_flops / (TFLOPS * 1e12)
    pp_s = activation / (LINK_GB_S * GB)
    tp_bytes = LAYERS // PP * 4 * 2 * (TP - 1) / TP * activation   # 4 all-reduces a layer
    grads = parameters() / (TP * PP) * 2
    dp_s = 2 * (DP - 1) / DP * grads / (LINK_GB_S * GB)
    step_s = GLOBAL_BATCH // DP * 3 * forward_s * (1 + (PP - 1) / GLOBAL_BATCH * DP)
    return [f"bandwidth, per GPU at {TFLOPS} TFLOP/s and {LINK_GB_S} GB/s between nodes:",
            f"  a stage's forward of one sequence, per GPU: {forward_flops / 1e12:.2f} TFLOP, "
            f"{forward_s * 1e3:.1f} ms (the backward twice that)",
            f"  pipeline: one {activation / 1e6:.0f} MB activation per micro-batch and "
            f"boundary: {pp_s * 1e3:.1f} ms on one link, {pp_s / forward_s:.0%} of the forward",
            f"  tensor parallel across nodes instead: 4 all-reduces per layer, "
            f"{tp_bytes / GB:.1f} GB per micro-batch and stage:",
            f"    {tp_bytes / (LINK_GB_S * GB) * 1e3:.0f} ms on one link, "
            f"{tp_bytes / (LINK_GB_S * GB) / forward_s:.1f} forwards: TP stays inside a node",
            f"  data parallel: {grads / GB:.1f} GB of gradients per GPU, all-reduced over "
            f"{DP} copies once a step:", f"    {dp_s:.2f} s of a ~{step_s:.0f} s step"], \
        (pp_s / forward_s, activation, tp_bytes / (LINK_GB_S * GB) / forward_s, tp_bytes)


def schedules(checks, comm):
    m = GLOBAL_BATCH // DP
    lines = [f"{'schedule':>12} {'V':>2} {'m':>4} {'bubble':>7} {'comm ' + format(comm, '.2f'):>10} "
             f"{'stash rank 0':>13}"]
    for name, V in (("gpipe", 1), ("1f1b", 1), ("interleaved", 2), ("interleaved", 3),
                    ("zb-h1", 1), ("zb-h2", 1)):
        for micro in (32, m):
            schedule = validated_schedule(name, PP, micro, V)
            free = simulate(schedule).bubble_fraction
            slow = simulate(schedule, Costs(comm=comm)).bubble_fraction
            stash = peak_stash(schedule)[0]
            if name in ("gpipe", "1f1b", "interleaved"):
                checks.close("formula", dict(schedule=name, V=V, m=micro), free,
                             (PP - 1) / (V * micro + PP - 1))
            lines.append(f"{name:>12} {V:>2} {micro:>4} {free:>7.3f} {slow:>10.3f} {stash:>13}")
    return lines


def crossover():
    """At which message cost does interleaving (V = 2) stop paying at P = 16, m = 32?"""
    lines = [f"interleaving against 1F1B at P = {PP}, m = 32 as messages get dearer:",
             f"{'comm':>6} {'1f1b':>7} {'V = 2':>7}"]
    stop = None
    for comm in (0, 0.05, 0.2, 0.5, 1, 2, 3):
        a, b = (simulate(validated_schedule(n, PP, 32, V), Costs(comm=comm)).bubble_fraction
                for n, V in (("1f1b", 1), ("interleaved", 2)))
        lines.append(f"{comm:>6g} {a:>7.3f} {b:>7.3f}")
        stop = stop if stop is not None or b < a else comm
    lines.append("V = 2 is better at every cost above" if stop is None else
                 f"V = 2 stops paying at comm = {stop:g}")
    return lines


def main():
    checks = Checks()
    memory_lines, smallest, smallest_recomputed = memory(checks)
    bandwidth_lines, (comm, activation, tp_forwards, tp_bytes) = bandwidth()
    comm = round(comm, 2)
    m = GLOBAL_BATCH // DP
    states = sum(BYTES_PER_PARAMETER.values()) * parameters() / GB
    verdict = [
        "pipeline parallelism is the right tool when",
        f"  memory:    the model states ({states:.0f} GB) do not fit one node's tensor group "
        f"({TP} x {GPU_GB} = {TP * GPU_GB} GB);",
        f"  bandwidth: only slower links join the nodes: a stage boundary moves "
        f"{activation / 1e6:.0f} MB per micro-batch ({comm:.0%} of a forward),",
        f"             tensor parallelism would move {tp_bytes / GB:.1f} GB "
        f"({tp_forwards:.1f} forwards);",
        f"  bubble:    the batch gives m >= 4P micro-batches: m = {m} = {m // PP}P leaves "
        f"(P-1)/(m+P-1) = {(PP - 1) / (m + PP - 1):.3f};",
        f"             m = 32 = {32 // PP}P would leave {(PP - 1) / (32 + PP - 1):.3f}."]
    say(*memory_lines, "", *bandwidth_lines, "",
        f"the schedules at P = {PP}, m = {GLOBAL_BATCH} / {DP} = {GLOBAL_BATCH // DP} per pipeline "
        "and step, or 32", f"(simulated, F = B = W; comm: a message costs {comm:.2f} forwards, "
        "as above):", *schedules(checks, comm), "", *crossover(), "", *verdict, "", *picture(comm), "",
        f"answer: model states alone need {states:.0f} GB; with 1F1B's activations stage 0 "
        f"fits {GPU_GB} GB", (f"from P = {smallest} on, so the model is split {TP} x {smallest} = "
                              f"{TP * smallest} ways" if smallest else
                              "for no P up to 32 without recomputation")
        + (f"; with recomputation from P = {smallest_recomputed} on, at one more forward per "
           "micro-batch." if smallest_recomputed else "."), "")
    checks.finish()


def picture(comm):
    """The plans of 1F1B and interleaving at P = 16, m = 32, drawn (simulated: no measurement)."""
    try:
        from mpipipe.measure.plot import draw
        import matplotlib  # noqa: F401
    except ImportError:
        return ["no picture: matplotlib is missing (.venv/bin/pip install -e '.[plot]')"]
    import os

    os.makedirs(OUT, exist_ok=True)
    panels = []
    for name, V in (("1f1b", 1), ("interleaved", 2)):
        plan = simulate(validated_schedule(name, PP, 32, V), Costs(comm=comm))
        panels.append((plan.events, PP, f"plan: {name}, P={PP}, m=32" + (f", V={V}" if V > 1 else "")
                       + f", comm={comm:.2f}: bubble {plan.bubble_fraction:.3f}", "forwards"))
    draw(f"{OUT}/09_cluster.png", panels)
    return [f"picture: {os.path.relpath(OUT)}/09_cluster.png (two plans; nothing is measured here)"]


if __name__ == "__main__":
    main_guard(main)
