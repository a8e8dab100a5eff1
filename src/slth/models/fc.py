from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn


class FC(nn.Module):
    """Fully connected ReLU network on flattened inputs: in -> hidden... -> num_classes, no biases."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, width: float = 1.0,
                 hidden: Sequence[int] = (300, 100)):
        super().__init__()
        from . import scaled

        sizes = [math.prod(input_shape), *(scaled(h, width) for h in hidden), num_classes]
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(fan_in, fan_out, bias=False))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)
