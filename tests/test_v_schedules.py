"""V-Min and V-Half (Qi et al., NeurIPS 2024) against the paper's numbers.

The references here are formulas written out, not the generators' code:
  peak memory (micro-batches' activations, a whole stage's each): 1F1B P,
      V-Half (P+2)//2, V-Min (P+4)//3 (the paper's table);
  one flushed step with F = B = W (a rank's share; a chunk pass is half):
      each rank idles (4P-5+x) chunk passes in V-Min (x = 2 if 3 | P) and
      (7P-7+y)/2 in V-Half (y = 3 if P is even), derived in their docstrings
      from the blocks' slots; about 2/3 and 7/12 of 1F1B's 6(P-1);
  the steady state, unequal costs, time per micro-batch per rank: V-Half
      F+B+W while W+2B >= 2F and W+2F >= 2B (the paper's condition), else
      max(2B-2F-W, 2F-2B-W)/2 more; V-Min max(3 max(F, B), F+B+W).
"""

import pytest

from mpipipe.errors import ConfigError
from mpipipe.plan.simulate import Costs, peak_stash, simulate
from mpipipe.schedules import make_schedule, validated_schedule


def peak_micro_batches(name, P, m):
    return max(peak_stash(make_schedule(name, P, m))) / 2     # two half-stage chunks


@pytest.mark.parametrize("P", range(2, 25))
def test_peak_memory_is_the_papers(P):
    assert peak_micro_batches("v-min", P, 2 * P) == (P + 4) // 3
    assert peak_micro_batches("v-half", P, 2 * P) == (P + 2) // 2
    assert max(peak_stash(make_schedule("1f1b", P, 2 * P))) == P


@pytest.mark.parametrize("P", range(2, 17))
@pytest.mark.parametrize("extra", [0, 1, 7])
def test_one_flushed_step_with_equal_costs(P, extra):
    m = P + extra
    F = 2.0                          # a chunk pass then costs 1
    x = 2 if P % 3 == 0 else 0
    y = 3 if P % 2 == 0 else 0
    for name, idle in (("v-min", 4 * P - 5 + x), ("v-half", (7 * P - 7 + y) / 2)):
        timeline = simulate(validated_schedule(name, P, m), Costs(F, F, F))
        assert timeline.makespan == pytest.approx(3 * F * m + idle), name
    one_f_one_b = simulate(validated_schedule("1f1b", P, m), Costs(F, F, F))
    assert one_f_one_b.makespan == pytest.approx(3 * F * m + 6 * (P - 1))


COSTS = [(1, 1, 1), (1, 1.2, 0.8), (1.2, 1, 0.8), (1, 1.5, 0.5), (1, 2, 1), (2, 1, 1),
         (1, 1, 2), (1, 2, 3), (0.5, 3, 2.5), (2.5, 0.5, 1.5), (3, 2, 0.5)]


@pytest.mark.parametrize("F,B,W", COSTS)
@pytest.mark.parametrize("P", [3, 4, 6, 7])
def test_steady_state_per_micro_batch(P, F, B, W):
    per_micro_batch = {
        "v-half": F + B + W + max(0, 2 * B - 2 * F - W, 2 * F - 2 * B - W) / 2,
        "v-min": max(3 * max(F, B), F + B + W),
    }
    for name, want in per_micro_batch.items():
        two, three = (simulate(validated_schedule(name, P, k * P), Costs(F, B, W)).makespan
                      for k in (2, 3))
        assert (three - two) / P == pytest.approx(want), name


def test_v_half_meets_its_condition_with_a_constant_bubble():
    """Where the paper's condition holds, more micro-batches add only their work."""
    F, B, W = 1.0, 1.2, 0.8             # W + 2B = 3.2 >= 2F, W + 2F = 2.8 >= 2B = 2.4
    steps = [simulate(validated_schedule("v-half", 5, m), Costs(F, B, W)).makespan - m * (F + B + W)
             for m in (5, 10, 40)]
    assert steps[0] == pytest.approx(steps[1]) == pytest.approx(steps[2])


def test_the_blocks_are_vs():
    schedule = make_schedule("v-min", 4, 8)
    assert schedule.stage_map == [[0, 7], [1, 6], [2, 5], [3, 4]]
    assert make_schedule("v-half", 4, 8).stage_map == schedule.stage_map


@pytest.mark.parametrize("name", ["v-min", "v-half"])
def test_only_two_chunks(name):
    with pytest.raises(ConfigError, match="always has 2 chunks"):
        make_schedule(name, 4, 8, 3)


@pytest.mark.parametrize("name", ["v-min", "v-half"])
@pytest.mark.parametrize("P,m", [(1, 1), (1, 4), (2, 1), (3, 2), (5, 3), (8, 33)])
def test_every_size_validates(name, P, m):
    schedule = validated_schedule(name, P, m)
    for program in schedule.programs:
        computed = [a for a in program if a.is_compute]
        assert len(computed) == 6 * m           # F, B, W on two chunks per micro-batch


def test_simulate_prints_the_formulas_beside_the_plan(capsys):
    from mpipipe.cli.main import main

    assert main(["simulate", "--schedule", "v-min", "--stages", "8", "--microbatches", "32"]) == 0
    out = capsys.readouterr().out
    idle = 4 * 8 - 5                    # chunk passes of cost 1/2: F = B = W = 1
    want = (idle / 2) / (32 * 3 + idle / 2)
    assert f"bubble fraction  {want:.4f}   (textbook, equal stages, no comm: {want:.4f})" in out
    assert f"peak memory      {(8 + 4) // 3} micro-batches' activations, fullest rank  " \
           f"(paper: {(8 + 4) // 3})" in out
