from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _flat_size(features: nn.Module, input_shape: Sequence[int]) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, *input_shape)).numel())


class ConvNet(nn.Module):
    """VGG-like Conv2/4/6/8 (Frankle & Carbin, arXiv 1803.03635; Ramanujan et al., arXiv 1911.13299): 3x3
    convs, max-pools, FC 256-256-classes."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, plan: Sequence[int | str],
                 width: float = 1.0, fc: Sequence[int] = (256, 256)):
        super().__init__()
        from . import scaled

        layers: list[nn.Module] = []
        channels = input_shape[0]
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                out = scaled(int(item), width)
                layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.ReLU()]
                channels = out
        self.features = nn.Sequential(*layers)
        sizes = [_flat_size(self.features, input_shape), *(scaled(h, width) for h in fc), num_classes]
        head: list[nn.Module] = [nn.Flatten()]
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            head.append(nn.Linear(fan_in, fan_out, bias=False))
            if i < len(sizes) - 2:
                head.append(nn.ReLU())
        self.classifier = nn.Sequential(*head)

    def forward(self, x):
        return self.classifier(self.features(x))


class LeNet5(nn.Module):
    """LeNet-5 (ReLU, max-pool): conv 6@5x5 pad 2, pool, conv 16@5x5, pool, FC 120-84-classes."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, width: float = 1.0):
        super().__init__()
        from . import scaled

        c1, c2 = scaled(6, width), scaled(16, width)
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], c1, 5, padding=2, bias=False), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, bias=False), nn.ReLU(), nn.MaxPool2d(2),
        )
        f1, f2 = scaled(120, width), scaled(84, width)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(_flat_size(self.features, input_shape), f1, bias=False), nn.ReLU(),
            nn.Linear(f1, f2, bias=False), nn.ReLU(),
            nn.Linear(f2, num_classes, bias=False),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
