"""The GPT from the command line: train on sums or on a text file, then sample."""

import subprocess
import sys

from mpipipe.comm.launcher import mpiexec_command

SMALL = ["--model", "gpt", "--layers", "2", "--hidden", "16", "--heads", "2", "--steps", "20",
         "--global-batch", "16", "--microbatches", "2", "--quiet"]


def test_train_then_sample(tmp_path):
    done = subprocess.run([*mpiexec_command(2), sys.executable, "-m", "mpipipe", "train", *SMALL,
                           "--checkpoint-dir", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "held out      loss" in done.stdout
    assert "mpipipe train:" not in done.stdout + done.stderr      # --quiet: no banner
    sample = subprocess.run([sys.executable, "-m", "mpipipe", "sample", "--checkpoint-dir",
                             str(tmp_path), "--prompt", "12+34=", "--prompt", "1+1="],
                            capture_output=True, text=True, timeout=60)
    assert sample.returncode == 0, sample.stderr
    lines = sample.stdout.splitlines()
    assert lines[0].startswith("12+34=") and lines[1].startswith("1+1=")
    assert all(set(line) <= set("0123456789+=.") for line in lines)
    bad = subprocess.run([sys.executable, "-m", "mpipipe", "sample", "--checkpoint-dir",
                          str(tmp_path), "--prompt", "hello"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "never saw" in bad.stderr


def test_the_banner_says_what_is_split():
    done = subprocess.run([*mpiexec_command(2), sys.executable, "-m", "mpipipe", "train",
                           *SMALL[:-1], "--steps", "1"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    banner = done.stdout.splitlines()[0]
    assert "GPT of 2 transformer blocks (width 16, 2 heads, 9 tokens a sample)" in banner
    assert "blocks per stage [2, 2] (the embedding and the head count as blocks)" in banner


def test_train_on_a_text_file(tmp_path):
    text = tmp_path / "poem.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    done = subprocess.run([*mpiexec_command(2), sys.executable, "-m", "mpipipe", "train", *SMALL,
                           "--text", str(text), "--seq-len", "16", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert '"held_out_loss"' in done.stdout.splitlines()[-1]


def test_gpt_settings_are_checked():
    done = subprocess.run([*mpiexec_command(2), sys.executable, "-m", "mpipipe", "train",
                           "--model", "gpt", "--hidden", "10", "--heads", "4"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("does not split into --heads 4") == 1
    done = subprocess.run([*mpiexec_command(2), sys.executable, "-m", "mpipipe", "train",
                           "--data", "arithmetic"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "use --model gpt" in done.stderr
    done = subprocess.run([*mpiexec_command(2), sys.executable, "-m", "mpipipe", "train",
                           "--model", "gpt", "--layers", "1", "--schedule", "interleaved"],
                          capture_output=True, text=True, timeout=60)
    # 4 stages need 4 blocks; the embedding and the head are two of them
    assert done.returncode == 2
    assert done.stderr.count("the GPT has only 3 blocks") == 1 and "use --layers 2" in done.stderr
