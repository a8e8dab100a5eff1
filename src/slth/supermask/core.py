"""The whole idea of learning by pruning, in a few lines: a mask computed from scores in the forward
pass, passed straight through in the backward pass (Ramanujan et al. 2020, ``GetSubnet``)."""

from __future__ import annotations

import math

import torch


def kept_count(numel: int, density: float) -> int:
    """Number of weights a layer keeps at ``density`` (kept fraction): round half up, at least one."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density (kept fraction) must lie in (0, 1], got {density}")
    return min(numel, max(1, math.floor(numel * density + 0.5)))


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` largest entries of ``scores`` -- exactly ``k``, ties broken by torch.topk."""
    flat = scores.reshape(-1)
    if k >= flat.numel():
        return torch.ones_like(scores, dtype=torch.bool)
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=scores.device)
    mask[torch.topk(flat, k, sorted=False).indices] = True
    return mask.view_as(scores)


class GetSubnet(torch.autograd.Function):
    """Forward: 0/1 mask of the top-``k`` scores. Backward: identity (straight-through estimator)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, k: int) -> torch.Tensor:
        return topk_mask(scores, k).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class StraightThroughBernoulli(torch.autograd.Function):
    """Forward: a sample m ~ Bernoulli(p). Backward: identity in p (Zhou et al. 2019)."""

    @staticmethod
    def forward(ctx, probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.bernoulli(probs, generator=generator)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class StraightThroughRound(torch.autograd.Function):
    """Forward: 1[s > 0.5]. Backward: identity (Gem-Miner's rounding of relaxed scores in [0, 1])."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor) -> torch.Tensor:
        return (scores > 0.5).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad
