from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out_ch:  # option B: projection, itself prunable
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR-style ResNet-20: conv 16, three stages of 3 basic blocks (16/32/64 x width), global pool, FC.

    BatchNorm is affine; when only masks are trained its scale/shift stay frozen at 1/0, which is the
    non-affine BatchNorm of edge-popup.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, width: float = 1.0, blocks: int = 3):
        super().__init__()
        from . import scaled

        channels = [scaled(c, width) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(input_shape[0], channels[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        stages, in_ch = [], channels[0]
        for stage, out_ch in enumerate(channels):
            for b in range(blocks):
                stages.append(BasicBlock(in_ch, out_ch, 2 if (stage > 0 and b == 0) else 1))
                in_ch = out_ch
        self.layers = nn.Sequential(*stages)
        self.fc = nn.Linear(in_ch, num_classes, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)
