"""Schedules as data: textbook bubble and memory figures, and validate() catching mistakes."""

import itertools

import pytest

from mpipipe.errors import ConfigError, ScheduleError
from mpipipe.schedules import (BUBBLE_FORMULAS, lower, make_schedule, validate,
                               validated_schedule)
from mpipipe.schedules.actions import BW, F, RECV_F, SEND_F, Action, Schedule, message_tag
from mpipipe.plan.simulate import Costs, peak_stash, simulate

SIZES = [(P, m) for P in (1, 2, 3, 4, 8) for m in (1, 2, 3, 4, 8, 16)]


@pytest.mark.parametrize("name", ["gpipe", "1f1b"])
@pytest.mark.parametrize("P,m", SIZES)
@pytest.mark.parametrize("costs", [Costs(), Costs(F=1, B=2, W=0), Costs(F=0.5, BW=1.7)])
def test_bubble_is_the_textbook_formula(name, P, m, costs):
    """With equal stages: makespan (m + P - 1)(F + BW), bubble (P-1)/(m+P-1)."""
    timeline = simulate(validated_schedule(name, P, m), costs)
    per_mb = costs.of("F") + costs.of("BW")
    assert timeline.makespan == pytest.approx((m + P - 1) * per_mb)
    assert timeline.bubble_fraction == pytest.approx((P - 1) / (m + P - 1))


@pytest.mark.parametrize("P", [1, 2, 4, 7])
def test_naive_bubble_is_p_minus_one_over_p(P):
    assert simulate(validated_schedule("naive", P, 1)).bubble_fraction == pytest.approx((P - 1) / P)


@pytest.mark.parametrize("P,m", SIZES)
def test_peak_stash_gpipe_m_and_1f1b_min_p_minus_stage_m(P, m):
    assert peak_stash(make_schedule("gpipe", P, m)) == [m] * P
    assert peak_stash(make_schedule("1f1b", P, m)) == [min(P - s, m) for s in range(P)]


def test_1f1b_phases_on_rank_0():
    program = make_schedule("1f1b", 4, 6).programs[0]
    assert " ".join(map(str, program)) == "F0 F1 F2 F3 BW0 F4 BW1 F5 BW2 BW3 BW4 BW5"


def test_lower_adds_one_receive_per_send_and_nothing_at_the_ends():
    schedule = lower(make_schedule("gpipe", 3, 2))
    first, middle, last = schedule.programs
    assert [str(a) for a in first] == ["F0", "SEND_F0->r1", "F1", "SEND_F1->r1",
                                       "RECV_B0<-r1", "BW0", "RECV_B1<-r1", "BW1"]
    assert [str(a) for a in last] == ["RECV_F0<-r1", "F0", "RECV_F1<-r1", "F1",
                                      "BW0", "SEND_B0->r1", "BW1", "SEND_B1->r1"]
    sends = sum(a.kind.startswith("SEND") for p in schedule.programs for a in p)
    receives = sum(a.kind.startswith("RECV") for p in schedule.programs for a in p)
    assert sends == receives == 2 * 2 * 2   # 2 links x 2 directions x 2 micro-batches
    assert len(middle) == 4 + 8


def test_tags_are_unique_within_a_step():
    schedule = lower(make_schedule("1f1b", 4, 16))
    tags = [(rank, message_tag(schedule, rank, a))
            for rank, p in enumerate(schedule.programs) for a in p if a.kind.startswith("SEND")]
    assert len(tags) == len(set(tags))


def _broken(programs, P=2, m=2, lowered=True):
    return Schedule("broken", P, m, programs, lowered=lowered)


def test_validate_names_the_rank_that_would_wait_for_a_missing_send():
    good = lower(make_schedule("gpipe", 2, 2))
    programs = [list(p) for p in good.programs]
    programs[0].remove(Action(SEND_F, 1, 0, 1))   # rank 0 forgets to send F1
    with pytest.raises(ScheduleError, match=r"rank 1 would wait forever at action #\d+ RECV_F1<-r0"):
        validate(_broken(programs))


def test_validate_names_an_unreceived_send():
    good = lower(make_schedule("gpipe", 2, 2))
    programs = [list(p) for p in good.programs]
    programs[1].remove(Action(RECV_F, 1, 0, 0))   # rank 1 never receives F1 ...
    programs[1].insert(0, Action(RECV_F, 1, 0, 0))  # ... no: receives it first, out of order
    validate(_broken(programs))                     # unique tags: order does not matter
    programs[1].remove(Action(RECV_F, 1, 0, 0))
    with pytest.raises(ScheduleError, match="rank 0 sends F1 .* to rank 1, which never receives it"):
        validate(_broken(programs))


def test_validate_catches_a_cyclic_wait():
    # rank 0 wants gradient 0 before it sends activation 1; rank 1 wants activation 1 first
    programs = [[Action(F, 0), Action(BW, 0), Action(F, 1), Action(BW, 1)],
                [Action(F, 0), Action(F, 1), Action(BW, 0), Action(BW, 1)]]
    with pytest.raises(ScheduleError) as error:
        validate(_broken(programs, lowered=False))
    assert "rank 0 would wait forever at action #2 RECV_B0<-r1" in str(error.value)
    assert "rank 1 would wait forever at action #2 RECV_F1<-r0" in str(error.value)


@pytest.mark.parametrize("name,chunks", [("zbv", 2), ("interleaved", 2)])
def test_validate_catches_a_consumer_before_its_producer_on_the_same_rank(name, chunks):
    """Where two neighbouring stages share a rank no message orders them: a forward of
    the next stage before its producer, or a backward before the one that feeds it,
    must be caught by validate() alone (there is no receive to wait on)."""
    good = make_schedule(name, 1, 2, chunks)         # one rank: every hand-off is local
    validate(good)
    for index, action in enumerate(good.programs[0]):
        later = next((i for i, a in enumerate(good.programs[0]) if i > index
                      and a.kind == action.kind and a.microbatch == action.microbatch
                      and a.chunk != action.chunk), None)
        if action.kind in (F, "B") and later is not None:   # swap a producer with its consumer
            programs = [list(good.programs[0])]
            programs[0][index], programs[0][later] = programs[0][later], programs[0][index]
            bad = Schedule(name, 1, 2, programs, chunks=chunks, stage_map=good.stage_map)
            with pytest.raises(ScheduleError, match="which it needs and which this same rank "
                                                    "only runs later"):
                validate(bad)
            return
    pytest.fail(f"{name} on one rank has no local hand-off to swap")


def test_message_order_does_not_matter_with_buffered_sends():
    programs = [[Action(F, 0), Action(F, 1), Action(BW, 0), Action(BW, 1)],
                [Action(F, 1), Action(BW, 1), Action(F, 0), Action(BW, 0)]]
    validate(_broken(programs, lowered=False))


def test_validate_catches_a_backward_before_its_forward():
    programs = [[Action(F, 0), Action(BW, 1), Action(F, 1), Action(BW, 0)],
                [Action(F, 0), Action(F, 1), Action(BW, 0), Action(BW, 1)]]
    with pytest.raises(ScheduleError, match=r"rank 0 runs BW1 \(action #1\) before F1"):
        validate(_broken(programs, lowered=False))


@pytest.mark.parametrize("programs,message", [
    ([[Action(F, 0)], [Action(F, 0), Action(BW, 0)]], "rank 0 has no complete backward"),
    ([[Action(F, 0), Action(F, 0), Action(BW, 0)], [Action(F, 0), Action(BW, 0)]], "F0 2 times"),
    ([[Action(F, 0), Action(BW, 0)], [Action(F, 0), Action(BW, 0), Action(F, 1)]],
     "micro-batch outside"),
    ([[Action("X", 0)], []], "unknown action kind"),
])
def test_validate_bookkeeping(programs, message):
    with pytest.raises(ScheduleError, match=message):
        validate(_broken(programs, m=1, lowered=False))


def test_every_generated_schedule_validates():
    for name, P, m in itertools.product(["gpipe", "1f1b"], range(1, 7), range(1, 10)):
        validate(make_schedule(name, P, m))


@pytest.mark.parametrize("args,message", [
    (("nope", 2, 2), "unknown schedule"),
    (("gpipe", 0, 2), "at least one pipeline rank"),
    (("gpipe", 2, 0), "at least one micro-batch"),
    (("naive", 2, 4), "--microbatches 1"),
])
def test_make_schedule_rejects_bad_input(args, message):
    with pytest.raises(ConfigError, match=message):
        make_schedule(*args)


def test_costs_parse():
    assert Costs.parse("F=1,B=2") == Costs(F=1, B=2)
    assert Costs.parse("BW=3, comm=0.5").of("BW") == 3
    for bad in ("F", "X=1", "F=abc", "F=-1"):
        with pytest.raises(ValueError):
            Costs.parse(bad)


def test_communication_latency_lengthens_the_critical_path():
    """Each of the 2(P-1) hops on the critical path of one micro-batch costs `comm` once."""
    P, m, c = 4, 8, 0.25
    base = simulate(validated_schedule("gpipe", P, m)).makespan
    assert simulate(validated_schedule("gpipe", P, m), Costs(comm=c)).makespan == pytest.approx(base + 2 * (P - 1) * c)


# -- the schedules of the zero-bubble and interleaving papers ------------------------------

ALL = ["naive", "gpipe", "1f1b", "interleaved", "looped-bfs", "zb-h1", "zb-h2", "zbv"]


def accepted_microbatches(name, P):
    """The m each schedule accepts (see each generator's docstring)."""
    if name == "naive":
        return [1]
    if name == "interleaved":
        return [P, 2 * P, 3 * P]
    if name == "looped-bfs":
        return [P, P + 1, 2 * P, 3 * P + 1]
    return [1, 2, P - 1, P, 2 * P, 3 * P + 1]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("P", range(2, 9))
def test_every_schedule_validates(name, P):
    for m in accepted_microbatches(name, P):
        if m >= 1:
            validate(make_schedule(name, P, m))


@pytest.mark.parametrize("P,m", [(2, 2), (4, 8), (4, 5), (6, 19)])
@pytest.mark.parametrize("F,B,W", [(1, 1, 1), (1, 1, 1.5), (1, 2, 1), (2, 1, 0.5), (1, 2, 3),
                                   (2, 1, 1.5), (0.5, 3, 0.25)])
def test_zb_h1_textbook_bubble_holds_for_any_w(P, m, F, B, W):
    """The paper's (P-1)(F+B-W) while W <= min(F, B); beyond, the warm-up's (P-1)F or the
    cool-down's (P-1)B cannot be filled: (P-1) max(F+B-W, F, B), written out here."""
    costs = Costs(F=F, B=B, W=W)
    bubble = (P - 1) * max(F + B - W, F, B)
    expected = bubble / (m * (F + B + W) + bubble)
    assert BUBBLE_FORMULAS["zb-h1"](P, m, 1, costs) == pytest.approx(expected)
    assert simulate(validated_schedule("zb-h1", P, m), costs).bubble_fraction == \
        pytest.approx(expected)


def test_zb_h1_with_a_long_w_is_not_below_what_any_schedule_can_reach():
    """P=4, m=8, F=B=1, W=1.5: 0.0968, no less: the last rank starts after 3 F."""
    formula = BUBBLE_FORMULAS["zb-h1"](4, 8, 1, Costs(W=1.5))
    assert round(formula, 4) == 0.0968
    assert formula >= 3 * 1.0 / (8 * 3.5 + 3 * 1.0) - 1e-12


@pytest.mark.parametrize("P", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("costs", [Costs(), Costs(F=1, B=2, W=1), Costs(F=2, B=1, W=0.5)])
def test_bubble_per_rank_1f1b_and_zb_h1(P, costs):
    """Qi et al.: one flushed step lasts m(F+B+W) plus the bubble: 1f1b (P-1)(F+B+W),
    zb-h1 (P-1)(F+B-W); with P=4, m=8 and unit costs, 33 and 27."""
    m = 2 * P
    work = m * (costs.F + costs.B + costs.W)
    assert simulate(validated_schedule("1f1b", P, m), costs).makespan == pytest.approx(
        work + (P - 1) * (costs.F + costs.B + costs.W))
    assert simulate(validated_schedule("zb-h1", P, m), costs).makespan == pytest.approx(
        work + (P - 1) * (costs.F + costs.B - costs.W))


def test_the_papers_example_numbers():
    assert simulate(validated_schedule("1f1b", 4, 8)).makespan == 33
    assert simulate(validated_schedule("zb-h1", 4, 8)).makespan == 27


@pytest.mark.parametrize("P", [2, 3, 4, 6, 8])
def test_zb_h2_has_no_bubble_in_the_steady_state(P):
    """(P-1)(F+B-2W) = 0 with unit costs: back-to-back steps take exactly m(F+B+W).
    One flushed step still pays the parallelogram's edges."""
    from mpipipe.plan.simulate import steady_state

    m = 2 * P
    schedule = validated_schedule("zb-h2", P, m)
    per_step, bubble = steady_state(schedule)
    assert per_step == pytest.approx(3 * m) and bubble == pytest.approx(0, abs=1e-12)
    assert simulate(schedule).makespan > 3 * m
    assert steady_state(validated_schedule("1f1b", P, m))[0] == pytest.approx(3 * m + 3 * (P - 1))


@pytest.mark.parametrize("P", [2, 3, 4, 5, 8])
def test_peak_stash_on_the_first_rank(P):
    m = 3 * P
    assert peak_stash(make_schedule("1f1b", P, m))[0] == P
    assert peak_stash(make_schedule("zb-h1", P, m))[0] == P
    assert peak_stash(make_schedule("zb-h2", P, m))[0] == 2 * P - 1
    assert peak_stash(make_schedule("gpipe", P, m))[0] == m
    # zbv counts half-size chunk-micro-batches: 2P of them are 1F1B's P micro-batches
    assert max(peak_stash(make_schedule("zbv", P, m))) == 2 * P


@pytest.mark.parametrize("P,m,V", [(2, 4, 2), (4, 8, 2), (4, 8, 4), (4, 12, 3), (8, 16, 2)])
def test_interleaved_bubble_over_ideal_is_p_minus_1_over_v_m(P, m, V):
    """Narayanan et al. 2021: bubble time / ideal compute time = (P-1) / (V m)."""
    timeline = simulate(validated_schedule("interleaved", P, m, V))
    ideal = m * 3
    assert (timeline.makespan - ideal) / ideal == pytest.approx((P - 1) / (V * m))
    assert timeline.bubble_fraction < simulate(validated_schedule("1f1b", P, m)).bubble_fraction


@pytest.mark.parametrize("P,m,V", [(2, 4, 2), (4, 8, 2), (4, 5, 3)])
def test_looped_bfs_is_gpipe_over_v_m_virtual_microbatches(P, m, V):
    assert simulate(validated_schedule("looped-bfs", P, m, V)).bubble_fraction == pytest.approx(
        (P - 1) / (V * m + P - 1))
    assert peak_stash(make_schedule("looped-bfs", P, m, V)) == [V * m] * P


def test_zbv_is_a_v():
    schedule = make_schedule("zbv", 4, 8)
    assert schedule.stage_map == [[0, 7], [1, 6], [2, 5], [3, 4]]
    assert schedule.place(7) == (0, 1)          # the first rank computes the loss
    lowered = lower(schedule)
    turn = [a for a in lowered.programs[3] if a.kind.startswith(("SEND", "RECV"))]
    assert all(a.peer == 2 for a in turn)       # stages 3 -> 4 hand over without a message
    assert simulate(lowered).bubble_fraction < simulate(validated_schedule("zb-h1", 4, 8)).bubble_fraction


@pytest.mark.parametrize("args,message", [
    (("interleaved", 4, 6, 2), "multiple of the pipeline size"),
    (("interleaved", 4, 8, 1), "--virtual-stages 2 or more"),
    (("looped-bfs", 4, 2, 2), "at least as many micro-batches as ranks"),
    (("zbv", 4, 8, 3), "always has 2 chunks"),
    (("1f1b", 4, 8, 2), "one stage per rank"),
])
def test_chunked_schedules_say_what_they_accept(args, message):
    with pytest.raises(ConfigError, match=message):
        make_schedule(*args)


def test_recompute_adds_one_forward_to_every_backward():
    P, m = 4, 8
    base = simulate(validated_schedule("1f1b", P, m))
    again = simulate(validated_schedule("1f1b", P, m), Costs(recompute=True))
    assert sum(again.busy) == pytest.approx(sum(base.busy) + P * m * 1.0)
    assert again.makespan == pytest.approx((m + P - 1) * 4)


def test_unequal_stages_and_messages_break_the_promise():
    P, m = 4, 8
    slow_last = simulate(validated_schedule("1f1b", P, m), Costs(stage_factors=(1, 1, 1, 2)))
    # the slowest stage sets the pace: m of its (F + BW) plus the others' warm-up and cool-down
    assert slow_last.makespan == pytest.approx(m * 6 + (P - 1) * 3)
    latency = simulate(validated_schedule("zb-h1", P, m), Costs(comm=0.5))
    assert latency.makespan > simulate(validated_schedule("zb-h1", P, m)).makespan


@pytest.mark.parametrize("name, V", [("1f1b", 1), ("zb-h1", 1), ("interleaved", 2)])
def test_costs_read_back_from_a_run_keep_each_stage_its_speed(name, V):
    """A 'run' whose last stage is twice as slow, read back into costs, plans that same run;
    the plain mean-cost model would plan equal stages and miss the bubble they open."""
    schedule = validated_schedule(name, 4, 8, V)
    factors = tuple([1.0] * (schedule.num_stages - 1) + [2.0])
    ran = simulate(schedule, Costs(F=1.0, B=1.5, W=0.5, BW=2.0, stage_factors=factors))
    from mpipipe.plan.simulate import costs_from_events

    replanned = simulate(schedule, costs_from_events(ran.events, schedule.chunks, False, schedule))
    assert replanned.makespan == pytest.approx(ran.makespan, rel=1e-9)
    assert replanned.busy == pytest.approx(ran.busy, rel=1e-9)
    equal = simulate(schedule, costs_from_events(ran.events, schedule.chunks))
    assert equal.bubble_fraction < ran.bubble_fraction - 0.02


def _gpipe_by_hand(forward, backward):
    """GPipe's step length from the recurrences: F(s, i) starts once F(s, i-1) and F(s-1, i)
    have ended; the backwards run in reverse, after the stage's last forward.
    forward[s][i], backward[s][i]: the time of each action."""
    P, m = len(forward), len(forward[0])
    f_end = [[0.0] * m for _ in range(P)]
    for s in range(P):
        for i in range(m):
            f_end[s][i] = max(f_end[s][i - 1] if i else 0.0, f_end[s - 1][i] if s else 0.0) \
                + forward[s][i]
    b_end = [[0.0] * m for _ in range(P)]
    for s in reversed(range(P)):
        for i in range(m):
            ready = max(b_end[s][i - 1] if i else f_end[s][m - 1],
                        b_end[s + 1][i] if s < P - 1 else 0.0)
            b_end[s][i] = ready + backward[s][i]
    return max(b_end[s][m - 1] for s in range(P))


def test_replay_plays_each_action_for_its_own_time():
    """A 'measured' GPipe step with a different time for every action, replayed, ends when
    the textbook recurrences say; slow messages only ever make the measurement longer."""
    import random

    from mpipipe.schedules.actions import Event
    from mpipipe.plan.simulate import replay

    P, m = 3, 5
    rng = random.Random(7)
    forward = [[rng.uniform(0.5, 2.0) for _ in range(m)] for _ in range(P)]
    backward = [[rng.uniform(1.0, 3.0) for _ in range(m)] for _ in range(P)]
    schedule = validated_schedule("gpipe", P, m)
    events, at = [], [0.0] * P      # each rank's actions back to back: the times are what count
    for rank, program in enumerate(schedule.programs):
        for action in program:
            if action.kind in (F, BW):
                took = (forward if action.kind == F else backward)[rank][action.microbatch]
                events.append(Event(rank, action, at[rank], at[rank] + took))
                at[rank] += took
    played = replay(schedule, events)
    assert played.makespan == pytest.approx(_gpipe_by_hand(forward, backward), rel=1e-12)
    assert sum(played.busy) == pytest.approx(sum(at), rel=1e-12)
    # a run whose messages cost 0.3 is never shorter than its replay with free messages
    slow = simulate(schedule, Costs(comm=0.3))
    assert replay(schedule, slow.events).makespan < slow.makespan - 0.3


def test_replay_counts_a_repeated_forward_with_its_backward():
    from mpipipe.schedules.actions import RECOMPUTE, Event
    from mpipipe.plan.simulate import replay

    schedule = validated_schedule("1f1b", 2, 4)
    planned = simulate(schedule, Costs(recompute=True))      # BW = 3: R (1) then BW (2)
    split = []
    for e in planned.events:
        if e.action.kind == BW:
            split.append(Event(e.rank, Action(RECOMPUTE, e.action.microbatch), e.start, e.start + 1))
            split.append(Event(e.rank, e.action, e.start + 1, e.end))
        elif e.action.kind == F:
            split.append(e)
    assert replay(schedule, split).makespan == pytest.approx(planned.makespan, rel=1e-12)
