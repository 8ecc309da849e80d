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

A checkpoint is read only after rank 0 has checked all of it (reading.py):
the manifest parses and names only stage files of its own folder, every file
has the sha256 recorded at save time and holds the arrays this run expects, of
the right shape and dtype. A damaged one is one line and exit 2 on every rank,
naming the file and the fault and the newest intact checkpoint, which
--resume-step takes (never silently: resuming an older step repeats work).
The next save removes what an interrupted one left (temporary files, a step
folder without its manifest).

    layout.py    the names on disk, the format, what a resume may change
    writing.py   save: atomic files, checksums, the manifest last, tidying up
    reading.py   resume: every file checked on rank 0, then each rank its layers
"""

from .layout import (FORMAT, MANIFEST, READABLE, complete_steps, run_info, shard_file,
                     step_dir)
from .reading import (DamagedCheckpoint, check_files, load_stage, read_latest, read_manifest,
                      resumable, resume_point)
from .writing import check_folder, save, save_manifest, save_stage

__all__ = ["FORMAT", "MANIFEST", "READABLE", "DamagedCheckpoint", "check_files", "check_folder",
           "complete_steps", "load_stage", "read_latest", "read_manifest", "resumable",
           "resume_point", "run_info", "save", "save_manifest", "save_stage", "shard_file",
           "step_dir"]
