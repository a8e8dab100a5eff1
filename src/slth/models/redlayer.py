"""Pensia et al.'s RedLayer structure (arXiv 2006.07990, Exp. 2): each input fanned out to r random
products before a wide mixing layer, x -> mix(act(expand(x))). Used by ``slth experiment pensia-exp2``."""

from __future__ import annotations

import torch
from torch import nn


class Expand(nn.Module):
    """x (B, d_in) -> (B, d_in·r) with entry j·r + k = x_j · weight[k, j]."""

    def __init__(self, d_in: int, r: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(r, d_in))

    def forward(self, x):
        return (x.unsqueeze(2) * self.weight.t().unsqueeze(0)).flatten(1)


class RedLayer(nn.Module):
    def __init__(self, d_in: int, d_out: int, r: int, relu: bool = True):
        super().__init__()
        self.expand = Expand(d_in, r)
        self.act = nn.ReLU() if relu else nn.Identity()
        self.mix = nn.Linear(r * d_in, d_out, bias=False)
        self.d_in = d_in

    def forward(self, x):
        return self.mix(self.act(self.expand(x)))
