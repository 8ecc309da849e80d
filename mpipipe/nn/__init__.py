"""The model: layers with explicit backward passes, the GPT, tensor-parallel layers, losses, optimizers, data."""
