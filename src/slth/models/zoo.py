"""Targets for construction that the model registry (:mod:`slth.models`) does not hold.

``resnet18`` is He et al.'s ImageNet ResNet-18 layout (the torchvision one): conv 7x7/2 (pad 3), BN,
ReLU, max-pool 3x3/2 (pad 1), four stages of two basic blocks (64/128/256/512 channels, stride 2 and a
1x1 projection + BN on the first block of stages 2-4), global average pool, FC. 11,689,512 parameters
at 1000 classes (11,679,912 weights + 9,600 BN affine parameters).

``gpt2-small`` is GPT-2 small's shape (Radford et al. 2019) on the registry's :class:`slth.models.GPT`: 12
pre-norm layers, d 768, 12 heads, MLP 3072, vocabulary 50,257, context 1,024, token embedding tied to the output
head, 124,337,664 parameters (no biases: the registry models are bias-free; LayerNorm weights counted),
initialised as GPT-2 is (every weight N(0, 0.02), the residual output projections N(0, 0.02 / sqrt(2 x 12)),
LayerNorm weight 1) from torch's global generator. Its input is a window of token ids, so ``input_shape`` is
``(context,)`` and ``num_classes`` the vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import nn

from .resnet import BasicBlock


class ResNet18(nn.Module):
    def __init__(self, input_shape: Sequence[int] = (3, 224, 224), num_classes: int = 1000, width: float = 1.0):
        super().__init__()
        from . import scaled

        channels = [scaled(c, width) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(input_shape[0], channels[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        blocks, in_ch = [], channels[0]
        for stage, out_ch in enumerate(channels):
            for b in range(2):
                blocks.append(BasicBlock(in_ch, out_ch, 2 if (stage > 0 and b == 0) else 1))
                in_ch = out_ch
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x):
        out = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        out = self.layers(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def gpt2_small(input_shape: Sequence[int] = (1024,), num_classes: int = 50257, width: float = 1.0) -> nn.Module:
    """GPT-2 small's shape and initialisation on :class:`slth.models.GPT` (see the module docstring)."""
    import math

    import torch

    from . import GPT

    depth = 12
    model = GPT(tuple(input_shape), num_classes, width=width, dim=768, depth=depth, heads=12, mlp_ratio=4.0, tie=True)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                residual_out = name.endswith(("out_proj.weight", "linear2.weight"))
                p.normal_(0.0, 0.02 / math.sqrt(2 * depth) if residual_out else 0.02)
    return model


# name -> constructor(input_shape, num_classes, width=...)
TARGETS = {"resnet18": ResNet18, "gpt2-small": gpt2_small}


def build_target(name: str, input_shape: Sequence[int], num_classes: int, width: float = 1.0,
                 **model_kwargs) -> nn.Module:
    """A target architecture by name: :data:`TARGETS` or the model registry (lenet5, conv4, resnet20, vit, gpt,
    ...); ``model_kwargs`` go to a registry model's constructor (e.g. gpt's ``dim``, ``depth``)."""
    from . import MODELS, build_model

    if name in TARGETS:
        if model_kwargs:
            raise ValueError(f"{name} takes no model arguments, got {sorted(model_kwargs)}")
        return TARGETS[name](tuple(input_shape), num_classes, width=width)
    if name in MODELS:
        return build_model(name, tuple(input_shape), num_classes, width=width, **model_kwargs)
    raise ValueError(f"unknown architecture {name!r}; valid: {', '.join(sorted([*TARGETS, *MODELS]))} "
                     "or MLP widths like 784-500-10")
