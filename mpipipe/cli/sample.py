"""`mpipipe sample`: let a trained GPT write, from a checkpoint, in one process.

The checkpoint stores every layer by its index (mpipipe/checkpoint/), so the whole
model can be rebuilt here from the files the pipeline's stages wrote, whatever
pp, dp and tp they ran with (tensor shards are joined into whole layers). Generation is greedy (temperature 0) or sampled, one
character at a time, feeding back at most the model's context length.
"""

import numpy as np

from mpipipe import checkpoint
from mpipipe.errors import ConfigError
from mpipipe.nn.model import ModelSpec, build_stage
from mpipipe.nn.optim import SGD


def load_model(root):
    """(model, spec, vocab) from the newest complete checkpoint under `root`."""
    manifest = checkpoint.read_latest(root)
    if manifest is None:
        raise ConfigError(f"no complete checkpoint in {root}: train with --checkpoint-dir {root}")
    spec = ModelSpec(**manifest["spec"])
    if spec.kind != "gpt" or not manifest.get("vocab"):
        raise ConfigError(f"the checkpoint in {root} holds a {spec.kind} model, not a GPT: "
                          f"mpipipe sample needs one trained with --model gpt")
    model = build_stage(spec, range(spec.num_blocks))
    checkpoint.load_stage(root, manifest, range(spec.num_blocks), model,
                          SGD(model.flat_params, momentum=0), spec)
    return model, spec, manifest["vocab"]


def generate(model, spec, vocab, prompt, length, temperature=0.0, seed=0, stop=None):
    """`prompt` continued by up to `length` characters (until `stop`, if given)."""
    unknown = sorted(set(prompt) - set(vocab))
    if unknown:
        raise ConfigError(f"the prompt has characters the model never saw: {''.join(unknown)!r}")
    rng = np.random.default_rng(seed)
    ids = [vocab.index(c) for c in prompt]
    for _ in range(length):
        context = np.array([ids[-spec.seq_len:]])
        logits = model.forward(context)[0][0, -1].astype(np.float64)
        if temperature <= 0:
            token = int(logits.argmax())
        else:
            p = np.exp((logits - logits.max()) / temperature)
            token = int(rng.choice(len(p), p=p / p.sum()))
        ids.append(token)
        if stop is not None and vocab[token] == stop:
            break
    return "".join(vocab[i] for i in ids)
