"""The whole idea of learning by pruning, in a few lines: a mask computed from scores in the forward
pass, passed straight through in the backward pass (Ramanujan et al. 2020, ``GetSubnet``)."""

from __future__ import annotations

import math

import numpy as np
import torch


def kept_count(numel: int, density: float) -> int:
    """Number of weights a layer keeps at ``density`` (kept fraction): round half up, at least one."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density (kept fraction) must lie in (0, 1], got {density}")
    return min(numel, max(1, math.floor(numel * density + 0.5)))


def topk_mask(scores: torch.Tensor, k: int, dtype: torch.dtype = torch.bool) -> torch.Tensor:
    """Mask (0/1 of ``dtype``) of the ``k`` largest entries of ``scores``: exactly ``k``, ties kept in
    index order.

    On CPU this runs in numpy: ``np.partition`` (introselect) finds the threshold about ten times faster
    than ``torch.topk`` for a few hundred thousand entries, and numpy's comparisons are cheaper than
    torch's bool kernels; this is most of a supermask step's overhead over a dense step.
    """
    flat = scores.detach().reshape(-1)
    n = flat.numel()
    if k >= n:
        return torch.ones_like(scores, dtype=dtype)
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
        values = flat.numpy()
        if np.isnan(values).any():
            raise ValueError("cannot rank scores that contain NaN")
        threshold = np.partition(values, n - k)[n - k]  # the k-th largest value
        mask = values >= threshold
        surplus = int(np.count_nonzero(mask)) - k
        if surplus:  # ties at the threshold: keep the first ones in index order
            tied = np.flatnonzero(values == threshold)
            mask[tied[len(tied) - surplus :]] = False
        if dtype != torch.bool:  # convert in numpy: cheaper than torch's bool -> float copy here
            mask = mask.astype(torch.empty((), dtype=dtype).numpy().dtype)
        return torch.from_numpy(mask).view(scores.shape)
    if bool(torch.isnan(flat).any()):
        raise ValueError("cannot rank scores that contain NaN")
    threshold = torch.kthvalue(flat.float(), n - k + 1).values.to(flat.dtype)
    mask = flat >= threshold
    surplus = int(mask.sum()) - k
    if surplus:
        tied = torch.nonzero(flat == threshold).squeeze(1)
        mask[tied[len(tied) - surplus :]] = False
    return mask.view_as(scores).to(dtype)


class GetSubnet(torch.autograd.Function):
    """Forward: 0/1 mask of the top-``k`` scores. Backward: identity (straight-through estimator)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, k: int) -> torch.Tensor:
        return topk_mask(scores, k, dtype=scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class MaskedWeight(torch.autograd.Function):
    """``weight * GetSubnet(|scores|, k)`` fused: the same values and score gradients in fewer passes.

    Forward keeps the top-``k`` |scores|; backward is straight-through, dL/ds = dL/dW_eff * W * sign(s)
    (the sign from |s|). The composition of :class:`GetSubnet` and ``abs`` is the reference it is tested
    against.
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
        ctx.save_for_backward(weight, scores)
        return weight * topk_mask(scores.abs(), k, dtype=weight.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight, scores = ctx.saved_tensors
        return None, grad * weight * scores.sign(), None


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
