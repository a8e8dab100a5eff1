"""A dense target network trained with slth's one trainer, for the constructions to match."""

from __future__ import annotations

import tempfile

import torch

from .config import TrainConfig
from .loop import train


def train_target(data: str = "digits", data_dir=None, *, hidden=(64,), epochs: int = 40, seed: int = 0,
                 lr: float = 0.05, quiet: bool = True) -> tuple[torch.nn.Sequential, dict]:
    """Dense training with slth's one trainer (no biases, unnormalised [0, 1] inputs, as in Pensia Exp. 1)."""
    cfg = TrainConfig(method="dense", model="fc", data=data, data_dir=None if data_dir is None else str(data_dir),
                      hidden=tuple(hidden), epochs=epochs, seed=seed, normalize=False, lr=lr)
    with tempfile.TemporaryDirectory() as tmp:
        run = train(cfg, tmp, quiet=quiet)
    return run.model.layers.eval(), run.metrics
