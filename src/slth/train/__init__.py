"""The trainer: one loop for dense and supermask training (``slth train``, :func:`fit` for your own model)."""

from __future__ import annotations

from .config import TRAIN_METHODS, TrainConfig
from .loop import Run, evaluate, fit, random_crop_flip, train
from .target import train_target

__all__ = ["TRAIN_METHODS", "TrainConfig", "train", "fit", "Run", "evaluate", "random_crop_flip", "train_target"]
