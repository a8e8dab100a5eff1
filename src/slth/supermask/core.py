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


class ThresholdTracker:
    """Where a layer's last top-k threshold was, so that the next exact selection runs over a narrow
    band around it (:mod:`slth.supermask._kernels`) instead of over every score.

    Only speed depends on it: the threshold is the exact k-th largest value whatever the band. The band's
    half-width grows at least fourfold when it misses, follows the threshold's moves (:meth:`_adapt`) and
    halves when the band holds more than 1/32 of the values.
    """

    def __init__(self) -> None:
        self.center: float | None = None
        self.width = 0.0
        self._band: np.ndarray | None = None
        self._index: np.ndarray | None = None
        self._ones: np.ndarray | None = None

    def threshold(self, values: np.ndarray, k: int, absolute: bool = False) -> float:
        """The k-th largest of ``values`` (1-D float32/float64; of ``|values|`` if ``absolute``)."""
        from ._kernels import band_count

        n = values.shape[0]
        if self.center is not None:
            if self._band is None or self._band.shape[0] < n or self._band.dtype != values.dtype:
                self._band = np.empty(n, dtype=values.dtype)
            above, in_band, nan = band_count(values, absolute, self.center - self.width, self.center + self.width,
                                             self._band)
            if nan:
                raise ValueError("cannot rank scores that contain NaN")
            if above < k <= above + in_band:
                j = in_band - (k - above)  # ascending position of the k-th largest within the band
                thr = np.partition(self._band[:in_band], j)[j]
                self._adapt(float(thr), in_band, n)
                return thr
        return self._full(values, k, absolute)

    def masked_weight(self, weight: np.ndarray, scores: np.ndarray, k: int, out: np.ndarray) -> None:
        """out = weight * (top-k mask of |scores|), exactly k kept (ties: the first in index order); in one
        pass over the band around the last threshold when it holds the new one."""
        from ._kernels import masked_weight, masked_weight_banded

        n = scores.shape[0]
        if self.center is not None:
            if self._index is None or self._index.shape[0] < n:
                self._index = np.empty(n, dtype=np.int64)
            status, thr, in_band = masked_weight_banded(weight, scores, k, self.center - self.width,
                                                        self.center + self.width, self._index, out)
            if status == 2:
                raise ValueError("cannot rank scores that contain NaN")
            if status == 0:
                self._adapt(float(thr), in_band, n)
                return
        thr = self._full(scores, k, absolute=True)
        masked_weight(weight, scores, scores.dtype.type(thr), k, out)

    def mask(self, scores: np.ndarray, k: int, out: np.ndarray) -> None:
        """out = 0/1 top-k mask of |scores| (out's dtype), as :meth:`masked_weight` of a weight of ones."""
        if self._ones is None or self._ones.shape[0] != scores.shape[0] or self._ones.dtype != scores.dtype:
            self._ones = np.ones(scores.shape[0], dtype=scores.dtype)
        self.masked_weight(self._ones, scores, k, out)

    def _adapt(self, thr: float, in_band: int, n: int) -> None:
        """After a hit: keep the half-width a few times the threshold's last move (a miss costs a full
        selection, ten passes' worth), but the band below 1/32 of the values (each band value costs a
        second look at its block)."""
        moved = abs(thr - self.center)
        if in_band > max(256, n >> 5):
            self.width *= 0.5
        elif 3.0 * moved > self.width:
            self.width *= 2.0
        else:
            self.width *= 0.95
        self.center = thr

    def _full(self, values: np.ndarray, k: int, absolute: bool):
        n = values.shape[0]
        full = np.abs(values) if absolute else values
        if np.isnan(full).any():
            raise ValueError("cannot rank scores that contain NaN")
        thr = np.partition(full, n - k)[n - k]
        if not math.isfinite(thr):  # e.g. -inf (Gem-Miner's removed weights): no band to keep
            self.center = None
            return thr
        if self.center is None:
            self.width = abs(float(thr)) * 1e-3
        else:  # a miss: at least twice the move that missed it
            self.width = max(4.0 * self.width, 2.0 * abs(float(thr) - self.center))
        self.width = max(self.width, abs(float(thr)) * 2.0**-20, 1e-30)
        self.center = float(thr)
        return thr


def _numba_ok(*tensors: torch.Tensor) -> bool:
    """The CPU kernels apply: every tensor on CPU and of the same float32/float64 dtype."""
    first = tensors[0]
    return all(t.device.type == "cpu" and t.dtype == first.dtype for t in tensors) and first.dtype in (
        torch.float32, torch.float64)


def _flat(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().view(-1).numpy()


def topk_mask(scores: torch.Tensor, k: int, dtype: torch.dtype = torch.bool,
              tracker: ThresholdTracker | None = None) -> torch.Tensor:
    """Mask (0/1 of ``dtype``) of the ``k`` largest entries of ``scores``: exactly ``k``, ties kept in
    index order.

    On CPU the threshold is an exact selection in numba (over a band around the last threshold when a
    ``tracker`` is given; :class:`ThresholdTracker`), and the mask is built in numpy, whose comparisons
    are cheaper than torch's bool kernels; ranking is most of a supermask step's overhead over a dense step.
    """
    flat = scores.detach().reshape(-1)
    n = flat.numel()
    if k >= n:
        return torch.ones_like(scores, dtype=dtype)
    if _numba_ok(flat):
        values = _flat(flat)
        threshold = (tracker or ThresholdTracker()).threshold(values, k)
        threshold = values.dtype.type(threshold)
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
    def forward(ctx, scores: torch.Tensor, k: int, tracker: ThresholdTracker | None = None) -> torch.Tensor:
        return topk_mask(scores, k, dtype=scores.dtype, tracker=tracker)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


class MaskedWeight(torch.autograd.Function):
    """``weight * GetSubnet(|scores|, k)`` fused: the same values and score gradients in fewer passes.

    Forward keeps the top-``k`` |scores|; backward is straight-through, dL/ds = dL/dW_eff * W * sign(s)
    (the sign from |s|). On CPU both directions are single numba loops (:mod:`slth.supermask._kernels`).
    The composition of :class:`GetSubnet` and ``abs`` is the reference it is tested against, bit for bit.
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, scores: torch.Tensor, k: int,
                tracker: ThresholdTracker | None = None) -> torch.Tensor:
        ctx.save_for_backward(weight, scores)
        if not _numba_ok(weight, scores) or k >= weight.numel():
            return weight * topk_mask(scores.abs(), k, dtype=weight.dtype, tracker=tracker)
        out = torch.empty(weight.shape, dtype=weight.dtype)
        (tracker or ThresholdTracker()).masked_weight(_flat(weight), _flat(scores), k, out.view(-1).numpy())
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight, scores = ctx.saved_tensors
        if not _numba_ok(grad, weight, scores):
            return None, grad * weight * scores.sign(), None, None
        from ._kernels import abs_straight_through_grad

        out = torch.empty(grad.shape, dtype=grad.dtype)
        abs_straight_through_grad(_flat(grad), _flat(weight), _flat(scores), out.view(-1).numpy())
        return None, out, None, None


class BinarizedWeight(torch.autograd.Function):
    """biprop's ``alpha * sign(W) * GetSubnet(|scores|, k)`` with alpha = sum(|W| * m) / k, fused on CPU
    (:func:`slth.supermask._kernels.binarized_weight`; sums in float64, so it agrees with the unfused
    reference to float32 rounding, not bit for bit). The gradient reaches the scores through the mask
    and through alpha; straight-through, with the sign from |s|.
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, scores: torch.Tensor, k: int,
                tracker: ThresholdTracker | None = None) -> torch.Tensor:
        from ._kernels import binarized_weight

        w = _flat(weight)
        mask = np.empty_like(w)
        (tracker or ThresholdTracker()).mask(_flat(scores), k, mask)
        out = torch.empty(weight.shape, dtype=weight.dtype)
        alpha = binarized_weight(w, mask, k, out.view(-1).numpy())
        ctx.save_for_backward(weight, scores)
        ctx.mask, ctx.alpha, ctx.k = mask, alpha, k
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        from ._kernels import binarized_grad

        weight, scores = ctx.saved_tensors
        out = torch.empty(grad.shape, dtype=grad.dtype)
        binarized_grad(_flat(grad.to(weight.dtype)), _flat(weight), _flat(scores), ctx.mask, ctx.alpha, ctx.k,
                       out.view(-1).numpy())
        return None, out, None, None


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
