"""The `mpipipe` command as a user runs it, including under mpiexec."""

import json
import subprocess
import sys

import pytest

from mpipipe.cli import main
from mpipipe.comm.launcher import mpiexec_command


def run_mpi(ranks, *args, timeout=120):
    """`mpiexec -n ranks python -m mpipipe train ARGS`, killed if it hangs."""
    command = [*mpiexec_command(ranks), sys.executable, "-m", "mpipipe", "train", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_simulate_prints_the_textbook_figures(capsys):
    assert main(["simulate", "--schedule", "1f1b", "--stages", "4", "--microbatches", "8"]) == 0
    out = capsys.readouterr().out
    assert "bubble fraction  0.2727   (textbook, equal stages, no comm: 0.2727)" in out
    assert "peak stash       4 3 2 1 micro-batches" in out
    assert "makespan         33 " in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_simulate_and_export_take_pp_as_train_does(capsys, tmp_path):
    """--pp is train's name for P; simulate and export take it too (their own: --stages)."""
    assert main(["simulate", "--schedule", "gpipe", "--pp", "3", "--microbatches", "5",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["peak_stash"]) == 3
    assert summary["makespan"] == (5 + 3 - 1) * 3      # (m + P - 1)(F + B), F = 1, B = 2
    path = tmp_path / "s.csv"
    assert main(["export", "--schedule", "1f1b", "--pp", "3", "--microbatches", "4",
                 str(path)]) == 0
    rows = path.read_text().split()
    assert [row.split(",")[0] for row in rows] == ["0F0", "1F0", "2F0"]   # a row per rank


def test_simulate_json_and_costs(capsys):
    assert main(["simulate", "--schedule", "gpipe", "--stages", "2", "--microbatches", "3",
                 "--costs", "F=1,BW=3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["makespan"] == (3 + 2 - 1) * 4
    assert summary["peak_stash"] == [3, 3]


@pytest.mark.parametrize("args,message", [
    (["--costs", "F=x"], "'x' is not a number"),
    (["--schedule", "naive", "--microbatches", "2"], "--microbatches 1"),
])
def test_simulate_rejects_bad_input(capsys, args, message):
    assert main(["simulate", *args]) == 2
    assert message in capsys.readouterr().err


def test_simulate_json_keeps_the_actions_and_draws_the_picture(capsys, tmp_path):
    picture = tmp_path / "plan.png"
    assert main(["simulate", "--stages", "2", "--microbatches", "2", "--actions", "--json",
                 "--timeline", str(picture)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["actions"][1][:3] == ["RECV_F0<-r0", "F0", "BW0"]
    assert picture.stat().st_size > 0


def test_simulate_checks_the_picture_path_before_simulating(capsys, tmp_path):
    assert main(["simulate", "--timeline", str(tmp_path / "missing" / "plan.png")]) == 2
    assert "is not a writable folder" in capsys.readouterr().err


def test_simulate_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--stages", "0"])
    assert exit_info.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_topology(capsys):
    assert main(["topology", "--pp", "2", "--dp", "3"]) == 0
    assert "replica 2:  rank 4  rank 5" in capsys.readouterr().out


def test_topology_of_a_3d_grid(capsys):
    assert main(["topology", "--tp", "2", "--pp", "2", "--dp", "2"]) == 0
    out = capsys.readouterr().out
    assert "replica 0:  [ 0 1 ]  [ 2 3 ]" in out and "tp=2 x pp=2 x dp=2 = 8 ranks" in out


def test_simulate_versus_tp_gives_the_break_even(capsys):
    """1F1B on 2 ranks, m = 8, F=B=W=1: the pipeline's step is (m+P-1) 3 = 27; tensor
    parallelism's is m (3 + 2 tp_comm), equal when tp_comm = 3 (P-1) / (2 m) = 0.1875."""
    assert main(["simulate", "--stages", "2", "--microbatches", "8", "--costs", "tp_comm=0.25",
                 "--versus-tp", "--json"]) == 0
    versus = json.loads(capsys.readouterr().out)["versus_tp"]
    assert versus["pipeline_step"] == 27 and versus["tensor_step"] == 8 * (3 + 0.5)
    assert abs(versus["break_even_tp_comm"] - 0.1875) < 1e-12
    assert main(["simulate", "--stages", "2", "--microbatches", "8", "--costs", "tp_comm=0.1",
                 "--versus-tp"]) == 0
    assert "the tensor is faster here; the pipeline wins once one forward's tensor " \
           "all-reduces (tp_comm) cost more than 0.1875" in capsys.readouterr().out


def test_train_with_tensor_parallelism_reports_its_all_reduces(tmp_path, capsys):
    trace = tmp_path / "tp.json"
    done = run_mpi(4, "--model", "gpt", "--tp", "2", "--pp", "2", "--layers", "2", "--hidden",
                   "16", "--heads", "2", "--steps", "3", "--dtype", "float64", "--check",
                   "--json", "--microbatches", "4", "--global-batch", "16", "--trace", str(trace))
    assert done.returncode == 0, done.stderr
    assert "tp=2 x pp=2 x dp=1" in done.stdout and "check         passed" in done.stdout
    assert "'~': the part of an action spent in tensor-parallel all-reduces" in done.stdout
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    # stage 0: embedding + 1 block, stage 1: 1 block + head; 4 all-reduces a block and
    # micro-batch; a (4, 9, 16) float64 activation each (9 tokens a sample)
    assert summary["tp"] == 2 and summary["tensor_allreduces_per_step"] == [16, 16, 16, 16]
    assert summary["tensor_bytes_per_step"] == [16 * 4 * 9 * 16 * 8] * 4
    assert summary["messages_per_step"] == [4, 4, 4, 4]
    assert len(summary["peak_memory_bytes"]) == 4 and len(summary["tensor_wait_s"]) == 4
    assert main(["report", str(trace)]) == 0
    report = capsys.readouterr().out
    assert "tp=2, pp=2" in report and "of compute: tensor all-reduce ms" in report


def test_train_under_mpiexec_prints_loss_summary_timeline_and_json():
    done = run_mpi(2, "--steps", "6", "--microbatches", "4", "--check", "--json")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "step     6/6  loss" in out
    assert "bubble" in out and "peak stash    2 1 micro-batches" in out
    assert "rank 0 |" in out and "rank 1 |" in out
    assert "check         passed" in out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["schedule"] == "1f1b" and summary["pp"] == 2 and len(summary["losses"]) == 6
    assert summary["check"]["passed"] and summary["peak_stash"] == [2, 1]
    assert 0 <= summary["bubble_fraction"] < 1
    assert done.stderr.strip() == ""


@pytest.mark.parametrize("ranks,args,message", [
    (3, ["--pp", "2"], "3 MPI rank(s) cannot form a pp=2 x dp=1 grid"),
    (4, ["--dp", "2", "--global-batch", "100"], "global batch 100 does not split"),
    (2, ["--microbatches", "0"], "--microbatches must be at least 1"),
    (4, ["--layers", "3"], "4 pipeline stages but the model has only 3 layers"),
    (2, ["--schedule", "zigzag"], "invalid choice: 'zigzag'"),
    (2, ["--partition", "5,x"], "use uniform, params, or block counts"),
    (6, ["--model", "gpt", "--tp", "2", "--pp", "2", "--dp", "2"],
     "6 MPI rank(s) cannot form a tp=2 x pp=2 x dp=2 grid, which needs 8"),
])
def test_bad_input_fails_once_on_all_ranks_without_a_traceback(ranks, args, message):
    done = run_mpi(ranks, *args, timeout=60)
    assert done.returncode != 0
    assert done.stderr.count(message) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "step" not in done.stdout
