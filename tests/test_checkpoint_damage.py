"""A damaged checkpoint or a bad --checkpoint-dir is one line and exit 2, on rank 0 only,
before any step runs; a rank killed in the middle of a save loses nothing; a resume is
bit for bit the run that was never stopped.

Each damage is planted by hand here (truncate, flip a byte, break the JSON, point the
manifest outside its folder), not through mpipipe's own code.
"""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from mpipipe import checkpoint
from mpipipe.comm.launcher import find_mpiexec, mpi_family

from .test_failures import BOUND, KILLED_EXIT, SMALL, stage_arrays, train

STEP4 = "step-00000004"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Checkpoints of steps 2 and 4 of a 4-step run, and the run's losses; each test
    damages a copy."""
    root = tmp_path_factory.mktemp("saved")
    done, _ = train(2, *SMALL, "--steps", "4", "--checkpoint-dir", str(root),
                    "--checkpoint-every", "2", "--json")
    assert done.returncode == 0, done.stderr
    return root, json.loads(done.stdout.splitlines()[-1])["losses"]


def copy_of(saved, tmp_path):
    shutil.copytree(saved[0], tmp_path / "ck")
    return tmp_path / "ck"


def resume(root, *more):
    return train(2, *SMALL, "--steps", "6", "--checkpoint-dir", str(root), "--resume", *more)


def one_error_line(done, *needles):
    """Exit 2, and one line from mpipipe, from rank 0: no traceback, no other rank's echo
    (Open MPI's launcher adds its own notice of a non-zero exit, which is not ours)."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "[rank" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if "mpipipe" in line]
    assert len(lines) == 1 and lines[0].startswith("mpipipe train: error: "), done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [truncate, flip_a_byte], ids=["truncated", "flipped"])
def test_a_damaged_stage_file_is_named_and_the_intact_one_offered(saved, tmp_path, damage):
    root = copy_of(saved, tmp_path)
    damage(root / STEP4 / "stage001.npz")
    done, seconds = resume(root)
    one_error_line(done, f"{root / STEP4 / 'stage001.npz'} is damaged",
                   "sha256 is not the one recorded",
                   "the checkpoint of step 2 is intact: --resume-step 2")
    assert seconds < BOUND


def test_a_broken_manifest_is_named(saved, tmp_path):
    root = copy_of(saved, tmp_path)
    truncate(root / STEP4 / "manifest.json")
    done, _ = resume(root)
    one_error_line(done, f"{root / STEP4 / 'manifest.json'} cannot be read: not valid JSON",
                   "--resume-step 2")


@pytest.mark.parametrize("name", ["../stage001.npz", "/etc/stage001.npz", "b1.npz"])
def test_a_manifest_may_name_only_stage_files_of_its_folder(saved, tmp_path, name):
    root = copy_of(saved, tmp_path)
    path = root / STEP4 / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["files"][name] = manifest["files"].pop("stage001.npz")
    path.write_text(json.dumps(manifest))
    done, _ = resume(root)
    one_error_line(done, f"it names the file {name!r}, not a stage file of its own folder")


def test_a_file_without_the_arrays_of_its_layers_is_named(saved, tmp_path):
    """A file whose checksum matches (rewritten with the manifest) but lacks an array."""
    root = copy_of(saved, tmp_path)
    stage = root / STEP4 / "stage000.npz"
    with np.load(stage) as data:
        arrays = {k: data[k] for k in data.files if k != "b0.m"}
    np.savez(stage, **arrays)
    path = root / STEP4 / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["sha256"]["stage000.npz"] = hashlib.sha256(stage.read_bytes()).hexdigest()
    path.write_text(json.dumps(manifest))
    done, _ = resume(root)
    one_error_line(done, f"{stage} is damaged: it has no array b0.m")


def test_an_older_checkpoint_resumes_when_asked_and_bit_for_bit(saved, tmp_path):
    root = copy_of(saved, tmp_path)
    flip_a_byte(root / STEP4 / "stage000.npz")
    done, _ = train(2, *SMALL, "--steps", "4", "--checkpoint-dir", str(root), "--resume-step",
                    "2", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["first_step"] == 2
    assert result["losses"] == saved[1][2:]                  # the floats themselves
    ours, straight = stage_arrays(root / STEP4), stage_arrays(saved[0] / STEP4)
    assert ours.keys() == straight.keys()
    for key in straight:
        assert np.array_equal(ours[key], straight[key]), key


def test_resume_step_names_what_there_is(saved, tmp_path):
    done, _ = resume(copy_of(saved, tmp_path), "--resume-step", "3")
    one_error_line(done, "--resume-step 3:", "no complete checkpoint of step 3 (it has: 2, 4)")


@pytest.mark.parametrize("where, fault", [
    ("a-file", "is a file, not a folder"),
    ("a-file/below", "cannot be made a folder"),
    ("/proc", "is not writable"),          # unwritable even for root
])
def test_a_bad_checkpoint_folder_stops_before_the_first_step(tmp_path, where, fault):
    (tmp_path / "a-file").write_text("not a folder")
    folder = where if where.startswith("/") else str(tmp_path / where)
    done, seconds = train(2, *SMALL, "--steps", "500", "--checkpoint-dir", folder)
    one_error_line(done, f"--checkpoint-dir {folder} {fault}")
    assert "step " not in done.stdout and seconds < BOUND


def test_a_rank_killed_during_a_save_loses_nothing(tmp_path):
    """Rank 1 dies halfway through writing its file of step 4: step 2 stays complete and
    resumes to the very weights and losses of a run never stopped; the next save removes
    the half-written file and the folder that never got its manifest."""
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    done, _ = train(2, *SMALL, "--steps", "6", "--checkpoint-dir", str(whole), "--json")
    assert done.returncode == 0, done.stderr
    straight = json.loads(done.stdout.splitlines()[-1])["losses"]
    done, seconds = train(2, *SMALL, "--steps", "6", "--checkpoint-dir", str(broken),
                          "--checkpoint-every", "2", fault="save:1:4")
    assert done.returncode == KILLED_EXIT.get(mpi_family(find_mpiexec()), done.returncode) \
        and done.returncode != 0 and seconds < BOUND, done.stderr
    assert "killing this rank (SIGKILL) in the middle of writing" in done.stderr
    assert checkpoint.complete_steps(broken) == [2]
    assert any(".tmp-" in name for name in os.listdir(broken / STEP4))
    done, _ = train(2, *SMALL, "--steps", "6", "--checkpoint-dir", str(broken), "--resume",
                    "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["losses"] == straight[2:]
    ours, reference = stage_arrays(broken / "step-00000006"), stage_arrays(whole / "step-00000006")
    assert ours.keys() == reference.keys()
    for key in reference:                                     # bit for bit, float64
        assert np.array_equal(ours[key], reference[key]), key
    assert sorted(os.listdir(broken)) == ["step-00000002", "step-00000006"]
