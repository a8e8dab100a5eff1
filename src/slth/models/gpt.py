from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class GPT(nn.Module):
    """A small character-level GPT (Radford et al. 2018/2019; the decoder-only Transformer of Vaswani et al.
    2017, arXiv 1706.03762), bias-free like every model here.

    ``input_shape`` is ``(context,)``: windows of exactly ``context`` token ids (int64); ``num_classes`` is the
    vocabulary size. A token ``nn.Embedding`` plus a positional embedding (a free ``nn.Parameter`` of shape
    (1, context, dim)), ``depth`` pre-norm ``nn.TransformerEncoderLayer`` s (``norm_first=True``, GELU MLP of
    ``mlp_ratio`` x ``dim``, no dropout) under a causal mask (the stack is called with the causal float mask and
    ``is_causal=True``, the form :func:`slth.construct` traces), a final LayerNorm and a Linear head to the
    vocabulary: its own weight (``tie=False``) or the token embedding's (``tie=True``, ``h @ tok.weight.T``;
    under a supermask the head then shares the embedding's masked weight). The output is the next-token
    logits at every position, (N, context, vocab). ``width`` scales ``dim`` (kept a multiple of ``heads``).
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, width: float = 1.0, dim: int = 64,
                 depth: int = 2, heads: int = 4, mlp_ratio: float = 4.0, tie: bool = False):
        super().__init__()
        if len(input_shape) != 1:
            raise ValueError(f"GPT: the input shape is (context,), token ids; got {tuple(input_shape)}")
        context = int(input_shape[0])
        dim = heads * max(1, round(dim * width / heads))
        self.context, self.tie = context, bool(tie)
        self.tok = nn.Embedding(num_classes, dim)
        self.pos = nn.Parameter(torch.zeros(1, context, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, max(1, round(mlp_ratio * dim)), dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True, bias=False)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)
        self.norm = nn.LayerNorm(dim, bias=False)
        self.head = None if self.tie else nn.Linear(dim, num_classes, bias=False)

    def forward(self, idx):
        h = self.blocks(self.tok(idx) + self.pos, mask=self.mask, is_causal=True)
        h = self.norm(h)
        return h @ self.tok.weight.T if self.head is None else self.head(h)

