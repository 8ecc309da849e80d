"""Per-stage checkpoints that survive a crash and load into any other layout.

Layout on disk (a choice that is hard to undo, so here is why):

    DIR/step-00000040/stage000.npz     one file per stage, written by replica 0
    DIR/step-00000040/stage001.npz     (with --tp T: stage001.tp0.npz ... one per shard)
    DIR/step-00000040/manifest.json    written last: its presence = complete

Each stage file holds, for every block (layer) of that stage, the block's
parameters and the optimizer's state for them, named by the block's index in
the whole model ("b3.params", "b3.m", ...). Storing by block, not by stage,
is what lets a checkpoint written with one pp load into another: a rank takes
the blocks its new stage holds, from whichever files have them. All replicas
hold the same weights, so replica 0 writes and every replica reads. With
tensor parallelism each rank of replica 0 writes its own shard, and a rank
that loads joins a block's shards into the whole block and cuts its own
share from it (model.join_block_shards, model.cut_block): a checkpoint
written with one tp loads into any other, tp = 1 included.

Every file is written to a temporary name, flushed to disk (fsync) and renamed,
and the manifest only after every stage file is in place, so a crash at any
moment leaves the previous checkpoint complete. The manifest records the step,
the model spec, the optimizer, the partition and the data settings. There is
no hidden random state to save: the data order is a function of (seed, step).
"""

import json
import os

import numpy as np

from mpipipe.comm.backend import array_module, to_host
from .errors import ConfigError

FORMAT = 1
MANIFEST = "manifest.json"

# What a resumed run may change. Refused: the model's settings (its shape, dtype and
# seed, which also picks the data order), the optimizer (its state would not fit)
# and the data: the result would be neither run. Warned: the learning rate and the
# global batch, which people change on purpose, but then the run is no longer the
# uninterrupted one. Free: everything about the layout (schedule, pp, dp,
# micro-batches, chunks, partition), steps and how the run waits or where it runs,
# since a checkpoint stores blocks and the arithmetic does not depend on them.
REFUSED_ON_RESUME = ("spec", "optimizer", "data", "vocab")
WARNED_ON_RESUME = ("lr", "global_batch")


def step_dir(root, step):
    return os.path.join(root, f"step-{step:08d}")


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path, write):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as out:
        write(out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def run_info(setup):
    """What a checkpoint records about the run that wrote it (config.Setup)."""
    c = setup.config
    return {"spec": setup.spec.to_dict(), "optimizer": c.optimizer, "lr": c.lr, "data": c.data,
            "vocab": setup.dataset.vocab, "seed": c.seed, "global_batch": c.global_batch,
            "schedule": setup.schedule.name, "schedule_file": c.schedule_file, "pp": c.pp,
            "dp": c.dp, "tp": c.tp}


def save(setup, topology, step, chunks, waiter):
    """Every rank: replica 0 writes its chunks' stages (each rank its tensor shard), then
    rank 0 marks the checkpoint of `step` complete (engine.Chunk objects; p2p.Waiter for
    the barriers)."""
    root = setup.config.checkpoint_dir
    if topology.dp_index == 0:
        for chunk in chunks:
            save_stage(root, step, chunk.stage, chunk.blocks, chunk.layers, chunk.optimizer,
                       (topology.tp_index, topology.tp))
    waiter.barrier(topology.world)
    if topology.world_rank == 0:
        save_manifest(root, step, run_info(setup), setup.partition,
                      setup.config.keep_checkpoints)
    waiter.barrier(topology.world)


def resume_point(setup):
    """(manifest, notes) under --resume: the checkpoint to continue from (None: start
    afresh), checked against this run, and what changed that the user should hear of."""
    c = setup.config
    if not c.resume:
        return None, []
    info = run_info(setup)
    manifest = latest(c.checkpoint_dir, info)
    notes = [] if manifest is None else [
        f"resuming with --{key.replace('_', '-')} {info[key]}; the checkpoint was written "
        f"with {manifest.get(key)}: from here on this is not the uninterrupted run"
        for key in WARNED_ON_RESUME if manifest.get(key) != info[key]]
    return manifest, notes


def shard_file(name, tp_index, tp):
    """The file of shard `tp_index` of stage file `name` (the name itself when tp = 1)."""
    return name if tp == 1 else name.replace(".npz", f".tp{tp_index}.npz")


def save_stage(root, step, stage_index, block_indices, stage, optimizer, shard=(0, 1)):
    """Write one stage's blocks and optimizer state (called by each rank of replica 0;
    `shard` = (tp index, tp): which tensor shard of the stage this rank holds)."""
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
    _atomic_write(os.path.join(folder, shard_file(f"stage{stage_index:03d}.npz", *shard)),
                  lambda out: np.savez(out, **arrays))


def save_manifest(root, step, info, partition, keep):
    """Mark the checkpoint of `step` complete (rank 0, after every stage file is written)."""
    folder = step_dir(root, step)
    files, start = {}, 0
    for s, count in enumerate(partition):
        files[f"stage{s:03d}.npz"] = list(range(start, start + count))
        start += count
    manifest = dict(info, format=FORMAT, step=step, partition=partition, files=files)
    _atomic_write(os.path.join(folder, MANIFEST),
                  lambda out: out.write(json.dumps(manifest, indent=1).encode()))
    _fsync_dir(folder)
    _fsync_dir(root)
    for old in complete_steps(root)[:-keep] if keep else []:
        for name in os.listdir(step_dir(root, old)):
            os.remove(os.path.join(step_dir(root, old), name))
        os.rmdir(step_dir(root, old))


def complete_steps(root):
    """Steps with a complete checkpoint under `root`, oldest first."""
    if not os.path.isdir(root):
        return []
    steps = []
    for name in os.listdir(root):
        if name.startswith("step-") and name[5:].isdigit():
            if os.path.exists(os.path.join(root, name, MANIFEST)):
                steps.append(int(name[5:]))
    return sorted(steps)


def read_latest(root):
    """The newest complete checkpoint's manifest as it is; None if there is none."""
    steps = complete_steps(root)
    if not steps:
        return None
    with open(os.path.join(step_dir(root, steps[-1]), MANIFEST)) as source:
        return json.load(source)


def latest(root, info):
    """The newest complete checkpoint's manifest, checked against this run; None if none."""
    manifest = read_latest(root)
    if manifest is None:
        return None
    steps = [manifest["step"]]
    if manifest.get("format") != FORMAT:
        raise ConfigError(f"checkpoint {step_dir(root, steps[-1])} has format "
                          f"{manifest.get('format')}, this mpipipe reads format {FORMAT}")
    for key in REFUSED_ON_RESUME:
        if manifest.get(key) != info[key]:
            raise ConfigError(f"the checkpoint in {root} was written for another {key}: "
                              f"{_differences(manifest[key], info[key])}; resume with the same "
                              f"model settings or use another --checkpoint-dir")
    return manifest


def _differences(there, now):
    """'hidden 64 there, 32 now, ...': only the settings that differ."""
    if not (isinstance(there, dict) and isinstance(now, dict)):
        return f"{there} there, {now} now"
    keys = [k for k in sorted(set(there) | set(now)) if there.get(k) != now.get(k)]
    return ", ".join(f"{k} {there.get(k)} there, {now.get(k)} now" for k in keys)


def load_stage(root, manifest, block_indices, stage, optimizer, spec, tensor=None):
    """Fill `stage` (model.Stage) and `optimizer` with the blocks `block_indices` from the
    checkpoint, resharded from the checkpoint's tp into this run's `tensor` group
    (tensor_parallel.TensorGroup; None: whole blocks)."""
    from mpipipe.nn.model import cut_block, join_block_shards

    folder = step_dir(root, manifest["step"])
    saved_tp = manifest.get("tp", 1)
    where_is = {b: f for f, blocks in manifest["files"].items() for b in blocks}
    size, rank = (1, 0) if tensor is None else (tensor.size, tensor.rank)
    state = optimizer.state()
    xp = array_module(stage.flat_params)
    loaded, scalars = {}, {}
    for block, where in zip(block_indices, stage.block_slices()):
        name = where_is.get(block)
        if name is None:
            raise ConfigError(f"the checkpoint has no layer {block}")
        files = [shard_file(name, t, saved_tp) for t in range(saved_tp)]
        for file in files:
            if file not in loaded:
                loaded[file] = np.load(os.path.join(folder, file))
                scalars.update({k[7:]: loaded[file][k] for k in loaded[file].files
                                if k.startswith("scalar.")})

        def mine(key):       # this rank's share of the block's array `key`
            whole = join_block_shards(spec, block, [loaded[f][f"b{block}.{key}"] for f in files])
            return xp.asarray(cut_block(spec, block, whole, size, rank))

        stage.flat_params[where] = mine("params")
        for key, value in state.items():
            if np.ndim(value) == 1:
                value[where] = mine(key)
    for key, value in state.items():
        if np.ndim(value) == 0 and key in scalars:
            state[key] = scalars[key]
    optimizer.load_state(state)
