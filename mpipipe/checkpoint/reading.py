"""Reading a checkpoint, only once all of it has been checked.

Rank 0 checks the checkpoint a resume would read (resumable): the manifest parses
and names only stage files of its own folder, every file has the sha256 recorded
when it was saved and holds each of its layers' arrays with the shape and dtype
this model gives them. Every rank gets rank 0's verdict, so a damaged checkpoint
is one line and exit 2 everywhere, naming the file, the fault and the newest
intact checkpoint (which --resume-step takes: never silently, since resuming an
older step repeats work). Then each rank loads its own layers (load_stage).
"""

import hashlib
import json
import os
import zipfile
import zlib

import numpy as np

from mpipipe.comm.backend import array_module
from mpipipe.errors import ConfigError
from .layout import (MANIFEST, READABLE, REFUSED_ON_RESUME, STAGE_FILE, WARNED_ON_RESUME,
                     complete_steps, run_info, shard_file, step_dir)


class DamagedCheckpoint(ConfigError):
    """A checkpoint file that is missing, unreadable or not what was saved."""


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
