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
the model spec, the optimizer, the partition, the data settings and the sha256
of every stage file as its writer saved it. There is no hidden random state to
save: the data order is a function of (seed, step).

A checkpoint is read only after rank 0 has checked all of it (checked, check_files):
the manifest parses and names only stage files of its own folder, every file
has the sha256 recorded at save time and holds the arrays this run expects, of
the right shape and dtype. A damaged one is one line and exit 2 on every rank,
naming the file and the fault and the newest intact checkpoint, which
--resume-step takes (never silently: resuming an older step repeats work).
The next save removes what an interrupted one left (temporary files, a step
folder without its manifest).
"""

import hashlib
import io
import json
import os
import re
import zipfile
import zlib

import numpy as np

from mpipipe.comm.backend import array_module, to_host
from .errors import ConfigError
from .faults import dies_in_save, die

FORMAT = 2          # 2: the manifest records each stage file's sha256
READABLE = (1, 2)   # format 1 (no checksums) is still read, its files checked without them
MANIFEST = "manifest.json"
STAGE_FILE = re.compile(r"stage\d{3}\.npz")    # the only names a manifest may give
WRITTEN_BY_A_SAVE = re.compile(r"(stage\d{3}(\.tp\d+)?\.npz|manifest\.json)(\.tmp-\d+)?")

class DamagedCheckpoint(ConfigError):
    """A checkpoint file that is missing, unreadable or not what was saved."""


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


def run_info(setup):
    """What a checkpoint records about the run that wrote it (config.Setup)."""
    c = setup.config
    return {"spec": setup.spec.to_dict(), "optimizer": c.optimizer, "lr": c.lr, "data": c.data,
            "vocab": setup.dataset.vocab, "seed": c.seed, "global_batch": c.global_batch,
            "schedule": setup.schedule.name, "schedule_file": c.schedule_file, "pp": c.pp,
            "dp": c.dp, "tp": c.tp}


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


def resume_point(setup, comm):
    """(manifest, notes) under --resume: the checkpoint to continue from (None: start
    afresh), checked whole on rank 0 against this run, and what changed that the user
    should hear of. Every rank gets rank 0's verdict, so a damaged checkpoint is the same
    ConfigError everywhere and no rank reads a file that failed its check."""
    c = setup.config
    if not c.resume:
        return None, []
    verdict = None
    if comm.Get_rank() == 0:
        try:
            verdict = (resumable(c.checkpoint_dir, setup, c.resume_step), None)
        except ConfigError as error:
            verdict = (None, str(error))
    manifest, problem = comm.bcast(verdict, root=0)
    if problem:
        raise ConfigError(problem)
    info = run_info(setup)
    notes = [] if manifest is None else [
        f"resuming with --{key.replace('_', '-')} {info[key]}; the checkpoint was written "
        f"with {manifest.get(key)}: from here on this is not the uninterrupted run"
        for key in WARNED_ON_RESUME if manifest.get(key) != info[key]]
    return manifest, notes


def shard_file(name, tp_index, tp):
    """The file of shard `tp_index` of stage file `name` (the name itself when tp = 1)."""
    return name if tp == 1 else name.replace(".npz", f".tp{tp_index}.npz")


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
    """The newest complete checkpoint's manifest, its files checked against the model it
    records (for `mpipipe sample`, which takes the model from it); None if there is none."""
    steps = complete_steps(root)
    if not steps:
        return None
    manifest = read_manifest(root, steps[-1])
    check_files(root, manifest, _spec_of(manifest, root, steps[-1]), optimizer_keys=None)
    return manifest


def resumable(root, setup, step=None):
    """The manifest to resume from, every file checked against this run (rank 0): the
    newest complete checkpoint, or the one of `step` (--resume-step); None if there is
    none. A damaged one is a ConfigError that names the newest intact one, if any."""
    steps = complete_steps(root)
    if step is not None and step not in steps:
        raise ConfigError(f"--resume-step {step}: {root} has no complete checkpoint of step "
                          f"{step} (it has: {', '.join(map(str, steps)) or 'none'})")
    if not steps:
        return None
    target = steps[-1] if step is None else step
    try:
        return checked(root, target, setup)
    except DamagedCheckpoint as damage:
        older = next((s for s in reversed(steps) if s < target and _intact(root, s, setup)), None)
        offer = (f"; the checkpoint of step {older} is intact: --resume-step {older} resumes "
                 f"from it" if older is not None else "; there is no older intact checkpoint")
        raise ConfigError(f"{damage}{offer}") from None


def checked(root, step, setup):
    """The manifest of checkpoint `step`, after checking it and its files against `setup`."""
    manifest = read_manifest(root, step)
    info = run_info(setup)
    for key in REFUSED_ON_RESUME:
        if manifest.get(key) != info[key]:
            raise ConfigError(f"the checkpoint in {root} was written for another {key}: "
                              f"{_differences(manifest.get(key), info[key])}; resume with the "
                              f"same model settings or use another --checkpoint-dir")
    check_files(root, manifest, setup.spec, _optimizer_keys(setup.config.optimizer))
    return manifest


def _intact(root, step, setup):
    try:
        checked(root, step, setup)
        return True
    except ConfigError:         # damaged, or written for another model
        return False


def read_manifest(root, step):
    """The parsed manifest of checkpoint `step`, its format and file names checked."""
    path = os.path.join(step_dir(root, step), MANIFEST)
    try:
        with open(path, encoding="utf-8") as source:
            manifest = json.load(source)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DamagedCheckpoint(f"checkpoint {path} cannot be read: {_reason(error)}") from None
    if not isinstance(manifest, dict):
        raise DamagedCheckpoint(f"checkpoint {path} is damaged: it holds no JSON object")
    if manifest.get("format") not in READABLE:
        raise ConfigError(f"checkpoint {step_dir(root, step)} has format "
                          f"{manifest.get('format')}, this mpipipe reads format "
                          f"{' or '.join(map(str, READABLE))}")
    files, tp = manifest.get("files"), manifest.get("tp", 1)
    if manifest.get("step") != step or not isinstance(files, dict) or \
            not isinstance(tp, int) or tp < 1 or not isinstance(manifest.get("spec"), dict):
        raise DamagedCheckpoint(f"checkpoint {path} is damaged: its step, spec, tp or files "
                                f"are not those of a checkpoint of step {step}")
    for name, blocks in files.items():
        if not STAGE_FILE.fullmatch(name):
            raise DamagedCheckpoint(f"checkpoint {path} is damaged: it names the file {name!r}, "
                                    f"not a stage file of its own folder (stageNNN.npz)")
        if not isinstance(blocks, list) or not all(isinstance(b, int) for b in blocks):
            raise DamagedCheckpoint(f"checkpoint {path} is damaged: the layers of {name} "
                                    f"are not a list of numbers")
    return manifest


def _spec_of(manifest, root, step):
    from mpipipe.nn.model import ModelSpec

    try:
        return ModelSpec(**manifest["spec"])
    except TypeError as error:
        raise DamagedCheckpoint(f"checkpoint {os.path.join(step_dir(root, step), MANIFEST)} is "
                                f"damaged: its model spec does not read ({error})") from None


def _optimizer_keys(name):
    """(per-block array names, scalar names) the optimizer `name` saves."""
    from mpipipe.nn.optim import make_optimizer

    state = make_optimizer(name, np.zeros(1), 1.0).state()
    return ([k for k, v in state.items() if np.ndim(v) == 1],
            [k for k, v in state.items() if np.ndim(v) == 0])


def check_files(root, manifest, spec, optimizer_keys):
    """Every stage file of a checkpoint (manifest: read_manifest's) is there, has the
    sha256 recorded at save time, and holds each of its layers' parameters (and the
    optimizer's `optimizer_keys` arrays; None: only the parameters) with the size and
    dtype `spec` gives them. Raises DamagedCheckpoint naming the file and the fault."""
    from mpipipe.nn.model import shard_param_count

    folder = step_dir(root, manifest["step"])
    files, tp = manifest["files"], manifest.get("tp", 1)
    held = sorted(b for blocks in files.values() for b in blocks)
    if held != list(range(spec.num_blocks)):
        raise DamagedCheckpoint(f"checkpoint {os.path.join(folder, MANIFEST)} is damaged: its "
                                f"files do not hold each of the model's {spec.num_blocks} "
                                f"layers once")
    per_block, scalars = optimizer_keys or ([], [])
    digests = manifest.get("sha256")
    for name, blocks in files.items():
        for t in range(tp):
            file = shard_file(name, t, tp)
            path = os.path.join(folder, file)
            if not os.path.isfile(path):
                raise DamagedCheckpoint(f"checkpoint file {path} is missing")
            if manifest["format"] >= 2 and (not isinstance(digests, dict) or
                                            _sha256(path) != digests.get(file)):
                raise DamagedCheckpoint(
                    f"checkpoint file {path} is damaged: its sha256 is not the one recorded "
                    f"when it was saved (truncated or changed since)")
            arrays = _arrays(path)
            wanted = {f"scalar.{k}": () for k in scalars}
            for block in blocks:
                count = (shard_param_count(spec, block, tp, t),)
                wanted.update({f"b{block}.{k}": count for k in ["params", *per_block]})
            for key, shape in wanted.items():
                if key not in arrays:
                    raise DamagedCheckpoint(f"checkpoint file {path} is damaged: it has no "
                                            f"array {key}")
                got = arrays[key]
                dtype = got.dtype if shape == () else np.dtype(spec.dtype)
                if got.shape != shape or got.dtype != dtype:
                    raise DamagedCheckpoint(
                        f"checkpoint file {path} does not fit this model: {key} is "
                        f"{got.shape} {got.dtype}, this model's is {shape} {dtype}")


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for piece in iter(lambda: source.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def _arrays(path):
    """Every array of a stage file, read in full (which is when a broken one fails)."""
    try:
        with np.load(path) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        raise DamagedCheckpoint(f"checkpoint file {path} is damaged: it does not read as "
                                f"a stage's arrays ({_reason(error)})") from None


def _reason(error):
    if isinstance(error, json.JSONDecodeError):
        return f"not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
    return str(getattr(error, "strerror", None) or error)


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
