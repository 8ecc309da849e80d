"""A training run's settings: every default, once, and every check that can be made before MPI.

The road of a setting: an option of `mpipipe train` (train_cli.py, defaults
None), copied by name into `TrainConfig` (`from_options`), completed with the
defaults below and checked by `prepare()`, which returns the `Setup` every
other part reads. To add a setting: a field here (and its check), an option
in train_cli.py, and the code that uses it.

`prepare()` is a pure function of the settings and the world size. Every rank
runs it on the same command line, so a run that cannot work fails on every
rank with the same ConfigError before a single message is sent: rank 0 prints
it once, nothing waits for a peer that has given up.
"""

from dataclasses import dataclass, fields, replace

from mpipipe.comm.topology import check_grid
from mpipipe.comm.transport import TRANSPORTS
from mpipipe.nn import data as datasets
from mpipipe.nn.model import ACTIVATIONS as ACTIVATION_LAYERS, ModelSpec, block_param_counts
from mpipipe.plan.partition import block_ranges, make_partition
from mpipipe.plan.simulate import Costs, validated_plan
from mpipipe.schedules.schedule_file import file_shape
from .errors import ConfigError
from .schedules import GENERATORS, default_chunks, make_schedule, schedule_from_file

# The choices of every setting that has a fixed set of them (argparse shows these).
SCHEDULES = tuple(GENERATORS)
MODELS = ("mlp", "gpt")
DATA = tuple(datasets.DATASETS)
ACTIVATIONS = tuple(ACTIVATION_LAYERS)
DTYPES = ("float64", "float32")
DEFAULT_LR = {"adam": 0.003, "sgd": 0.05}
OPTIMIZERS = tuple(DEFAULT_LR)
DEVICES = ("cpu", "gpu", "auto")
WAIT_MODES = ("poll", "block")
ALLREDUCE_STARTS = ("overlap", "end")   # a chunk's DP all-reduce: after its last W, or the step
# Steps --check follows a whole run for, by dtype; a longer run is followed that far, then
# its last step replayed (reference.py says why). Well inside what stays within the
# tolerance: about a hundred steps of the GPT in float64 at its default rate, a few dozen
# in float32, fewer at high learning rates.
CHECK_TRAJECTORY_STEPS = {"float64": 20, "float32": 5}
PARTITIONS = ("uniform", "params", "auto")   # or a list of block counts per stage

# Defaults that depend on the model: the GPT is bigger, slower and float32.
MODEL_DEFAULTS = {
    "mlp": dict(data="spiral", layers=8, dtype="float64", global_batch=256, steps=100,
                partition="uniform"),
    "gpt": dict(data="arithmetic", layers=4, dtype="float32", global_batch=64, steps=1200,
                partition="params"),
}


def default_microbatches(schedule):
    """The naive schedule runs the whole batch at once; the others pipeline 8 micro-batches."""
    return 1 if schedule == "naive" else 8


def default_log_every(steps):
    return max(1, steps // 20)


@dataclass
class TrainConfig:
    """Every setting of a training run. None means: the default, filled in by prepare()."""

    pp: int | None = None           # all ranks / (tp x dp)
    dp: int = 1
    tp: int = 1                     # tensor-parallel ranks per stage (gpt only)
    schedule: str = "1f1b"
    schedule_file: str | None = None  # a schedule in PyTorch's CSV format, used instead of `schedule`
    memory_budget: int | None = None  # micro-batches' stash per rank: pick the shortest schedule that fits
    microbatches: int | None = None  # default_microbatches(schedule)
    chunks: int | None = None       # chunks per rank: the schedule's own (default_chunks)
    recompute: bool = False         # keep only each stage's input; recompute before backward
    partition: object = None        # MODEL_DEFAULTS; PARTITIONS or block counts per stage
    model: str = "mlp"
    data: str | None = None         # MODEL_DEFAULTS; "text" if `text` is given
    text: str | None = None         # a text file to train the GPT on
    seq_len: int = 32               # text data: characters per sample
    heads: int = 4                  # gpt: attention heads
    samples: int | None = None      # data set size: the data set's own
    input_dim: int = 32             # teacher data only
    output_dim: int = 8             # teacher data only
    layers: int | None = None       # MODEL_DEFAULTS
    hidden: int = 64
    activation: str = "gelu"
    layernorm: bool = False
    last_activation: bool = False
    dtype: str | None = None        # MODEL_DEFAULTS
    global_batch: int | None = None  # MODEL_DEFAULTS
    steps: int | None = None        # MODEL_DEFAULTS
    optimizer: str = "adam"
    lr: float | None = None         # DEFAULT_LR[optimizer]
    seed: int = 0
    device: str = "cpu"
    transport: str = "auto"         # gpu: auto, cuda-aware or staged (transport.py)
    wait: str = "poll"
    allreduce: str = "overlap"      # ALLREDUCE_STARTS
    timeout: float | None = None    # wait forever
    log_every: int | None = None    # default_log_every(steps)
    nan_check: bool = True          # stop at the first NaN/Inf, naming step and stage
    checkpoint_dir: str | None = None
    checkpoint_every: int | None = None  # only at the end
    keep_checkpoints: int = 2       # complete checkpoints kept on disk (0: all)
    resume: bool = False            # continue from the newest complete checkpoint
    resume_step: int | None = None  # continue from this step's checkpoint (implies resume)

    @classmethod
    def from_options(cls, options):
        """The settings an argparse namespace gives (its None: not given)."""
        given = {f.name: getattr(options, f.name, None) for f in fields(cls)}
        return cls(**{name: value for name, value in given.items() if value is not None})


CHOICES = {"schedule": SCHEDULES, "model": MODELS, "data": DATA, "activation": ACTIVATIONS,
           "dtype": DTYPES, "optimizer": OPTIMIZERS, "device": DEVICES,
           "transport": TRANSPORTS, "wait": WAIT_MODES, "allreduce": ALLREDUCE_STARTS}
AT_LEAST_ONE = ("microbatches", "chunks", "global_batch", "steps", "layers", "hidden",
                "input_dim", "output_dim", "heads", "seq_len", "log_every")


@dataclass
class Setup:
    """Everything a rank needs to train, resolved and checked."""

    config: TrainConfig
    spec: ModelSpec
    dataset: object
    partition: list        # blocks per stage (stages = pp x chunks)
    blocks: list           # range of block indices per stage
    schedule: object       # lowered, validated
    microbatch_size: int
    shapes: list           # shapes[s]: per-sample activation shape entering stage s; [-1]: output
    loss_denominator: int  # samples (x tokens) in a global batch: the loss is their mean
    predicted: object = None   # --partition auto: the planned timeline of the chosen cut
    planned: object = None     # the schedule's planned figures (equal stages, free messages)

    def banner(self):
        """The first line of a run: what is split how."""
        c = self.config
        chunks = f" x {c.chunks} chunks" if c.chunks > 1 else ""
        tensor = f"tp={c.tp} x " if c.tp > 1 else ""
        if c.model == "gpt":
            model = (f"GPT of {c.layers} transformer blocks (width {c.hidden}, {c.heads} heads, "
                     f"{self.spec.seq_len} tokens a sample), blocks per stage {self.partition} "
                     f"(the embedding and the head count as blocks)")
        else:
            model = f"{c.layers} layers of width {c.hidden}, layers per stage {self.partition}"
        described = "".join(f"\n{line}" for line in self.schedule.notes.get("described", ()))
        return (f"mpipipe train: {self.schedule.name}{', recompute' if c.recompute else ''}, "
                f"{tensor}pp={c.pp}{chunks} x dp={c.dp}, {c.microbatches} micro-batch(es) of "
                f"{self.microbatch_size} (global batch {c.global_batch}), {model}, {c.data} "
                f"data, {c.dtype}, {c.optimizer} lr={c.lr:g}" + described)


def with_defaults(config, world_size):
    """A copy of `config` with every None filled in (nothing checked yet but the grid)."""
    c = replace(config)
    if c.text is not None and c.data is None:
        c.data = "text"
    for name, value in MODEL_DEFAULTS.get(c.model, {}).items():
        if getattr(c, name) is None:
            setattr(c, name, value)
    c.pp, c.dp = check_grid(world_size, c.pp, c.dp, c.tp)
    if c.schedule_file is not None and (c.microbatches is None or c.chunks is None):
        _, file_microbatches, file_chunks = file_shape(c.schedule_file)   # the file's own
        c.microbatches = c.microbatches or file_microbatches
        c.chunks = c.chunks or file_chunks
    if c.microbatches is None:
        c.microbatches = default_microbatches(c.schedule)
    if c.memory_budget is not None:         # the zero-bubble family's shortest that fits
        from .plan.memory_budget import pick_schedule

        c.schedule = pick_schedule(c.pp, c.microbatches, c.memory_budget)
        c.chunks = None
    if c.chunks is None and c.schedule in GENERATORS:
        c.chunks = default_chunks(c.schedule)
    if c.lr is None and c.optimizer in DEFAULT_LR:
        c.lr = DEFAULT_LR[c.optimizer]
    if c.log_every is None and c.steps is not None:
        c.log_every = default_log_every(c.steps)
    if c.resume_step is not None:
        c.resume = True
    return c


def prepare(config, world_size):
    """Fill in defaults and check everything; raise ConfigError if the run cannot work."""
    for name, choices in CHOICES.items():
        _check_choice(name, getattr(config, name), choices, allow_none=True)
    c = with_defaults(config, world_size)
    _check_choice("data", c.data, DATA)
    _check_choice("dtype", c.dtype, DTYPES)
    token_data = c.data in ("arithmetic", "text")
    if token_data != (c.model == "gpt"):
        raise ConfigError(f"the {c.data} data is for the {'gpt' if token_data else 'mlp'} model: "
                          f"use --model {'gpt' if token_data else 'mlp'} or other --data")
    if c.data == "text" and not c.text:
        raise ConfigError("--data text needs --text FILE")
    for name in AT_LEAST_ONE:
        if getattr(c, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(c, name)}")
    if c.global_batch % (c.microbatches * c.dp):
        raise ConfigError(
            f"global batch {c.global_batch} does not split into {c.dp} replica(s) x "
            f"{c.microbatches} micro-batches: make it a multiple of {c.microbatches * c.dp}")
    if not c.lr > 0:
        raise ConfigError(f"--lr must be positive, got {c.lr}")
    if c.timeout is not None and not c.timeout > 0:
        raise ConfigError(f"--timeout must be positive, got {c.timeout}")
    if (c.checkpoint_every is not None or c.resume or c.resume_step is not None) \
            and not c.checkpoint_dir:
        raise ConfigError("--checkpoint-every, --resume and --resume-step need --checkpoint-dir DIR")
    if c.resume_step is not None and c.resume_step < 1:
        raise ConfigError(f"--resume-step must be at least 1, got {c.resume_step}")
    if c.checkpoint_every is not None and c.checkpoint_every < 1:
        raise ConfigError(f"--checkpoint-every must be at least 1, got {c.checkpoint_every}")
    if c.keep_checkpoints < 0:
        raise ConfigError(f"--keep-checkpoints must be 0 (keep all) or more, got {c.keep_checkpoints}")
    dataset = _make_dataset(c)
    if c.global_batch > len(dataset):
        raise ConfigError(f"global batch {c.global_batch} is larger than the data set ({len(dataset)})")
    if c.model == "gpt" and c.hidden % c.heads:
        raise ConfigError(f"--hidden {c.hidden} does not split into --heads {c.heads}")
    _check_tensor_parallel(c)
    spec = _model_spec(c, dataset)
    schedule, planned = _schedule(c)
    stages = schedule.num_stages
    if c.model == "gpt" and stages > spec.num_blocks:   # the embedding and the head are blocks too
        raise ConfigError(
            f"{stages} pipeline stages but the GPT has only {spec.num_blocks} blocks (embedding, "
            f"{c.layers} transformer block(s), head): use --layers "
            f"{stages - (spec.num_blocks - c.layers)} or more, or fewer stages (pp x chunks)")
    # --partition auto is decided after profiling, on MPI (autopartition.py): until
    # then, the parameter-balanced cut stands in.
    provisional = "params" if c.partition == "auto" else c.partition
    partition = make_partition(provisional, block_param_counts(spec), stages)
    blocks = block_ranges(partition)
    shapes = [spec.boundary_shape(r.start) for r in blocks] + [spec.boundary_shape(spec.num_blocks)]
    return Setup(c, spec, dataset, partition, blocks, schedule,
                 c.global_batch // (c.microbatches * c.dp), shapes,
                 c.global_batch * dataset.tokens, planned=planned)


def _check_tensor_parallel(c):
    """--tp cuts every transformer block: the heads and the MLP's hidden units are shared out."""
    if c.tp == 1:
        return
    if c.model != "gpt":
        raise ConfigError(f"--tp {c.tp} splits the GPT's attention heads and MLP "
                          f"(tensor_parallel.py); the {c.model} model is not split: use "
                          f"--model gpt, or --tp 1")
    if c.tp > c.heads:
        raise ConfigError(f"--tp {c.tp} is more than the {c.heads} attention heads: each "
                          f"tensor rank needs whole heads; use --tp {c.heads} or less, or more "
                          f"--heads")
    if c.hidden % c.tp:
        raise ConfigError(f"--hidden {c.hidden} does not split into --tp {c.tp} equal parts")
    if c.heads % c.tp:
        raise ConfigError(f"--heads {c.heads} do not split into --tp {c.tp}: each tensor rank "
                          f"needs the same number of heads (a divisor of {c.heads})")


def _schedule(c):
    """(The lowered, validated schedule, its planned figures): generated, or read from
    --schedule-file (its ranks, micro-batches and chunks checked against the run's, and
    what was read kept in its notes). One walk proves and plans it (validated_plan)."""
    costs = Costs(recompute=c.recompute)
    if c.schedule_file is None:
        return validated_plan(make_schedule(c.schedule, c.pp, c.microbatches, c.chunks), costs)
    found = schedule_from_file(c.schedule_file, c.pp, c.microbatches, c.chunks)
    schedule, planned = validated_plan(found.schedule, costs)
    schedule.notes["described"] = found.describe()
    return schedule, planned


def _model_spec(c, dataset):
    """The model's description: the settings of the same name, and what the data decides."""
    same_name = {f.name: getattr(c, f.name) for f in fields(ModelSpec) if hasattr(c, f.name)}
    return ModelSpec(**{**same_name, "kind": c.model, "input_dim": dataset.input_dim,
                        "output_dim": dataset.output_dim,
                        "seq_len": dataset.tokens if c.model == "gpt" else 1})


def _make_dataset(c):
    kwargs = {"seed": c.seed, "dtype": c.dtype}
    if c.samples is not None:
        kwargs["samples"] = c.samples
    if c.data == "teacher":
        kwargs.update(input_dim=c.input_dim, output_dim=c.output_dim)
    if c.data == "text":
        kwargs.update(path=c.text, seq_len=c.seq_len)
    try:
        return datasets.DATASETS[c.data](**kwargs)
    except (ValueError, OSError) as error:
        raise ConfigError(f"cannot make the {c.data} data set: {error}") from None


def _check_choice(name, value, choices, allow_none=False):
    if value is None and allow_none:
        return
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}: choose from {', '.join(choices)}")
