"""Nothing hangs, nothing is lost: injected faults, time-outs, NaNs, checkpoints, resume."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from mpipipe import checkpoint
from mpipipe.comm.launcher import find_mpiexec, mpi_family, mpiexec_command

BOUND = 30  # seconds: a failing job must be over well within this


def train(ranks, *args, fault=None, timeout=120):
    env = dict(os.environ)
    env.pop("MPIPIPE_FAULT", None)
    if fault:
        env["MPIPIPE_FAULT"] = fault
    command = [*mpiexec_command(ranks), sys.executable, "-m", "mpipipe", "train", "--quiet",
               *args]
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    return done, time.monotonic() - start


SMALL = ["--layers", "4", "--hidden", "16", "--microbatches", "4", "--global-batch", "32",
         "--optimizer", "adam", "--data", "teacher", "--samples", "256"]


def stage_arrays(folder):
    """Every array of every stage file of a checkpoint, by block: layout-independent."""
    arrays = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".npz"):
            with np.load(os.path.join(folder, name)) as data:
                arrays.update({k: data[k] for k in data.files})
    return arrays


def test_an_exception_on_one_rank_ends_the_job_and_the_checkpoint_resumes_exactly(tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    done, _ = train(2, *SMALL, "--steps", "6", "--checkpoint-dir", str(whole))
    assert done.returncode == 0, done.stderr
    done, seconds = train(2, *SMALL, "--steps", "6", "--checkpoint-dir", str(broken),
                          "--checkpoint-every", "2", fault="raise:1:4")
    assert done.returncode == 1 and seconds < BOUND
    assert "[rank 1] Traceback" in done.stderr and done.stderr.count("Traceback") == 1
    assert "InjectedFault: injected fault on rank 1 at step 4" in done.stderr
    assert checkpoint.complete_steps(broken) == [2]            # step 4 never completed
    done, _ = train(2, *SMALL, "--steps", "6", "--checkpoint-dir", str(broken), "--resume")
    assert done.returncode == 0, done.stderr
    ours, reference = stage_arrays(broken / "step-00000006"), stage_arrays(whole / "step-00000006")
    assert ours.keys() == reference.keys()
    for key in reference:                                      # bit for bit, float64
        assert np.array_equal(ours[key], reference[key]), key


# What the launcher returns when a rank is killed by SIGKILL (docs/failures.md).
KILLED_EXIT = {"mpich": 9, "openmpi": 137}


def test_a_killed_rank_ends_the_job(tmp_path):
    done, seconds = train(3, *SMALL, "--steps", "50", "--checkpoint-dir", str(tmp_path),
                          "--checkpoint-every", "1", fault="kill:1:3")
    assert seconds < BOUND
    assert checkpoint.complete_steps(tmp_path) == [1, 2]        # the job ran until step 3
    assert "[rank 1] MPIPIPE_FAULT: killing this rank (SIGKILL) at step 3" in done.stderr
    family = mpi_family(find_mpiexec())
    if family in KILLED_EXIT:
        assert done.returncode == KILLED_EXIT[family], (done.returncode, done.stderr)
    assert "signal 9" in done.stdout + done.stderr           # the launcher's own report
    if family == "openmpi":
        assert "process rank 1 with PID" in done.stderr


def test_a_hung_rank_is_named_by_the_timeout():
    done, seconds = train(3, *SMALL, "--steps", "6", "--timeout", "2", fault="hang:1:3")
    assert done.returncode == 4 and seconds < BOUND
    assert "step 3: waited more than 2 s for RECV_" in done.stderr
    assert "from rank 1" in done.stderr


def test_nan_is_caught_at_its_step_and_stage():
    done, _ = train(4, *SMALL, "--steps", "6", fault="nan:2:3")
    assert done.returncode == 3
    message = "step 3: the loss is nan; NaN/Inf first appeared in the forward of stage 2"
    assert done.stderr.count(message) == 1, done.stderr
    done, _ = train(2, *SMALL, "--steps", "6", "--no-nan-check", fault="nan:1:3")
    assert done.returncode == 0


def test_a_failed_check_exits_1_and_a_passed_one_0():
    done, _ = train(2, *SMALL, "--steps", "3", "--check")
    assert done.returncode == 0 and "check         passed" in done.stdout, done.stderr
    done, _ = train(2, *SMALL, "--steps", "3", "--check", fault="skew:1:2")
    assert done.returncode == 1 and "check         FAILED" in done.stdout, done.stderr


def test_blocking_waits_train_exactly():
    """--wait block: MPI's own Wait for every message and the all-reduce (pp=2 x dp=2)."""
    done, _ = train(4, *SMALL, "--pp", "2", "--dp", "2", "--steps", "3", "--wait", "block",
                    "--check", timeout=90)
    assert done.returncode == 0 and "check         passed" in done.stdout, done.stderr


def test_a_diverging_run_stops_with_a_message():
    done, _ = train(2, *SMALL, "--steps", "30", "--optimizer", "sgd", "--lr", "1e6")
    assert done.returncode == 3 and "NaN/Inf first appeared" in done.stderr
    assert "RuntimeWarning" not in done.stderr


def test_a_checkpoint_loads_into_another_pp_and_dp(tmp_path):
    whole, moved = tmp_path / "whole", tmp_path / "moved"
    settings = [*SMALL, "--layers", "6", "--optimizer", "sgd"]
    assert train(2, *settings, "--steps", "6", "--checkpoint-dir", str(whole))[0].returncode == 0
    assert train(2, *settings, "--steps", "3", "--checkpoint-dir", str(moved))[0].returncode == 0
    done, _ = train(4, *settings, "--pp", "2", "--dp", "2", "--steps", "6", "--checkpoint-dir",
                    str(moved), "--resume", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["first_step"] == 3
    ours, reference = stage_arrays(moved / "step-00000006"), stage_arrays(whole / "step-00000006")
    for key in reference:   # another dp sums gradients in another order: equal to round-off
        assert np.allclose(ours[key], reference[key], rtol=1e-9, atol=1e-12), key
    done, _ = train(1, *settings, "--pp", "1", "--steps", "7", "--checkpoint-dir", str(moved),
                    "--resume")
    assert done.returncode == 0, done.stderr


def test_an_unfinished_checkpoint_is_ignored(tmp_path):
    root = tmp_path / "ck"
    assert train(2, *SMALL, "--steps", "2", "--checkpoint-dir", str(root))[0].returncode == 0
    torn = root / "step-00000003"          # a crash while writing step 3: no manifest
    torn.mkdir()
    (torn / "stage000.npz").write_bytes(b"half a file")
    assert checkpoint.complete_steps(root) == [2]
    done, _ = train(2, *SMALL, "--steps", "4", "--checkpoint-dir", str(root), "--resume", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["first_step"] == 2


def test_old_checkpoints_are_pruned(tmp_path):
    root = tmp_path / "ck"
    done, _ = train(2, *SMALL, "--steps", "6", "--checkpoint-dir", str(root), "--checkpoint-every",
                    "1", "--keep-checkpoints", "2")
    assert done.returncode == 0
    assert checkpoint.complete_steps(root) == [5, 6] and sorted(os.listdir(root)) == [
        "step-00000005", "step-00000006"]


@pytest.mark.parametrize("ranks", [1, 4])
@pytest.mark.parametrize("args,message", [
    (["--microbatches", "0"], "--microbatches must be at least 1"),
    (["--layers", "0"], "--layers must be at least 1"),
    (["--schedule", "interleaved", "--microbatches", "6", "--pp", "4", "--global-batch", "48"],
     None),
    (["--global-batch", "100"], "global batch 100 does not split"),
    (["--resume"], "--checkpoint-every, --resume and --resume-step need --checkpoint-dir"),
    (["--schedule", "nope"], "invalid choice: 'nope'"),
    (["--lr", "0"], "--lr must be positive"),
    (["--dp", "3"], "cannot"),
    (["--schedule", "interleaved", "--virtual-stages", "4", "--layers", "3"],
     "pipeline stages but the model has only 3 layers"),
    (["--virtual-stages", "2"], "--virtual-stages 2 needs interleaved, looped-bfs, zbv, v-half, v-min or dualpipev"),
    (["--schedule-file", "no-such-file.csv"], "cannot read the schedule file no-such-file.csv"),
])
def test_bad_input_on_one_and_four_ranks(ranks, args, message):
    if message is None:     # depends on the world size: pp=4 on one rank is a grid error
        message = ("needs the micro-batches to be a multiple of the pipeline size" if ranks == 4
                   else "1 MPI rank(s) cannot form a pp=4 x dp=1 grid")
    done, seconds = train(ranks, *args, timeout=60)
    assert done.returncode == 2 and seconds < BOUND
    assert done.stderr.count(message) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_resuming_another_model_is_refused(tmp_path):
    root = tmp_path / "ck"
    assert train(2, *SMALL, "--steps", "2", "--checkpoint-dir", str(root))[0].returncode == 0
    done, _ = train(2, *SMALL, "--hidden", "8", "--steps", "4", "--checkpoint-dir", str(root),
                    "--resume")
    assert done.returncode == 2
    assert done.stderr.count("was written for another spec") == 1
    assert "hidden 16 there, 8 now; resume with the same" in done.stderr


@pytest.mark.parametrize("change,there_now", [
    (["--optimizer", "sgd"], "another optimizer: adam there, sgd now"),
    (["--seed", "1"], "another spec: seed 0 there, 1 now"),
    (["--data", "spiral"], "another data: teacher there, spiral now"),
])
def test_resuming_with_other_model_optimizer_or_data_is_refused(tmp_path, change, there_now):
    first = [*SMALL, "--input-dim", "2", "--output-dim", "3"]    # the spiral's widths too
    assert train(2, *first, "--steps", "2", "--checkpoint-dir", str(tmp_path))[0].returncode == 0
    done, _ = train(2, *first, *change, "--steps", "3", "--checkpoint-dir", str(tmp_path),
                    "--resume")
    assert done.returncode == 2 and done.stderr.count(there_now) == 1, done.stderr


@pytest.mark.parametrize("change,note", [
    (["--lr", "0.01"], "resuming with --lr 0.01; the checkpoint was written with 0.003"),
    (["--global-batch", "64"], "resuming with --global-batch 64; the checkpoint was written "
                               "with 32"),
    (["--pp", "1", "--dp", "2", "--schedule", "gpipe", "--microbatches", "2"], None),
])
def test_resuming_with_another_lr_or_batch_is_said_and_a_layout_is_free(tmp_path, change, note):
    assert train(2, *SMALL, "--steps", "2", "--checkpoint-dir", str(tmp_path))[0].returncode == 0
    done, _ = train(2, *SMALL, *change, "--steps", "3", "--checkpoint-dir", str(tmp_path),
                    "--resume", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["first_step"] == 2
    if note:
        assert done.stderr.count(f"mpipipe train: note: {note}") == 1, done.stderr
    else:
        assert "note:" not in done.stderr


def test_bad_fault_specification_is_a_clear_error():
    done, _ = train(2, *SMALL, "--steps", "2", fault="explode:1:1")
    assert done.returncode == 2 and "MPIPIPE_FAULT='explode:1:1'" in done.stderr
