"""A training run's settings, and every check that can be made before any MPI call.

`prepare()` is a pure function of the settings and the world size. Every rank
runs it on the same command line, so a run that cannot work fails on every
rank with the same ConfigError before a single message is sent: rank 0 prints
it once, nothing waits for a peer that has given up.
"""

from dataclasses import asdict, dataclass, field, replace

from . import data as datasets
from .errors import ConfigError
from .model import ModelSpec, block_param_counts
from .partition import block_ranges, make_partition
from .schedules import GENERATORS, default_chunks, make_schedule, validate

DEFAULT_LR = {"adam": 0.003, "sgd": 0.05}


@dataclass
class TrainConfig:
    pp: int | None = None           # default: all ranks / dp
    dp: int = 1
    schedule: str = "1f1b"
    microbatches: int | None = None  # default: 1 for naive, else 8
    virtual_stages: int | None = None  # model chunks per rank; default: the schedule's own
    recompute: bool = False         # keep only each stage's input; recompute before backward
    global_batch: int = 256
    steps: int = 100
    layers: int = 8
    hidden: int = 64
    activation: str = "gelu"
    layernorm: bool = False
    dtype: str = "float64"
    seed: int = 0
    lr: float | None = None         # default: DEFAULT_LR[optimizer]
    optimizer: str = "adam"
    model: str = "mlp"              # "mlp" or "gpt"
    heads: int = 4                  # gpt: attention heads
    data: str | None = None         # default: spiral for the MLP, arithmetic for the GPT
    text: str | None = None         # a text file to train the GPT on (data "text")
    seq_len: int = 32               # text data: characters per sample
    samples: int | None = None      # data set size; default: the data set's own
    input_dim: int = 32             # teacher data only
    output_dim: int = 8             # teacher data only
    last_activation: bool = False
    partition: object = "uniform"   # 'uniform', 'params' or a list of block counts
    device: str = "cpu"             # cpu, gpu or auto
    transport: str = "auto"         # gpu: auto, cuda-aware or staged (transport.py)
    wait: str = "poll"
    timeout: float | None = None
    log_every: int | None = None
    nan_check: bool = True          # stop at the first NaN/Inf, naming step and stage
    checkpoint_dir: str | None = None
    checkpoint_every: int | None = None  # default: only at the end
    keep_checkpoints: int = 2       # complete checkpoints kept on disk (0: all)
    resume: bool = False            # continue from the newest complete checkpoint
    extra: dict = field(default_factory=dict)

    def to_dict(self):
        return asdict(self)


@dataclass
class Plan:
    """Everything a rank needs, resolved and checked."""

    config: TrainConfig
    spec: ModelSpec
    dataset: object
    partition: list        # blocks per stage (stages = pp x virtual stages)
    blocks: list           # range of block indices per stage
    schedule: object       # lowered, validated
    microbatch_size: int
    shapes: list           # shapes[s]: per-sample activation shape entering stage s; [-1]: output
    loss_scale: int        # samples x tokens in a global batch: the loss is their mean


def prepare(config, world_size):
    """Fill in defaults and check everything; raise ConfigError if the run cannot work."""
    c = replace(config)
    _check_choice("schedule", c.schedule, GENERATORS)
    _check_choice("optimizer", c.optimizer, DEFAULT_LR)
    _check_choice("model", c.model, ("mlp", "gpt"))
    if c.text is not None:
        c.data = "text"
    if c.data is None:
        c.data = "arithmetic" if c.model == "gpt" else "spiral"
    _check_choice("data", c.data, datasets.DATASETS)
    token_data = c.data in ("arithmetic", "text")
    if token_data != (c.model == "gpt"):
        raise ConfigError(f"the {c.data} data is for the {'gpt' if token_data else 'mlp'} model: "
                          f"use --model {'gpt' if token_data else 'mlp'} or other --data")
    if c.data == "text" and not c.text:
        raise ConfigError("--data text needs --text FILE")
    _check_choice("dtype", c.dtype, ("float64", "float32"))
    _check_choice("wait", c.wait, ("poll", "block"))
    _check_choice("device", c.device, ("cpu", "gpu", "auto"))
    _check_choice("transport", c.transport, ("auto", "cuda-aware", "staged"))
    if c.dp < 1:
        raise ConfigError(f"--dp must be at least 1, got {c.dp}")
    if c.pp is None:
        if world_size % c.dp:
            raise ConfigError(f"{world_size} ranks cannot be split into dp={c.dp} replicas")
        c.pp = world_size // c.dp
    if c.pp < 1:
        raise ConfigError(f"--pp must be at least 1, got {c.pp}")
    if c.pp * c.dp != world_size:
        raise ConfigError(
            f"{world_size} MPI rank(s) cannot form a pp={c.pp} x dp={c.dp} grid, which needs "
            f"{c.pp * c.dp}: launch with mpiexec -n {c.pp * c.dp}, or change --pp/--dp")
    if c.microbatches is None:
        c.microbatches = 1 if c.schedule == "naive" else 8
    if c.virtual_stages is None:
        c.virtual_stages = default_chunks(c.schedule)
    for name in ("microbatches", "virtual_stages", "global_batch", "steps", "layers", "hidden",
                 "input_dim", "output_dim", "heads", "seq_len"):
        if getattr(c, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(c, name)}")
    if c.global_batch % (c.microbatches * c.dp):
        raise ConfigError(
            f"global batch {c.global_batch} does not split into {c.dp} replica(s) x "
            f"{c.microbatches} micro-batches: make it a multiple of {c.microbatches * c.dp}")
    if c.lr is None:
        c.lr = DEFAULT_LR[c.optimizer]
    if not c.lr > 0:
        raise ConfigError(f"--lr must be positive, got {c.lr}")
    if c.timeout is not None and not c.timeout > 0:
        raise ConfigError(f"--timeout must be positive, got {c.timeout}")
    if c.log_every is None:
        c.log_every = max(1, c.steps // 20)
    if c.log_every < 1:
        raise ConfigError(f"--log-every must be at least 1, got {c.log_every}")
    if (c.checkpoint_every is not None or c.resume) and not c.checkpoint_dir:
        raise ConfigError("--checkpoint-every and --resume need --checkpoint-dir DIR")
    if c.checkpoint_every is not None and c.checkpoint_every < 1:
        raise ConfigError(f"--checkpoint-every must be at least 1, got {c.checkpoint_every}")
    if c.keep_checkpoints < 0:
        raise ConfigError(f"--keep-checkpoints must be 0 (keep all) or more, got {c.keep_checkpoints}")
    dataset = _make_dataset(c)
    if c.global_batch > len(dataset):
        raise ConfigError(f"global batch {c.global_batch} is larger than the data set ({len(dataset)})")
    if c.model == "gpt" and c.hidden % c.heads:
        raise ConfigError(f"--hidden {c.hidden} does not split into --heads {c.heads}")
    spec = ModelSpec(input_dim=dataset.input_dim, output_dim=dataset.output_dim, hidden=c.hidden,
                     layers=c.layers, activation=c.activation, layernorm=c.layernorm,
                     last_activation=c.last_activation, seed=c.seed, dtype=c.dtype,
                     kind=c.model, heads=c.heads, seq_len=dataset.tokens if token_data else 1)
    schedule = validate(make_schedule(c.schedule, c.pp, c.microbatches, c.virtual_stages))
    stages = schedule.num_stages
    if c.model == "gpt" and stages > spec.num_blocks:   # the embedding and the head are blocks too
        raise ConfigError(
            f"{stages} pipeline stages but the GPT has only {spec.num_blocks} blocks (embedding, "
            f"{c.layers} transformer block(s), head): use --layers "
            f"{stages - (spec.num_blocks - c.layers)} or more, or fewer stages (pp x virtual stages)")
    partition = make_partition(c.partition, block_param_counts(spec), stages)
    blocks = block_ranges(partition)
    shapes = [spec.boundary_shape(r.start) for r in blocks] + [spec.boundary_shape(spec.num_blocks)]
    return Plan(c, spec, dataset, partition, blocks, schedule,
                c.global_batch // (c.microbatches * c.dp), shapes,
                c.global_batch * dataset.tokens)


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


def _check_choice(name, value, choices):
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}: choose from {', '.join(choices)}")
