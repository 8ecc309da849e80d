"""--memory-budget N: the shortest zero-bubble-family schedule whose stash fits N.

The expected picks come from the papers' formulas: at P = 8, V-Min holds
(P+4)//3 = 4 micro-batches' activations and idles 4P-5 = 27 chunk passes per
step, V-Half holds (P+2)//2 = 5 and idles (7P-4)/2 = 26, ZB-V and ZB-H1 hold P,
ZB-H2 2P-1. With less than V-Min's 4 nothing fits.
"""

import pytest

from mpipipe.cli.main import main
from mpipipe.config import TrainConfig, with_defaults
from mpipipe.errors import ConfigError
from mpipipe.plan.memory_budget import FAMILY, pick_schedule
from mpipipe.plan.simulate import Costs, peak_stash, simulate
from mpipipe.schedules import validated_schedule

P, M = 8, 32


def test_the_tightest_budgets_pick_the_v_schedules():
    assert pick_schedule(P, M, (P + 4) // 3) == "v-min"
    assert pick_schedule(P, M, (P + 2) // 2) == "v-half"        # fits, and idles less


def test_no_schedule_fits_below_v_min():
    with pytest.raises(ConfigError, match=r"--memory-budget 3 .* v-min's 4 micro-batches"):
        pick_schedule(P, M, 3)


@pytest.mark.parametrize("budget", [4, 5, 6, 8, 10, 15, 40])
@pytest.mark.parametrize("costs", [Costs(1, 1, 1), Costs(1, 1.5, 0.5), Costs(1, 2, 2)])
def test_the_pick_fits_and_nothing_that_fits_is_shorter(budget, costs):
    name = pick_schedule(P, M, budget, costs)
    stash = {}
    for other in FAMILY:
        schedule = validated_schedule(other, P, M)
        chunk_share = 1 / schedule.chunks       # a V's chunk-micro-batch is half a stage's
        stash[other] = (max(peak_stash(schedule)) * chunk_share,
                        simulate(schedule, costs).makespan)
    assert stash[name][0] <= budget
    assert all(stash[name][1] <= time for peak, time in stash.values() if peak <= budget)


def test_a_run_configured_with_a_budget_gets_the_pick():
    c = with_defaults(TrainConfig(memory_budget=2), world_size=4)
    assert (c.schedule, c.chunks) == ("v-min", 2)


def test_simulate_takes_a_budget_and_refuses_one_too_small(capsys):
    assert main(["simulate", "--memory-budget", "5", "--stages", "8", "--microbatches", "32"]) == 0
    assert capsys.readouterr().out.startswith("v-half: 8 ranks x 2 chunks")
    assert main(["simulate", "--memory-budget", "3", "--stages", "8"]) == 2
    assert "no schedule of" in capsys.readouterr().err
    assert main(["simulate", "--memory-budget", "5", "--schedule", "1f1b"]) == 2
    assert "not both" in capsys.readouterr().err
