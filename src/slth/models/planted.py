"""The network of the Plant 'n' Seek experiment (Fischer & Burkholz 2022, arXiv 2111.11153): a bias-free
ReLU MLP with a fixed output scale, in which a known sparse target is planted. Used by ``slth experiment
planted``."""

from __future__ import annotations

import torch
from torch import nn


class Planted(nn.Module):
    """Bias-free ReLU MLP with a fixed output scale: ``layers`` (Sequential of Linear/ReLU), ``scale``."""

    def __init__(self, widths: list[int], output_scale: float = 1.0):
        super().__init__()
        mods: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            mods.append(nn.Linear(a, b, bias=False))
            if i < len(widths) - 2:
                mods.append(nn.ReLU())
        self.layers = nn.Sequential(*mods)
        self.register_buffer("scale", torch.tensor(float(output_scale)))

    def forward(self, x):
        return self.layers(x.flatten(1)) * self.scale

    def linear_names(self) -> list[str]:
        return [f"layers.{i}" for i, m in enumerate(self.layers) if isinstance(m, nn.Linear)]
