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
gpt      small causal char-level GPT: token Embedding + positional embedding, 2 pre-norm layers of
         dim 64 (x width), 4 heads, GELU MLP 4 x dim, causal mask, LayerNorm, Linear head (``tie``:
         the embedding's); input shape (context,) of token ids, output (N, context, vocab)
======== ==================================================================

Every model class of slth lives in this package, also those outside the registry: :mod:`.zoo` (construction
targets: ImageNet ResNet-18, GPT-2 small's shape), :mod:`.redlayer` (Pensia et al.'s Exp. 2 structure) and
:mod:`.planted` (the Plant 'n' Seek network).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping

from torch import nn

from .._names import MODEL_NAMES, check_registry
from .convnets import ConvNet, LeNet5
from .fc import FC
from .gpt import GPT
from .resnet import ResNet20
from .vit import ViT

__all__ = ["MODELS", "build_model", "check_model_args", "FC", "ConvNet", "LeNet5", "ResNet20", "ViT", "GPT", "scaled"]

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
    "gpt": GPT,
}
check_registry("model", MODELS, MODEL_NAMES)  # slth train --help lists MODEL_NAMES without importing torch


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, width: float = 1.0, **kwargs) -> nn.Module:
    """Build registry model ``name`` for inputs of shape (C, H, W) (gpt: (context,)); weights are PyTorch
    defaults until seeded."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
    if not width > 0:
        raise ValueError(f"width multiplier must be > 0, got {width}")
    return MODELS[name](tuple(input_shape), num_classes, width=width, **kwargs)


_SET_ELSEWHERE = {"input_shape": "the data set", "num_classes": "the data set", "width": "its own option (--width)",
                  "hidden": "its own option (--hidden)"}


def check_model_args(name: str, args: Mapping[str, object] | Iterable[tuple[str, object]]) -> tuple:
    """Extra constructor arguments of registry model ``name`` (a mapping or (key, value) pairs; a value may be
    the string the command line gives), checked against the constructor's signature and converted to the
    type of each argument's default: a sorted tuple of (key, value) pairs (``(("depth", 4), ("patch", 7))``).

    Raises ``ValueError`` naming an unknown key (and the model's valid ones), a key given twice, a key set
    elsewhere (the input shape and classes come from the data set; ``width`` and ``hidden`` have options),
    and a value that does not convert. Only arguments with a bool, int, float or str default are settable.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
    params = inspect.signature(MODELS[name]).parameters
    settable = {k: p.default for k, p in params.items() if k not in _SET_ELSEWHERE
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and type(p.default) in (bool, int, float, str)}
    out: dict[str, object] = {}
    for key, value in (args.items() if isinstance(args, Mapping) else args):
        if key in _SET_ELSEWHERE and key in params:
            raise ValueError(f"model argument {key!r} of {name} is set by {_SET_ELSEWHERE[key]}")
        if key not in settable:
            raise ValueError(f"unknown model argument {key!r} for {name}; its arguments: "
                             f"{', '.join(sorted(settable)) or 'none'}")
        if key in out:
            raise ValueError(f"model argument {key!r} given twice")
        out[key] = _convert(name, key, value, type(settable[key]))
    return tuple(sorted(out.items()))


def _convert(name: str, key: str, value: object, kind: type):
    """``value`` as a ``kind`` (the type of the argument's default), from a string or a value of that type."""
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        if kind is bool and text in ("true", "false", "1", "0", "yes", "no"):
            return text in ("true", "1", "yes")
        if kind is not bool:
            try:
                return kind(text)
            except ValueError:
                pass  # refused below, as every value that is not a `kind`
    ok = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}[kind]
    if not isinstance(value, ok) or (kind is not bool and isinstance(value, bool)):
        raise ValueError(f"model argument {key}={value!r} of {name}: expected {kind.__name__}")
    return kind(value)


def scaled(size: int, width: float) -> int:
    """Hidden size ``size`` times the width multiplier, at least 1."""
    return max(1, int(round(size * width)))
