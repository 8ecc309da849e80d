"""DualPipeV: its phases, what it accepts, its memory, and its bubble against the simulator.

The bubble formula is written out here again, in the words of docs/schedules.md, and held
against mpipipe's simulator for P = 1..8 and many costs; at f = i >= w it must
also be DeepSeek's (PP/2-1)(F&B + B - 3W) with PP = 2P stages.
"""

import itertools
import random

import pytest

from mpipipe.errors import ConfigError
from mpipipe.schedules import BUBBLE_FORMULAS, make_schedule, validated_schedule
from mpipipe.schedules.actions import BW
from mpipipe.plan.simulate import Costs, peak_stash, simulate


def readme_bubble(P, f, i, w):
    """docs/schedules.md: idle time per rank, chunk costs f (forward), i (input gradient), w (weight
    gradient), a pair costing f + (i + w)."""
    return (P - 1) * max(0, i - w) + (P - 2) * f + max(P * f, (P - 1) * i)


def test_rank_0_runs_the_eight_phases():
    """P = 2, m = 4, by hand from the phases: nF0 (2), nF0F1 (1), nB1W1F1 (1),
    nF0B1F1B0 (1 pair of pairs), nB1F1B0 (1), nB1B0 (1, B0 split), nWB0 (1), nW (1)."""
    program = make_schedule("dualpipev", 2, 4).programs[0]
    assert " ".join(map(str, program)) == (
        "F0 F1 "                    # 1. nF0
        "F2 F0:1 "                  # 2. nF0F1
        "B0:1 W0:1 F1:1 "           # 3. nB1W1F1
        "F3& BW1:1 F2:1& BW0 "      # 4. nF0B1F1B0: the pairs F0&B1, F1&B0
        "BW2:1 F3:1& BW1 "          # 5. nB1F1B0
        "BW3:1 B2 "                 # 6. nB1B0, B0 split from the middle on (rank 0 is even)
        "W2 B3 "                    # 7. nWB0
        "W3")                       # 8. nW


def test_the_last_rank_runs_its_first_f0_b1_apart():
    program = make_schedule("dualpipev", 3, 6).programs[2]
    first = next(i for i, a in enumerate(program) if a.kind == BW)
    assert str(program[first - 1]) == "F3" and str(program[first]) == "BW0:1"   # apart
    assert str(program[first + 1]) == "F3:1&"       # then the pair F1&B0


@pytest.mark.parametrize("P,m", [(P, m) for P in range(1, 9) for m in (2 * P, 2 * P + 1, 3 * P)])
def test_every_accepted_size_validates_and_holds_2p_plus_1(P, m):
    schedule = validated_schedule("dualpipev", P, m)
    assert schedule.stage_map == [[r, 2 * P - 1 - r] for r in range(P)]
    assert peak_stash(make_schedule("dualpipev", P, m)) == [2 * P + 1] * P


@pytest.mark.parametrize("args,message", [
    ((4, 7), r"at least 2 x ranks micro-batches: m=7, P=4; try --microbatches 8"),
    ((2, 1), "at least 2 x ranks"),
    ((2, 4, 3), "always has 2 chunks"),
])
def test_what_it_refuses(args, message):
    with pytest.raises(ConfigError, match=message):
        make_schedule("dualpipev", *args)


COSTS = [(0.5, 0.5, 0.5), (0.5, 1, 0.5), (1, 0.5, 0.25), (0.5, 0.5, 0), (1, 2, 3)] + [
    tuple(random.Random(seed).choice([0, 0.25, 0.5, 1, 1.5, 2, 3]) for _ in range(3))
    for seed in range(25)]


@pytest.mark.parametrize("f,i,w", [c for c in COSTS if c[0] or c[1]])
@pytest.mark.parametrize("P", [1, 2, 3, 5, 8])
def test_bubble_is_the_readme_formula(P, f, i, w):
    costs = Costs(F=2 * f, B=2 * i, W=2 * w)       # a rank's share: two chunks
    for m in (2 * P, 3 * P + 1):
        timeline = simulate(validated_schedule("dualpipev", P, m), costs)
        assert max(timeline.busy) == pytest.approx(2 * m * (f + i + w))
        assert timeline.makespan - max(timeline.busy) == pytest.approx(readme_bubble(P, f, i, w))
        bubble = readme_bubble(P, f, i, w)
        assert BUBBLE_FORMULAS["dualpipev"](P, m, 2, costs) == pytest.approx(
            bubble / (2 * m * (f + i + w) + bubble))


@pytest.mark.parametrize("P,f,w", list(itertools.product([2, 3, 4, 8], [0.5, 1, 2], [0, 0.25, 0.5])))
def test_deepseeks_formula_where_forward_and_input_gradient_cost_the_same(P, f, w):
    """DeepSeek's (PP/2-1)(F&B + B - 3W), PP = 2P, F&B = F + B (run one after the other),
    B the full backward: exact when f = i >= w."""
    i, b = f, f + w
    deepseek = (2 * P / 2 - 1) * ((f + b) + b - 3 * w)
    timeline = simulate(validated_schedule("dualpipev", P, 2 * P), Costs(F=2 * f, B=2 * i, W=2 * w))
    assert timeline.makespan - max(timeline.busy) == pytest.approx(deepseek)


def test_with_equal_costs_it_has_zb_h1s_bubble():
    for P, m in [(2, 8), (4, 8), (4, 16)]:
        dpv = simulate(validated_schedule("dualpipev", P, m)).bubble_fraction
        zb = simulate(validated_schedule("zb-h1", P, m)).bubble_fraction
        assert dpv == pytest.approx((P - 1) / (3 * m + P - 1)) == pytest.approx(zb)
