"""The trainer: one loop for dense and supermask training (``slth train``, :func:`fit` for your own model)."""

from __future__ import annotations

from .config import TRAIN_METHODS, TrainConfig
from .loop import Run, evaluate, fit, random_crop_flip, train

__all__ = ["TRAIN_METHODS", "TrainConfig", "train", "fit", "Run", "evaluate", "random_crop_flip"]
