"""Where a checkpoint lives on disk and what it records: names, format, what may change.

    DIR/step-00000040/stage000.npz     one file per stage, written by replica 0
    DIR/step-00000040/stage001.npz     (with --tp T: stage001.tp0.npz ... one per shard)
    DIR/step-00000040/manifest.json    written last: its presence = complete

The package's __init__ says why the layout is what it is.
"""

import os
import re

FORMAT = 2          # 2: the manifest records each stage file's sha256
READABLE = (1, 2)   # format 1 (no checksums) is still read, its files checked without them
MANIFEST = "manifest.json"
STAGE_FILE = re.compile(r"stage\d{3}\.npz")    # the only names a manifest may give
WRITTEN_BY_A_SAVE = re.compile(r"(stage\d{3}(\.tp\d+)?\.npz|manifest\.json)(\.tmp-\d+)?")


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


def shard_file(name, tp_index, tp):
    """The file of shard `tp_index` of stage file `name` (the name itself when tp = 1)."""
    return name if tp == 1 else name.replace(".npz", f".tp{tp_index}.npz")


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


def run_info(setup):
    """What a checkpoint records about the run that wrote it (config.Setup)."""
    c = setup.config
    return {"spec": setup.spec.to_dict(), "optimizer": c.optimizer, "lr": c.lr, "data": c.data,
            "vocab": setup.dataset.vocab, "seed": c.seed, "global_batch": c.global_batch,
            "schedule": setup.schedule.name, "schedule_file": c.schedule_file, "pp": c.pp,
            "dp": c.dp, "tp": c.tp}
