"""Planted mistakes, one per likely slip in each exercise: the points each still earns and
the feedback a student can act on. Each is written into tmp_path, never into lessons/,
and graded by the same grade() that `mpipipe grade` and the pytest plugin use.
"""

import textwrap

import pytest

from mpipipe.cli.grade import grade
from mpipipe.course.base import FAILED, PASSED, SKIPPED

# (file, code, points it still earns, the feedback expected) ---------------------------------

ONE_F_ONE_B_WITH_WARMUP = """
    from mpipipe.schedules.actions import Action

    def one_f_one_b_actions(P, m):
        ranks = []
        for r in range(P):
            w = {warmup}
            actions = [Action("F", i) for i in range(w)]
            for i in range(m - w):
                actions += [Action("F", w + i), Action("BW", i)]
            actions += [Action("BW", i) for i in range(m - w, m)]
            ranks.append(actions)
        return ranks
"""

SEND_RECV = """
    import numpy as np

    def pass_activation(comm, array, source, dest, tag):
        if comm.Get_rank() == source:
            {send}
        elif comm.Get_rank() == dest:
            {receive}
"""

PLANTED = {
    "gpipe misses the last backward": ("ex1_gpipe.py", """
        from mpipipe.schedules.actions import Action

        def gpipe_actions(P, m):
            return [[Action("F", i) for i in range(m)] + [Action("BW", i) for i in range(m - 1)]
                    for _ in range(P)]
        """, 0, "gpipe_actions(4, 8): rank 0 has no complete backward of micro-batch 7"),
    "gpipe with tuples": ("ex1_gpipe.py", """
        def gpipe_actions(P, m):
            return [[("F", i) for i in range(m)] + [("BW", i) for i in range(m)] for _ in range(P)]
        """, 0, "gpipe_actions(4, 8): action #0 of rank 0 is ('F', 0), not an Action"),
    "gpipe in 1F1B order": ("ex1_gpipe.py", ONE_F_ONE_B_WITH_WARMUP.format(
        warmup="min(P - 1 - r, m)").replace("one_f_one_b_actions", "gpipe_actions"), 2,
        "gpipe_actions(4, 8): rank 0 runs BW0 (action #4) before F7; GPipe runs all 8 forwards "
        "first"),
    "gpipe rank 0 backwards reversed": ("ex1_gpipe.py", """
        from mpipipe.schedules.actions import Action

        def gpipe_actions(P, m):
            ranks = [[Action("F", i) for i in range(m)] + [Action("BW", i) for i in range(m)]
                     for _ in range(P)]
            ranks[0] = ranks[0][:m] + ranks[0][m:][::-1]
            return ranks
        """, 3, "gpipe_actions(4, 8): the ranks idle 0.4894 of the step; the textbook's "
                "(P-1)/(m+P-1) is 0.2727"),
    "1f1b warm-up r instead of P-1-r": ("ex2_one_f_one_b.py",
        ONE_F_ONE_B_WITH_WARMUP.format(warmup="min(r, m)"), 0,
        "rank 0 would wait forever at action #2 RECV_B0<-r1: rank 1 never sends B0 for stage 0"),
    "1f1b warm-up without min": ("ex2_one_f_one_b.py",
        ONE_F_ONE_B_WITH_WARMUP.format(warmup="P - 1 - r"), 0,
        "one_f_one_b_actions(4, 2): rank 0, action #2 F2: micro-batch outside 0..1"),
    "1f1b that is gpipe": ("ex2_one_f_one_b.py",
        ONE_F_ONE_B_WITH_WARMUP.format(warmup="m"), 2,
        "one_f_one_b_actions(4, 8): your 1F1B keeps 8 activations on stage 0, at most 4 allowed"),
    "1f1b warm-up one short": ("ex2_one_f_one_b.py",
        ONE_F_ONE_B_WITH_WARMUP.format(warmup="min(max(P - 2 - r, 0), m)"), 3,
        "one_f_one_b_actions(4, 8): the ranks idle 0.5556 of the step; the textbook's "
        "(P-1)/(m+P-1) is 0.2727"),
    "bubble one too many": ("ex3_bubble.py", """
        def bubble_fraction(P, m):
            return (P - 1) / (m + P)
        """, 0, "bubble_fraction(4, 8) returned 0.25, expected 0.2727"),
    "bubble whole-number division": ("ex3_bubble.py", """
        def bubble_fraction(P, m):
            return (P - 1) // (m + P - 1)
        """, 0, "bubble_fraction(4, 8) returned 0, expected 0.2727"),
    "colours swapped": ("ex4_split_colours.py", """
        def pipeline_colour(world_rank, pp, dp):
            return world_rank % pp

        def data_colour(world_rank, pp, dp):
            return world_rank // pp
        """, 0, "pipeline_colour(world_rank, pp=4, dp=2) gives world ranks 0 and 1 different "
                "colours (0 and 1), but both are stages of replica 0"),
    "data colour divides by dp": ("ex4_split_colours.py", """
        def pipeline_colour(world_rank, pp, dp):
            return world_rank // pp

        def data_colour(world_rank, pp, dp):
            return world_rank // dp
        """, 1, "data_colour(world_rank, pp=4, dp=2) gives world ranks 0 and 1 the same colour 0, "
                "but rank 0 holds stage 0 and rank 1 stage 1"),
    "colour negative": ("ex4_split_colours.py", """
        def pipeline_colour(world_rank, pp, dp):
            return -1 - world_rank // pp

        def data_colour(world_rank, pp, dp):
            return world_rank % pp
        """, 0, "pipeline_colour(0, 4, 2) returned -1: a colour must be a whole number >= 0"),
    "partition uniform": ("ex5_partition.py", """
        def balanced_partition(param_counts, num_stages):
            base, extra = divmod(len(param_counts), num_stages)
            return [base + (s < extra) for s in range(num_stages)]
        """, 1, "balanced_partition([10, 1, 1, 1, 1, 10], 3) returned [2, 2, 2], whose heaviest "
                "stage has 11 parameters; [1, 4, 1] gets it down to 10"),
    "partition forgets blocks": ("ex5_partition.py", """
        def balanced_partition(param_counts, num_stages):
            return [1] * num_stages
        """, 0, "returned [1, 1, 1]: partition [1, 1, 1] covers 3 blocks, the model has 6"),
    "partition fills to the average": ("ex5_partition.py", """
        def balanced_partition(param_counts, num_stages):
            target = sum(param_counts) / num_stages
            sizes, load, size = [], 0, 0
            for count in param_counts:
                if load + count > target and size and len(sizes) < num_stages - 1:
                    sizes.append(size)
                    load, size = 0, 0
                load, size = load + count, size + 1
            return sizes + [size]
        """, 1, "balanced_partition([5, 2, 6, 9], 2) returned [2, 2], whose heaviest stage has "
                "15 parameters; [3, 1] gets it down to 13"),
    "send/recv lowercase": ("ex6_send_recv.py", SEND_RECV.format(
        send="comm.send(array, dest=dest, tag=tag)",
        receive="return comm.recv(source=source, tag=tag)"), 0,
        "use the uppercase Send and Recv"),
    "recv without tag": ("ex6_send_recv.py", SEND_RECV.format(
        send="comm.Send(array, dest=dest, tag=tag)",
        receive="buffer = np.empty_like(array); comm.Recv(buffer, source=source); return buffer"),
        0, "source=0, dest=1, tag=7): rank 1 calls Recv without tag=7"),
    "send without tag": ("ex6_send_recv.py", SEND_RECV.format(
        send="comm.Send(array, dest=dest)",
        receive="buffer = np.empty_like(array); comm.Recv(buffer, source, tag); return buffer"),
        0, "rank 0 sends with tag 0, but this message's tag is 7"),
    "recv into float64": ("ex6_send_recv.py", SEND_RECV.format(
        send="comm.Send(array, dest=dest, tag=tag)",
        receive="buffer = np.empty(array.shape); comm.Recv(buffer, source, tag); return buffer"),
        1, "rank 1 sent float32 of shape (2, 5), rank 0 returned float64 of shape (2, 5)"),
    "recv forgotten": ("ex6_send_recv.py", SEND_RECV.format(
        send="comm.Send(array, dest=dest, tag=tag)", receive="return array"), 0,
        "rank 1 returned without calling Recv"),
    "sender returns the array": ("ex6_send_recv.py", SEND_RECV.format(
        send="comm.Send(array, dest=dest, tag=tag); return array",
        receive="buffer = np.empty_like(array); comm.Recv(buffer, source, tag); return buffer"),
        0, "on rank 0: only rank 1 (dest) returns the array, the others return None"),
    "rank 1 never sends": ("ex6_send_recv.py", SEND_RECV.format(   # rank 0 waits, in vain
        send="comm.Send(array, dest=dest, tag=tag) if source == 0 else None",
        receive="buffer = np.empty_like(array); comm.Recv(buffer, source, tag); return buffer"),
        1, "tag=3): rank 1 returned without calling Send; rank 0 would wait forever"),
    "a Barrier on one rank": ("ex6_send_recv.py", SEND_RECV.format(
        send="comm.Send(array, dest=dest, tag=tag)",
        receive="comm.Barrier(); buffer = np.empty_like(array); comm.Recv(buffer, source, tag); "
                "return buffer"),
        0, "comm.Barrier is not needed here: pass_activation uses comm.Get_rank, comm.Send"),
}

RECOMPUTE = """
    def stash_bytes(num_blocks, microbatch_size, width, recompute):
        array = microbatch_size * width * {bytes}
        return {with_recompute} if recompute else {without}

    def step_time(P, m, forward, backward, recompute):
        return {time}
"""
RECOMPUTE_RIGHT = dict(bytes=4, with_recompute="array", without="3 * num_blocks * array",
                       time="(m + P - 1) * (forward + backward + (forward if recompute else 0))")

INTERLEAVED = """
    def rank_and_chunk(stage, P):
        return {place}

    def warmup(rank, P, m, V):
        count = {count}
        order = {order}
        return order[:count]
"""
INTERLEAVED_RIGHT = dict(
    place="stage % P, stage // P", count="min(m * V, 2 * (P - 1 - rank) + (V - 1) * P)",
    order="[(g * P + i, c) for g in range(m // P) for c in range(V) for i in range(P)]")

ZERO_BUBBLE = """
    from mpipipe.schedules.actions import Action

    def zb_h1_actions(P, m):
        ranks = []
        for r in range(P):
            warmup = min(P - 1 - r, m)
            held_back = {held_back}
            actions = [Action("F", i) for i in range(warmup)]
            next_w = 0
            for i in range(m):
                if warmup + i < m:
                    actions.append(Action("F", warmup + i))
                actions.append(Action("B", i))
                if i >= held_back:
                    actions.append(Action("W", next_w))
                    next_w += 1
            actions += [Action("W", i) for i in range(next_w, {last_w})]
            ranks.append(actions)
        return ranks
"""
ZERO_BUBBLE_RIGHT = dict(held_back="r", last_w="m")


def recompute(**mistake):
    return "ex7_recompute.py", RECOMPUTE.format(**{**RECOMPUTE_RIGHT, **mistake})


def interleaved(**mistake):
    return "ex8_interleaved.py", INTERLEAVED.format(**{**INTERLEAVED_RIGHT, **mistake})


def zero_bubble(**mistake):
    return "ex9_zero_bubble.py", ZERO_BUBBLE.format(**{**ZERO_BUBBLE_RIGHT, **mistake})


PLANTED.update({
    "stash: one array a block": (*recompute(without="num_blocks * array"), 0,
        "stash_bytes(2, 16, 32, recompute=False) returned 4096; mpipipe's engine holds 12288 "
        "bytes for one micro-batch of 16 on a stage of 2 block(s) Linear(32, 32) + GELU: that is "
        "one array a block; a GELU keeps two of its own"),
    "stash in float64": (*recompute(bytes=8), 0,
        "stash_bytes(2, 16, 32, recompute=False) returned 24576; mpipipe's engine holds 12288"),
    "recompute keeps an input a block": (*recompute(with_recompute="num_blocks * array"), 1,
        "stash_bytes(2, 16, 32, recompute=True) returned 4096; with recompute the engine holds "
        "2048 bytes for one micro-batch: only what the stage needs to run its forward again"),
    "step time without the repeated forward": (
        *recompute(time="(m + P - 1) * (forward + backward)"), 2,
        "step_time(4, 8, 1, 2, recompute=True) returned 33; the simulator's 1F1B step takes 44: "
        "with recompute every backward first runs its stage's forward again"),
    "step time without the bubble": (
        *recompute(time="m * (forward + backward + (forward if recompute else 0))"), 2,
        "step_time(4, 8, 1, 2, recompute=False) returned 24; the simulator's 1F1B step takes 33: "
        "a rank computes m slots of forward + backward"),
    "placement swapped": (*interleaved(place="stage // P, stage % P"), 0,
        "rank_and_chunk(1, 4) returned (0, 1); with 4 ranks stage 1 lives on rank 1 as its "
        "chunk 0"),
    "placement not a pair": (*interleaved(place="stage % P"), 0,
        "rank_and_chunk(0, 4) returned 0: expected a pair of whole numbers, (rank, chunk)"),
    "warm-up depth first": (
        *interleaved(order="[(mb, c) for mb in range(m) for c in range(V)]"), 1,
        "warmup(0, 4, 8, 2): forward #1 is micro-batch 0 on chunk 1, expected micro-batch 1 on "
        "chunk 0: the micro-batches go in groups of P = 4"),
    "warm-up every micro-batch through chunk 0 first": (
        *interleaved(order="[(mb, c) for c in range(V) for mb in range(m)]"), 1,
        "warmup(0, 4, 8, 2): forward #4 is micro-batch 4 on chunk 0, expected micro-batch 0 on "
        "chunk 1"),
    "warm-up without min": (*interleaved(
        count="2 * (P - 1 - rank) + (V - 1) * P",
        order="[((k // (P * V)) * P + k % P, (k // P) % V) for k in range(count)]"), 1,
        "warmup(0, 4, 4, 2) has 10 forwards; the rank runs only m x V = 8 in the whole step"),
    "warm-up as long as 1F1B's": (
        *interleaved(count="min(m * V, (P - 1 - rank) + (V - 1) * P)"), 2,
        "interleaved(4, 8, 2) with your warm-ups, [7, 6, 5, 4] forwards: when a message takes a "
        "quarter of a forward, the step takes 36 instead of 32: rank 0's first backward waits"),
    "warm-up one short": (
        *interleaved(count="min(m * V, 2 * (P - 1 - rank) + (V - 1) * P - 1)"), 2,
        "interleaved(4, 8, 2) with your warm-ups, [9, 7, 5, 3] forwards: rank 3 runs BW0:1 "
        "(action #4) before F0:1 (action #5), which it needs"),
    "warm-up one long": (
        *interleaved(count="min(m * V, 2 * (P - 1 - rank) + (V - 1) * P + 1)"), 2,
        "rank 0 holds the activations of 12 forwards at once, 11 are enough for the same step "
        "time: its warm-up is longer than it needs to be"),
    "zero bubble with fused backwards": ("ex9_zero_bubble.py", ONE_F_ONE_B_WITH_WARMUP.format(
        warmup="min(P - 1 - r, m)").replace("one_f_one_b_actions", "zb_h1_actions"), 0,
        "zb_h1_actions(4, 8): rank 0 runs BW0; zero bubble splits every backward in two"),
    "zero bubble forgets a W": (*zero_bubble(last_w="m - 1"), 0,
        "zb_h1_actions(4, 8): rank 1 has no complete backward of micro-batch 7"),
    "zero bubble runs each W right after its B": (*zero_bubble(held_back="0"), 3,
        "zb_h1_actions(4, 8) with F=1, B=1, W=1: each rank idles 6, ZB-H1's (P-1)(F+B-W) is 3: "
        "at the end of the step a gradient should climb"),
    "zero bubble holds back one W too many": (*zero_bubble(held_back="r + 1"), 2,
        "zb_h1_actions(4, 8): rank 0 holds 5 micro-batches at once (from F to W), at most 4 "
        "allowed (1F1B's peak, min(P, m))"),
    "zero bubble holds back one W too few": (*zero_bubble(held_back="max(r - 1, 0)"), 3,
        "zb_h1_actions(4, 8) with F=1, B=1, W=1: each rank idles 4, ZB-H1's (P-1)(F+B-W) is 3"),
})


CONJUGATE_PAIR = """
    from mpipipe.nn.layers import GELU

    def mlp_forward(x, W1, b1, W2, b2, allreduce):
        a, cache = GELU().forward(x @ W1 + b1)
        {forward}
        return y, cache

    def mlp_backward_input(dy, cache, W1, W2, allreduce):
        {backward}
"""


def conjugate_pair(forward="y = allreduce(a @ W2) + b2",
                   backward="return allreduce(GELU().backward_input(dy @ W2.T, cache) @ W1.T)"):
    return "ex10_conjugate_pair.py", CONJUGATE_PAIR.format(forward=forward, backward=backward)


PLANTED.update({
    "pair: b1 forgotten": (*conjugate_pair(forward="y = allreduce(GELU().forward(x @ W1)[0] @ "
                                                   "W2) + b2"), 0,
        "mlp_forward on 1 rank (nothing split) differs from GELU(x @ W1 + b1) @ W2 + b2"),
    "pair: a shape mistake": (*conjugate_pair(forward="y = allreduce(a @ W2.T) + b2"), 0,
        "mlp_forward(array(3, 4), array(4, 16), array(16,), array(16, 4), array(4,), allreduce) "
        "raised ValueError: matmul: Input operand 1 has a mismatch"),
    "pair: b2 before the sum": (*conjugate_pair(forward="y = allreduce(a @ W2 + b2)"), 1,
        "mlp_forward on 2 ranks (D=8): b2 is counted 2 times: every rank adds it before the sum"),
    "pair: no g": (*conjugate_pair(forward="y = a @ W2 + b2"), 1,
        "mlp_forward on 2 ranks (D=8): rank 0's y is only its own share of the output"),
    "pair: g on some ranks only": (*conjugate_pair(
        forward="y = a @ W2\n        y = (allreduce(y) if W1[0, 0] > 0 else y) + b2"), 1,
        "mlp_forward on 4 ranks: rank 0 0 time(s), rank 1 0 time(s), rank 2 1 time(s), rank 3 1 "
        "time(s) called allreduce: every rank of a tensor group must call it equally often, or "
        "the others wait forever"),
    "pair: no f backward": (*conjugate_pair(backward="return GELU().backward_input(dy @ W2.T, "
                                                     "cache) @ W1.T"),
        4, "mlp_backward_input on 2 ranks (D=8): rank 0's dx is only what reaches x through its "
           "own hidden units"),
    "pair: dy summed too": (*conjugate_pair(
        backward="dy = allreduce(dy)\n        return allreduce(GELU().backward_input(dy @ W2.T, "
                 "cache) @ W1.T)"),
        4, "mlp_backward_input on 2 ranks (D=8): dx is 2 times too large: dy is already the same "
           "on every rank"),
})

GOLF = """
    from mpipipe.schedules.actions import Action

    def golf_actions(P, m):
        ranks = []
        for r in range(P):
            w = {warmup}
            actions = [Action("F", i) for i in range(w)]
            next_w = 0
            for i in range(m):
                if w + i < m:
                    actions.append(Action("F", w + i))
                actions.append(Action("B", i))
                if i >= {held_back}:
                    actions.append(Action("W", next_w))
                    next_w += 1
            actions += [Action("W", i) for i in range(next_w, m){lost}]
            ranks.append(actions)
        return ranks
"""


def golf(warmup="min(P - 1 - r, m)", held_back="r", lost=""):
    return GOLF.format(warmup=warmup, held_back=held_back, lost=lost)


PLANTED.update({
    "golf with 1F1B's order": ("ex11_schedule_golf.py", ONE_F_ONE_B_WITH_WARMUP.format(
        warmup="min(P - 1 - r, m)").replace("one_f_one_b_actions", "golf_actions"), 4,
        "makespan 33, 22% above the lower bound 27 = m(F+B+W) + (P-1)F; this band needs at "
        "most 10% above it"),
    "golf without held-back W's": ("ex11_schedule_golf.py", golf(held_back="0"), 4,
                                   "makespan 30, 11% above the lower bound 27"),
    "golf holding back one W": ("ex11_schedule_golf.py", golf(held_back="min(r, 1)"), 5,
                                "makespan 29, 7% above the lower bound 27 = m(F+B+W) + (P-1)F; "
                                "this band needs at most 2% above it"),
    "golf deadlocks": ("ex11_schedule_golf.py", golf(warmup="0 if r == 0 else min(P - 1 - r, m)"),
                       0, "your schedule does not run: the schedule deadlocks"),
    "golf over the budget": ("ex11_schedule_golf.py", golf(warmup="m"), 2,
                             "rank 0 holds 8 micro-batches' activations at once (from F to W or "
                             "BW), the budget is 4"),
    "golf loses a W": ("ex11_schedule_golf.py", golf(lost=" if not (r == 2 and i == 7)"), 0,
                       "no complete backward of micro-batch 7 (BW7, or B7 and W7)\nevery B "
                       "needs its W"),
})


def plant(folder, name):
    """Write the planted mistake `name` into folder, over the file it replaces."""
    file, code, _, _ = PLANTED[name]
    (folder / file).write_text(textwrap.dedent(code))


@pytest.mark.parametrize("name", list(PLANTED))
def test_a_planted_mistake_gets_its_feedback(tmp_path, name):
    """The points, the feedback, and the steps: passed up to the one that failed, then skipped."""
    file, _, points, feedback = PLANTED[name]
    plant(tmp_path, name)
    [result] = grade(tmp_path, [file.split("_")[0]])
    assert feedback in result.feedback
    assert result.points == points
    outcomes = [step.outcome for step in result.steps]
    failed = outcomes.index(FAILED)
    assert outcomes == [PASSED] * failed + [FAILED] + [SKIPPED] * (len(outcomes) - failed - 1)
    assert sum(step.points for step in result.steps[:failed]) == points
    assert result.steps[failed].message == result.feedback
    assert all(result.steps[failed].step in step.message for step in result.steps[failed + 1:])


def test_golf_takes_a_schedule_file(tmp_path):
    """A PyTorch-format CSV beside the exercise, named by golf_actions, is graded the same."""
    from mpipipe.schedules import make_schedule, write_schedule_file

    write_schedule_file(make_schedule("zb-h1", 4, 8), tmp_path / "mine.csv")
    (tmp_path / "ex11_schedule_golf.py").write_text("def golf_actions(P, m):\n    return 'mine.csv'\n")
    [result] = grade(tmp_path, ["ex11"])
    assert (result.points, result.feedback) == (6, "")


def test_golf_loses_the_mpi_point_when_the_real_run_fails(tmp_path, monkeypatch):
    from mpipipe.course import golf_checks

    monkeypatch.setattr(golf_checks, "mpiexec_command", lambda ranks: ["false"])
    (tmp_path / "ex11_schedule_golf.py").write_text(textwrap.dedent(golf()))
    [result] = grade(tmp_path, ["ex11"])
    assert result.points == 3
    assert "--check ended with status 1" in result.feedback
