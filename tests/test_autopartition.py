"""--partition auto: the cut the simulator finds fastest, from each block's measured costs."""

import json
import subprocess
import sys

import pytest

from mpipipe.nn import autopartition
from mpipipe.comm.launcher import mpiexec_command
from mpipipe.schedules import validated_schedule


def test_a_heavy_last_block_gets_a_stage_of_its_own():
    """Blocks costing 1, 1, 1 and 3 (a head with the loss) on 2 stages: 3 + 3 beats any other
    cut, whatever the schedule; equal block counts (2 + 2) would leave the first stage idle."""
    times = [(1.0, 1.0, 1.0)] * 3 + [(3.0, 3.0, 3.0)]
    for name in ("gpipe", "1f1b", "zb-h1"):
        cut, timeline = autopartition.best_partition(validated_schedule(name, 2, 8), times)
        assert cut == [3, 1], name
        even = autopartition.predicted(validated_schedule(name, 2, 8), times, [2, 2])
        assert timeline.makespan < even.makespan


def test_the_planned_step_is_the_sum_of_its_blocks_when_one_stage_holds_them_all():
    times = [(0.5, 1.0, 0.25), (1.5, 2.0, 0.75)]
    cut, timeline = autopartition.best_partition(validated_schedule("1f1b", 1, 4), times)
    assert cut == [2]
    assert timeline.makespan == pytest.approx(4 * (0.5 + 1.0 + 0.25 + 1.5 + 2.0 + 0.75))


def test_the_local_search_finds_what_the_enumeration_finds(monkeypatch):
    times = [(1.0 + (i % 3), 2.0, 1.0) for i in range(10)] + [(6.0, 6.0, 2.0)]
    schedule = validated_schedule("1f1b", 4, 8)
    everything = autopartition.best_partition(schedule, times)
    monkeypatch.setattr(autopartition, "ENUMERATE_UP_TO", 1)     # force the local search
    searched = autopartition.best_partition(schedule, times)
    assert searched[1].makespan == pytest.approx(everything[1].makespan)


def test_auto_partition_trains_exactly_and_reports_its_plan():
    """Four ranks profile, agree on the same cut, and train the one-process model."""
    done = subprocess.run([*mpiexec_command(4), sys.executable, "-m", "mpipipe", "train",
                           "--model", "gpt", "--layers", "4", "--hidden", "16", "--heads", "2",
                           "--steps", "3", "--global-batch", "16", "--microbatches", "4",
                           "--dtype", "float64", "--partition", "auto", "--check", "--json"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "partition auto: blocks per stage" in done.stdout
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["check"]["passed"]
    assert summary["planned_span_s"] > 0 and 0 <= summary["planned_bubble_fraction"] < 1
    assert sum(summary["partition"]) == 6 and min(summary["partition"]) >= 1
