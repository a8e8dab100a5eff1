"""Supermask methods as ``torch.nn.utils.parametrize`` parametrizations of a layer's frozen ``weight``.

Each method is a module ``P`` with ``P(weight) -> effective weight``. In training mode the mask may be
stochastic (Bernoulli) or thresholded (Gem-Miner); in eval mode every method uses its *final mask*, which
keeps exactly ``kept_count(numel, density)`` weights -- the mask a ticket stores.

==========  ===================================================================  ====================
method      training mask / effective weight                                     final mask
==========  ===================================================================  ====================
edge-popup  top-k of |s|, straight-through; W * m  (Ramanujan et al. 2020)      top-k of |s|
bernoulli   m ~ Bernoulli(sigmoid((s + b) / T)), E|m| = k, T: 1 -> 1/E (Zhou)  top-k of s
biprop      top-k of |s|; alpha * sign(W) * m, alpha = mean |W| over kept      top-k of |s|
iterand     edge-popup; every ``rerand_period`` steps each pruned weight is      top-k of |s|
            re-drawn from the init with probability ``rerand_prob`` (Chijiwa)
gem-miner   s in [0, 1], m = 1[s > 0.5] on the not-yet-removed set, + lambda     top-k of s over the
            * sum s^2; the removable set shrinks to ``density`` on a geometric    remaining set
            per-epoch schedule over the first 3/4 of training (Sreenivasan et al. 2022)
==========  ===================================================================  ====================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .core import (AliveSquareSum, BinarizedWeight, GetSubnet, KernelState, MaskedWeight, RoundedMaskedWeight,
                   StraightThroughBernoulli, StraightThroughRound, _identity, _numba_ok, kept_count, topk_mask)
from .init import DISTRIBUTIONS, check_init


@dataclass(frozen=True)
class SupermaskConfig:
    """Hyper-parameters of a supermask. ``density`` is the kept fraction of the prunable weights."""

    method: str = "edge-popup"
    density: float = 0.5
    init: str = "signed-constant"
    distribution: str = "uniform"  # per-layer densities: "uniform" or "erk"
    rerand_period: int = 300  # IteRand: optimizer steps between re-randomisations (K_per)
    rerand_prob: float = 0.1  # IteRand: probability that a pruned weight is re-drawn
    score_l2: float = 1e-4  # Gem-Miner: lambda of the sparsity regulariser lambda * sum(s^2)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown supermask method {self.method!r}; valid names: {', '.join(sorted(METHODS))}")
        if not isinstance(self.density, (int, float)) or not 0.0 < self.density <= 1.0:
            raise ValueError(f"density (kept fraction) must lie in (0, 1], got {self.density!r}")
        check_init(self.init)
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown density distribution {self.distribution!r}; valid names: {', '.join(DISTRIBUTIONS)}")
        if self.rerand_period < 1 or not 0.0 <= self.rerand_prob <= 1.0 or self.score_l2 < 0:
            raise ValueError("need rerand_period >= 1, rerand_prob in [0, 1] and score_l2 >= 0")


class Supermask(nn.Module):
    """Base parametrization: ``weight -> effective_weight(weight, mask)`` with ``scores`` the only parameter."""

    def __init__(self, shape: torch.Size, density: float, scores: torch.Tensor):
        super().__init__()
        self.density = float(density)
        self.k = kept_count(math.prod(shape), density)
        self.scores = nn.Parameter(scores.reshape(shape).clone())
        self.kernels = KernelState()  # speed only: last threshold, reusable buffers, cached views
        self.tracker = self.kernels.tracker

    def final_mask(self) -> torch.Tensor:
        """The deterministic boolean mask with exactly ``k`` kept weights."""
        return topk_mask(self.scores.detach().abs(), self.k, tracker=self.tracker)

    def training_mask(self) -> torch.Tensor:
        return GetSubnet.apply(self.scores.abs(), self.k, self.tracker)

    def effective_weight(self, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return weight * mask

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.training_weight(weight)
        return self.effective_weight(weight, self.final_mask().to(weight.dtype))

    def training_weight(self, weight: torch.Tensor) -> torch.Tensor:
        return self.effective_weight(weight, self.training_mask())

    # hooks the trainer calls; no-ops unless a method needs them
    def regularization(self) -> torch.Tensor | float:
        return 0.0

    def after_step(self, step: int, weight: torch.Tensor) -> None:
        """Called after optimizer step ``step`` (1-based) with the layer's frozen weight tensor (methods
        that change tensors here run under ``torch.no_grad``; the no-op skips that context's cost)."""

    @torch.no_grad()
    def after_epoch(self, epoch: int, epochs: int) -> None:
        """Called after epoch ``epoch`` (1-based) of ``epochs``."""


class EdgePopup(Supermask):
    def training_weight(self, weight: torch.Tensor) -> torch.Tensor:
        # == weight * GetSubnet.apply(scores.abs(), k), fused (tests/test_supermask.py checks they agree)
        return MaskedWeight.apply(weight, self.scores, self.k, self.kernels)


def binarized_weight(weight: torch.Tensor, mask: torch.Tensor, kept: int) -> torch.Tensor:
    """biprop's effective weight alpha * sign(W) * m, alpha = ||m * W||_1 / ||m||_0 (per layer)."""
    alpha = (weight.abs() * mask).sum() / kept
    return alpha * torch.sign(weight) * mask


class BiProp(Supermask):
    def effective_weight(self, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return binarized_weight(weight, mask, self.k)

    def training_weight(self, weight: torch.Tensor) -> torch.Tensor:
        if _numba_ok(weight, self.scores) and self.k < weight.numel():
            # == binarized_weight(weight, GetSubnet.apply(scores.abs(), k), k), fused (tested against it)
            return BinarizedWeight.apply(weight, self.scores, self.k, self.kernels)
        return super().training_weight(weight)


class _Sampling(Supermask):
    """A method with its own random stream; its state travels in ``state_dict`` (resume is exact)."""

    def __init__(self, shape, density, scores, sample_seed: int):
        super().__init__(shape, density, scores)
        self.generator = torch.Generator().manual_seed(sample_seed)

    def get_extra_state(self):
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state) -> None:
        self.generator.set_state(state["generator"])


class Bernoulli(_Sampling):
    """m ~ Bernoulli(sigmoid((s + b) / T)) with straight-through gradients (Zhou et al. 2019).

    Two additions make the deterministic final mask (top-k of s) the mask that was trained: the per-layer
    shift b is re-solved each step so the *expected* kept fraction is the layer's density, and the
    temperature T anneals from 1 to 1/E over E epochs so the samples harden toward that top-k. Without
    them (MNIST FC, 3 epochs) 77 % of first-layer probabilities stayed in (0.1, 0.9) and the final mask
    scored 65 % against 96 % for sampled masks.
    """

    def __init__(self, shape, density, scores, sample_seed: int):
        super().__init__(shape, density, scores, sample_seed)
        # buffers, so they travel in state_dict and a resumed run continues identically
        self.register_buffer("shift", torch.zeros(()))
        self.register_buffer("temperature", torch.ones(()))

    def final_mask(self) -> torch.Tensor:
        return topk_mask(self.scores.detach(), self.k)  # the k most probable weights

    def probabilities(self) -> torch.Tensor:
        self._calibrate()
        return torch.sigmoid((self.scores + self.shift) / self.temperature)

    def training_mask(self) -> torch.Tensor:
        return StraightThroughBernoulli.apply(self.probabilities(), self.generator)

    @torch.no_grad()
    def after_epoch(self, epoch: int, epochs: int) -> None:
        self.temperature.fill_(max(1.0 - epoch / epochs, 1.0 / epochs))

    @torch.no_grad()
    def _calibrate(self, tolerance: float = 0.5, max_iter: int = 60) -> None:
        """Safeguarded Newton on b: sum(sigmoid((s + b) / T)) = k, to within half a weight."""
        scores, b, t = self.scores.detach(), float(self.shift), float(self.temperature)
        lo, hi = -math.inf, math.inf  # bracket: expected count < k at lo, > k at hi
        p = torch.empty_like(scores).view(-1)
        for _ in range(max_iter):
            torch.add(scores.view(-1), b, out=p).div_(t).sigmoid_()  # one buffer, no temporaries
            total = float(p.sum())
            excess = total - self.k
            if abs(excess) < tolerance:
                break
            if excess > 0:
                hi = b
            else:
                lo = b
            slope = float((p * (1 - p)).sum()) / t
            step = b - excess / slope if slope > 0 else math.nan
            if lo < step < hi:
                b = step
            elif math.isfinite(lo) and math.isfinite(hi):
                b = 0.5 * (lo + hi)
            else:  # no bracket on one side yet: move outward geometrically
                b = b + (1.0 + abs(b)) * (1.0 if excess < 0 else -1.0)
        self.shift.fill_(b)


class IteRand(_Sampling):
    """edge-popup plus periodic re-randomisation of pruned weights (Chijiwa et al. 2021).

    ``generation`` records, per weight, which draw of the init it currently holds (0 = the original), so a
    ticket can rebuild the frozen weights from the seed alone.
    """

    training_weight = EdgePopup.training_weight

    def __init__(self, shape, density, scores, sample_seed: int, redraw: Callable[[int], torch.Tensor],
                 period: int, prob: float):
        super().__init__(shape, density, scores, sample_seed)
        self.redraw, self.period, self.prob = redraw, period, prob
        self.register_buffer("generation", torch.zeros(shape, dtype=torch.int16))

    @torch.no_grad()
    def after_step(self, step: int, weight: torch.Tensor) -> None:
        if step % self.period:
            return
        round_ = step // self.period
        if round_ > torch.iinfo(torch.int16).max:
            raise OverflowError("IteRand: more re-randomisation rounds than an int16 generation can record")
        pruned = ~self.final_mask()
        chosen = pruned & (torch.rand(weight.shape, generator=self.generator) < self.prob)
        weight[chosen] = self.redraw(round_)[chosen]
        self.generation[chosen] = round_


class GemMiner(Supermask):
    """Relaxed scores in [0, 1] rounded at 0.5, an L2 pull toward pruning, and a shrinking removable set."""

    def __init__(self, shape, density, scores, score_l2: float):
        super().__init__(shape, density, scores)
        self.score_l2 = score_l2
        self.register_buffer("alive", torch.ones(shape, dtype=torch.bool))

    def _ranked_scores(self) -> torch.Tensor:
        return self.scores.detach().masked_fill(~self.alive, -math.inf)

    def final_mask(self) -> torch.Tensor:
        return topk_mask(self._ranked_scores(), self.k)

    def training_mask(self) -> torch.Tensor:
        return StraightThroughRound.apply(self.scores) * self.alive

    def training_weight(self, weight: torch.Tensor) -> torch.Tensor:
        if _numba_ok(weight, self.scores):  # == weight * training_mask(), fused (tested bit for bit)
            return RoundedMaskedWeight.apply(weight, self.scores, self.alive, self.kernels)
        return super().training_weight(weight)

    def regularization(self) -> torch.Tensor | float:
        # The pull toward pruning stops once the rounded mask is down to the target: Gem-Miner reaches its
        # sparsity through lambda, but a fixed lambda overshoots (MNIST FC, lr 3: 1.2 % of the first layer
        # left on at a 50 % target) and the final top-k then switches on weights that were never trained on.
        counted = self.kernels.last_count  # this step's forward pass counted them
        if counted is not None and counted[0] == _identity(self.scores, self.alive):
            on = counted[1]
        else:
            on = int(torch.count_nonzero((self.scores.detach() > 0.5) & self.alive))
        if on <= self.k:
            return 0.0
        if _numba_ok(self.scores):
            return AliveSquareSum.apply(self.scores, self.alive, self.score_l2, self.kernels)
        return self.score_l2 * (self.scores * self.alive).pow(2).sum()

    @torch.no_grad()
    def after_step(self, step: int, weight: torch.Tensor) -> None:
        self.scores.clamp_(0.0, 1.0)

    @staticmethod
    def pruning_epochs(epochs: int) -> int:
        """Epochs over which the removable set shrinks; the last quarter (at least one epoch, if there are
        two) then trains at the target, so the network recovers from the last removal before the end."""
        return max(1, epochs - max(1, epochs // 4))

    @torch.no_grad()
    def after_epoch(self, epoch: int, epochs: int) -> None:
        # geometric schedule: after epoch e the removable set keeps density ** (e / P) of the layer, P above
        n = self.alive.numel()
        fraction = self.density ** min(1.0, epoch / self.pruning_epochs(epochs))
        keep = max(self.k, kept_count(n, fraction))
        self.alive.copy_(topk_mask(self._ranked_scores(), keep))


METHODS = ("edge-popup", "bernoulli", "biprop", "iterand", "gem-miner")
