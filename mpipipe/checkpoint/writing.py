"""Writing a checkpoint so that a crash at any moment loses nothing.

Each file goes to a temporary name, is flushed to disk and renamed; the manifest,
with the sha256 of every stage file as its writer wrote it, comes last, so a
checkpoint is complete exactly when its manifest is there. The next save removes
what an interrupted one left. The folder itself is checked on every rank before
the first step, so that no training is lost to a save that cannot happen.
"""

import hashlib
import io
import json
import os

import numpy as np

from mpipipe.comm.backend import to_host
from mpipipe.errors import ConfigError
from mpipipe.faults import die, dies_in_save
from .layout import FORMAT, MANIFEST, WRITTEN_BY_A_SAVE, complete_steps, run_info, shard_file, step_dir


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path, data, die_halfway=None):
    """Write bytes `data` to `path` so that a crash leaves either the old file or the new
    one, never half of one (a temporary file, fsync, rename). `die_halfway`: a fault
    test's rank, which dies after writing half (faults.py)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as out:
        if die_halfway is not None:
            out.write(data[:len(data) // 2])
            out.flush()
            die(die_halfway, f"in the middle of writing {tmp}")
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def check_folder(root, comm):
    """Every rank, before the first step: `root` is, or can be made, a folder this rank
    can write in. Checked up front, so that no training is lost to a save that fails."""
    problem = None
    if os.path.exists(root) and not os.path.isdir(root):
        problem = "is a file, not a folder"
    else:
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as error:
            problem = f"cannot be made a folder ({error.strerror or error})"
    if problem is None:
        probe = os.path.join(root, f".write-test-{os.getpid()}")
        try:
            with open(probe, "wb") as out:
                out.write(b"mpipipe")
            os.remove(probe)
        except OSError as error:
            problem = f"is not writable ({error.strerror or error})"
    problems = comm.allgather(problem)
    for rank, problem in enumerate(problems):
        if problem:
            where = f" on rank {rank}" if comm.Get_size() > 1 else ""
            raise ConfigError(f"--checkpoint-dir {root} {problem}{where}: give a folder "
                              f"this run can create and write in")


def save(setup, topology, step, chunks, waiter, fault=None):
    """Every rank: replica 0 writes its chunks' stages (each rank its tensor shard), then
    rank 0 records their checksums in the manifest, which marks the checkpoint of `step`
    complete (engine.Chunk objects; p2p.Waiter for the barriers; `fault`: faults.py)."""
    root = setup.config.checkpoint_dir
    dying = topology.world_rank if dies_in_save(fault, topology.world_rank, step) else None
    written = {}
    if topology.dp_index == 0:
        for chunk in chunks:
            name, digest = save_stage(root, step, chunk.stage, chunk.blocks, chunk.layers,
                                      chunk.optimizer, (topology.tp_index, topology.tp), dying)
            written[name] = digest
    waiter.barrier(topology.world)
    everyone = topology.world.gather(written, root=0)   # quick: every rank is past the barrier
    if topology.world_rank == 0:
        digests = {name: digest for part in everyone for name, digest in part.items()}
        save_manifest(root, step, run_info(setup), setup.partition,
                      setup.config.keep_checkpoints, digests)
    waiter.barrier(topology.world)


def save_stage(root, step, stage_index, block_indices, stage, optimizer, shard=(0, 1),
               die_halfway=None):
    """Write one stage's blocks and optimizer state (called by each rank of replica 0;
    `shard` = (tp index, tp): which tensor shard of the stage this rank holds).
    Returns (file name, sha256 of what was written)."""
    folder = step_dir(root, step)
    os.makedirs(folder, exist_ok=True)
    arrays = {}
    state = optimizer.state()
    for block, where in zip(block_indices, stage.block_slices()):
        arrays[f"b{block}.params"] = to_host(stage.flat_params[where])
        for name, value in state.items():
            if np.ndim(value) == 1:
                arrays[f"b{block}.{name}"] = to_host(value[where])
    for name, value in state.items():
        if np.ndim(value) == 0:
            arrays[f"scalar.{name}"] = to_host(value)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    name = shard_file(f"stage{stage_index:03d}.npz", *shard)
    _atomic_write(os.path.join(folder, name), data, die_halfway)
    return name, hashlib.sha256(data).hexdigest()


def save_manifest(root, step, info, partition, keep, digests):
    """Mark the checkpoint of `step` complete (rank 0, after every stage file is written;
    `digests`: the sha256 of each, by file name), then remove what is no longer needed."""
    folder = step_dir(root, step)
    files, start = {}, 0
    for s, count in enumerate(partition):
        files[f"stage{s:03d}.npz"] = list(range(start, start + count))
        start += count
    manifest = dict(info, format=FORMAT, step=step, partition=partition, files=files,
                    sha256=dict(sorted(digests.items())))
    _atomic_write(os.path.join(folder, MANIFEST), json.dumps(manifest, indent=1).encode())
    _fsync_dir(folder)
    _fsync_dir(root)
    for old in complete_steps(root)[:-keep] if keep else []:
        _remove_step(root, old)
    _remove_leftovers(root, step)


def _remove_step(root, step):
    """Remove a step folder: the files a save writes, then the folder if nothing else is
    in it (a file someone put there is left alone)."""
    folder = step_dir(root, step)
    for name in os.listdir(folder):
        if WRITTEN_BY_A_SAVE.fullmatch(name):
            os.remove(os.path.join(folder, name))
    if not os.listdir(folder):
        os.rmdir(folder)


def _remove_leftovers(root, step):
    """What an interrupted save left (rank 0, once checkpoint `step` is complete): the
    temporary files of any step folder, and the folders of earlier steps that never got
    their manifest."""
    for name in os.listdir(root):
        if not (name.startswith("step-") and name[5:].isdigit()):
            continue
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue
        if int(name[5:]) < step and not os.path.exists(os.path.join(folder, MANIFEST)):
            _remove_step(root, int(name[5:]))
            continue
        for leftover in os.listdir(folder):
            if ".tmp-" in leftover and WRITTEN_BY_A_SAVE.fullmatch(leftover):
                os.remove(os.path.join(folder, leftover))
