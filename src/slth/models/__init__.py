"""Model registry: ``build_model(name, input_shape, num_classes, width=1.0, **kwargs)``.

Every model has a ``width`` multiplier on its hidden sizes (inputs and outputs are fixed by the data)
and no biases in its Linear/Conv/attention layers, following Ramanujan et al. (edge-popup): a supermask can only
prune weights, so a bias would be an untrained (or, in the dense twin, trained) extra the masked model
lacks. Models are built deterministically from a seed by :func:`slth.supermask.init_weights`.

======== ==================================================================
fc       fully connected ReLU net, ``hidden=(300, 100)`` (LeNet-300-100)
conv2    Conv2 of Ramanujan et al. / Frankle & Carbin: 64-64-pool, FC 256-256
conv4    64-64-pool-128-128-pool, FC 256-256
conv6    64-64-pool-128-128-pool-256-256-pool, FC 256-256
conv8    64-64-pool-128-128-pool-256-256-pool-512-512-pool, FC 256-256 (32x32 inputs or larger)
lenet5   conv 6@5x5 (pad 2)-pool-conv 16@5x5-pool, FC 120-84 (400 inputs on 28x28)
resnet20 CIFAR ResNet-20 (He et al. 2016): 3 stages x 3 basic blocks, 16/32/64 channels, BatchNorm
vit      small pre-norm Vision Transformer: Conv2d patches (``patch=4``), class token, positional
         embedding, 4 layers of dim 64 (x width), 4 heads, GELU MLP 2 x dim, LayerNorm, Linear head
======== ==================================================================
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from .._names import MODEL_NAMES, check_registry
from .convnets import ConvNet, LeNet5
from .fc import FC
from .resnet import ResNet20
from .vit import ViT

__all__ = ["MODELS", "build_model", "FC", "ConvNet", "LeNet5", "ResNet20", "ViT", "scaled"]

MODELS: dict[str, Callable[..., nn.Module]] = {
    "fc": FC,
    "conv2": lambda input_shape, num_classes, width=1.0: ConvNet(input_shape, num_classes, (64, 64, "M"), width),
    "conv4": lambda input_shape, num_classes, width=1.0: ConvNet(
        input_shape, num_classes, (64, 64, "M", 128, 128, "M"), width),
    "conv6": lambda input_shape, num_classes, width=1.0: ConvNet(
        input_shape, num_classes, (64, 64, "M", 128, 128, "M", 256, 256, "M"), width),
    "conv8": lambda input_shape, num_classes, width=1.0: ConvNet(
        input_shape, num_classes, (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M"), width),
    "lenet5": LeNet5,
    "resnet20": ResNet20,
    "vit": ViT,
}
check_registry("model", MODELS, MODEL_NAMES)  # slth train --help lists MODEL_NAMES without importing torch


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, width: float = 1.0, **kwargs) -> nn.Module:
    """Build registry model ``name`` for inputs of shape (C, H, W); weights are PyTorch defaults until seeded."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
    if not width > 0:
        raise ValueError(f"width multiplier must be > 0, got {width}")
    return MODELS[name](tuple(input_shape), num_classes, width=width, **kwargs)


def scaled(size: int, width: float) -> int:
    """Hidden size ``size`` times the width multiplier, at least 1."""
    return max(1, int(round(size * width)))
