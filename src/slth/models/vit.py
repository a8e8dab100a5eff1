from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ViT(nn.Module):
    """A small Vision Transformer (Dosovitskiy et al. 2020, arXiv 2010.11929), bias-free like every model here.

    Patches of ``patch`` x ``patch`` pixels embedded by a Conv2d (stride ``patch``), a class token and a
    positional embedding (free ``nn.Parameter`` s), ``depth`` pre-norm ``nn.TransformerEncoderLayer`` s
    (``norm_first=True``, GELU, no dropout), a final LayerNorm and a Linear head on the class token.
    ``width`` scales the embedding size ``dim`` (kept a multiple of ``heads``) and the MLP size
    (``mlp_ratio`` x ``dim``). Under a supermask the patch embedding, attention projections, MLPs and head
    are masked; LayerNorm weights stay 1, the class token and positional embedding stay at their seeded
    N(0, 1) draw (:func:`slth.supermask.init.freeze_plan`).
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, width: float = 1.0, patch: int = 4,
                 dim: int = 64, depth: int = 4, heads: int = 4, mlp_ratio: float = 2.0):
        super().__init__()
        channels, height, width_px = input_shape
        if height % patch or width_px % patch:
            raise ValueError(f"ViT: the patch size {patch} must divide the image size {height}x{width_px}")
        dim = heads * max(1, round(dim * width / heads))
        tokens = (height // patch) * (width_px // patch) + 1
        self.patch = nn.Conv2d(channels, dim, patch, stride=patch, bias=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, max(1, round(mlp_ratio * dim)), dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True, bias=False)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim, bias=False)
        self.head = nn.Linear(dim, num_classes, bias=False)

    def forward(self, x):
        h = self.patch(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), h], 1) + self.pos_embed
        return self.head(self.norm(self.encoder(h))[:, 0])
