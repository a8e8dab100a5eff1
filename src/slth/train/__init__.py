"""The trainer: one loop for dense and supermask training (``slth train``)."""

from __future__ import annotations

from .config import TRAIN_METHODS, TrainConfig
from .loop import Run, evaluate, random_crop_flip, train

__all__ = ["TRAIN_METHODS", "TrainConfig", "train", "Run", "evaluate", "random_crop_flip"]
