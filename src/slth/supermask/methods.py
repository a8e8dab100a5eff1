"""Supermask methods: one :class:`Method` entry per method in :data:`METHODS`, and the parametrizations.

Each method's parametrization is a ``torch.nn.utils.parametrize`` module ``P`` of a layer's frozen
weight, ``P(weight) -> effective weight``. In training mode the mask may be stochastic (Bernoulli) or
thresholded (Gem-Miner); in eval mode every method uses its *final mask*, which keeps exactly
``kept_count(numel, density)`` weights -- the mask a ticket stores.

==========  ===================================================================  ====================
method      training mask / effective weight                                     final mask
==========  ===================================================================  ====================
edge-popup  top-k of |s|, straight-through; W * m  (Ramanujan et al. 2020)      top-k of |s|
bernoulli   m ~ Bernoulli(sigmoid((s + b) / T)), E|m| ~ k, T: 1 -> 1/E (Zhou)  top-k of s
biprop      top-k of |s|; alpha * sign(W) * m, alpha = mean |W| over kept      top-k of |s|
iterand     edge-popup; every ``rerand_period`` steps each pruned weight is      top-k of |s|
            re-drawn from the init with probability ``rerand_prob`` (Chijiwa)
gem-miner   s in [0, 1], m = 1[s > 0.5] on the not-yet-removed set, + lambda     top-k of s over the
            * sum s^2; the removable set shrinks to ``density`` on a geometric    remaining set
            per-epoch schedule over the first 3/4 of training (Sreenivasan et al. 2022)
==========  ===================================================================  ====================

**Variants.** ``SupermaskConfig(variant="reference")`` runs each method as its reference code does
(docs/reference-code.md): edge-popup and biprop keep ``n - int((1 - density) n)`` weights (hidden-networks'
``GetSubnet``), ties going to the last indices; biprop's score gradient is straight-through (not through
alpha) and alpha divides by ``int(density n)``; IteRand ranks the signed scores against their
``100 (1 - density)`` percentile, its scores start at kaiming_uniform's bound and it re-draws after steps
``period - 1, 2 period - 1, ...``; Gem-Miner prunes the lowest active scores of all layers together every
``GEM_MINER_PERIOD`` epochs (:meth:`GemMiner.after_epoch_all`), its regulariser covers every score and never
switches off, and its final mask is the rounded scores; Bernoulli samples sigmoid(s) with no shift and no
temperature, its final mask the most probable one (s > 0). The default ``"slth"`` is the table above, on the
fused kernels; the reference variant uses torch ops around them.

**Adding a method** touches this file and one line of :mod:`slth._names` (its name, which the train
command's help lists without importing torch): its parametrization class (a :class:`Supermask`) and one
:class:`Method` entry in :data:`METHODS` -- how its parametrization is made, how its scores start, its
default learning rate, weight decay and init (``slth train`` reads them), its reference variant's defaults
(:class:`ReferenceDefaults`, taken from the reference repository's config), and the weight a ticket
rebuilds from a mask. :func:`slth.supermask.apply_supermask`, the trainer's config, tickets and the
experiments all read the entry.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .._hparams import DEFAULTS as _METHOD
from .._hparams import MethodSettings
from .._hparams import is_real as _is_real
from .._names import METHOD_NAMES, check_registry
from ._philox import PhiloxStream, tie_words
from .core import (
    AliveSquareSum,
    BinarizedWeight,
    GetSubnet,
    KernelState,
    MaskedWeight,
    RoundedMaskedWeight,
    SampledMaskedWeight,
    StraightThroughBernoulli,
    StraightThroughRound,
    StraightThroughWeight,
    _flat,
    _identity,
    _kernels,
    _numba_ok,
    binarized_weight,
    kept_count,
    percentile_threshold,
    reference_kept_count,
    topk_mask,
)
from .init import ABSENT, DISTRIBUTIONS, LOCKED, VARIANTS, check_init, check_variant_init

_LITTLE_ENDIAN = sys.byteorder == "little"  # the Bernoulli kernel reads its random bytes from uint32 words
NEWTON_REACH = 16.0  # largest change of (s + b) / T one draw's shift update may make (sigmoid(16) = 1 - 1e-7)


@dataclass(frozen=True)
class SupermaskConfig:
    """Hyper-parameters of a supermask. ``density`` is the kept fraction of the prunable weights."""

    method: str = "edge-popup"
    density: float = 0.5
    init: str | None = None  # None: the method's default init (its METHODS entry)
    distribution: str = "uniform"  # per-layer densities: "uniform", "erk", "balanced" or "pyramidal"
    # the methods' own settings (slth._hparams.MethodSettings: the defaults, defined there once)
    rerand_period: int = _METHOD.rerand_period  # IteRand: optimizer steps between re-randomisations (K_per)
    rerand_prob: float = _METHOD.rerand_prob  # IteRand: probability that a pruned weight is re-drawn
    score_l2: float = _METHOD.score_l2  # Gem-Miner: lambda of the sparsity regulariser lambda * sum(s^2)
    # "slth" (slth's own semantics, the fast kernels) or "reference" (each method as its reference code runs
    # it; the table at the top of this module and docs/reference-code.md say what changes)
    variant: str = _METHOD.variant
    # the random network the mask is searched in (slth._hparams.MethodSettings; docs/training.md): "dense",
    # "erdos-renyi" or "partially-frozen", its density (present fraction), per-layer distribution and
    # locked (frozen-kept) fraction; the pattern is drawn from the seed (slth.supermask.source)
    source: str = _METHOD.source
    source_density: float = _METHOD.source_density
    source_distribution: str = _METHOD.source_distribution
    source_locked: float = _METHOD.source_locked

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown supermask method {self.method!r}; valid names: {', '.join(sorted(METHODS))}")
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown supermask variant {self.variant!r}; valid names: {', '.join(VARIANTS)}")
        if self.init is None:
            object.__setattr__(self, "init", METHODS[self.method].default_init(self.variant))
        if not _is_real(self.density) or not 0.0 < self.density <= 1.0:
            raise ValueError(f"density (kept fraction) must lie in (0, 1], got {self.density!r}")
        check_init(self.init)
        check_variant_init(self.init, self.variant, {"": self.density})
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown density distribution {self.distribution!r}; "
                             f"valid names: {', '.join(DISTRIBUTIONS)}")
        self.method_settings()  # checks rerand_period, rerand_prob, score_l2 and the source
        if self.density > self.source_density:
            raise ValueError(f"density {self.density} exceeds source_density {self.source_density}: the mask keeps "
                             "weights of the source only (density is the kept fraction of the full layers)")
        if self.density < self.source_locked:
            raise ValueError(f"density {self.density} is below source_locked {self.source_locked}: the locked "
                             "weights are always kept")

    def method_settings(self) -> MethodSettings:
        """The methods' own settings of this config (checked)."""
        return MethodSettings(rerand_period=self.rerand_period, rerand_prob=self.rerand_prob,
                              score_l2=self.score_l2, variant=self.variant, source=self.source,
                              source_density=self.source_density, source_distribution=self.source_distribution,
                              source_locked=self.source_locked)

    def record(self) -> dict:
        """This config as a model's ``slth_spec`` and a ticket hold it: ``asdict``, without the source's
        fields when the source is dense (so the records of dense-source models are as before sources)."""
        d = asdict(self)
        if self.source == "dense":
            for name in SOURCE_FIELDS:
                del d[name]
        return d


SOURCE_FIELDS = ("source", "source_density", "source_distribution", "source_locked")


class Supermask(nn.Module):
    """Base parametrization: ``weight -> effective_weight(weight, mask)`` with ``scores`` the only parameter."""

    def __init__(self, shape: torch.Size, density: float, scores: torch.Tensor, variant: str = "slth"):
        super().__init__()
        self.density = float(density)
        self.reference = variant == "reference"  # run as the method's reference code (SupermaskConfig.variant)
        count = reference_kept_count if self.reference else kept_count
        self.k = count(math.prod(shape), density)
        self.scores = nn.Parameter(scores.reshape(shape).clone())
        self.kernels = KernelState()  # speed only: last threshold, reusable buffers, cached views
        self.tracker = self.kernels.tracker
        # a sparse source (set_source): where the weights are absent / locked; None for the dense source. Not
        # in state_dict: the pattern is re-drawn from the seed (slth.supermask.source)
        self.register_buffer("absent", None, persistent=False)
        self.register_buffer("locked", None, persistent=False)
        self.present = math.prod(shape)  # weights present in the source

    def set_source(self, pattern: torch.Tensor) -> None:
        """Search the mask inside a sparse source: ``pattern`` (int8 of the weight's shape) marks each weight
        absent, free or locked (:func:`slth.supermask.init.draw_source`). The final and training masks then
        keep every locked weight, no absent one, and the top-k of the free ones; ``k`` must lie between the
        locked and the present counts."""
        if tuple(pattern.shape) != tuple(self.scores.shape):
            raise ValueError(f"source pattern of shape {tuple(pattern.shape)} for a weight of shape "
                             f"{tuple(self.scores.shape)}")
        absent, locked = pattern == ABSENT, pattern == LOCKED
        present, n_locked = pattern.numel() - int(absent.sum()), int(locked.sum())
        if not n_locked <= self.k <= present:
            raise ValueError(f"a mask of {self.k} weights does not fit a source of {present} present weights, "
                             f"{n_locked} of them locked")
        self.absent = absent.to(self.scores.device)
        self.locked = locked.to(self.scores.device) if n_locked else None
        self.present = present

    def _in_source(self, values: torch.Tensor) -> torch.Tensor:
        """Ranking ``values`` (larger kept) restricted to the source: -inf where absent, +inf where locked (the
        fills pass no gradient); ``values`` themselves for the dense source."""
        if self.absent is None:
            return values
        values = values.masked_fill(self.absent, -math.inf)
        return values if self.locked is None else values.masked_fill(self.locked, math.inf)

    def _source_training_weight(self, weight: torch.Tensor, fused=MaskedWeight) -> torch.Tensor:
        """``effective_weight(weight, training_mask())`` in a sparse source. Without locked weights, fused
        (``fused``: :class:`MaskedWeight`, or biprop's :class:`BinarizedWeight`): the kernel ranks |s| with
        the absent weights' entries at 0 (their weights are 0, so their straight-through gradient
        g * W * sign(s) is 0 too); exact unless the k-th largest is 0 itself (a present score at exactly 0
        tied with the absent ones), where the torch path decides."""
        if self.locked is None and _numba_ok(weight, self.scores) and self.k < weight.numel():
            s = self.kernels.view("scores", self.scores)
            present = self._present_factor(s.dtype)
            ranking = self.kernels.pool.take("ranking", s.shape, s.dtype)
            np.multiply(s, present, out=ranking)
            out = fused.apply(weight, self.scores, self.k, self.kernels, ranking)
            threshold = self.tracker._last
            if threshold is not None and threshold > 0:
                return out
        return self.effective_weight(weight, self.training_mask())

    def _present_factor(self, dtype) -> np.ndarray:
        """1 where the source has the weight, 0 where absent (flat numpy, the scores' dtype), cached."""
        cached = getattr(self, "_present", None)
        if cached is None or cached.dtype != dtype:
            cached = self._present = (~self.absent).reshape(-1).cpu().numpy().astype(dtype)
        return cached

    def final_mask(self) -> torch.Tensor:
        """The deterministic boolean mask with exactly ``k`` kept weights (ties: the first in index order;
        the reference variant keeps the last, as hidden-networks' ascending sort does)."""
        return topk_mask(self._in_source(self.scores.detach().abs()), self.k, tracker=self.tracker,
                         last_ties=self.reference)

    def _reference_training_weight(self, weight: torch.Tensor, absolute: bool = True) -> torch.Tensor:
        """The reference variant's training weight: the eval-mode weight under the same mask (torch ops),
        with the straight-through score gradient dL/dW_eff * W (* sign(s)) of the reference code."""
        with torch.no_grad():
            effective = self.effective_weight(weight, self.final_mask().to(device=weight.device, dtype=weight.dtype))
        return StraightThroughWeight.apply(weight, self.scores, effective, absolute)

    def training_mask(self) -> torch.Tensor:
        return GetSubnet.apply(self._in_source(self.scores.abs()), self.k, self.tracker)

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

    @classmethod
    def after_epoch_all(cls, layers: list[Supermask], epoch: int, epochs: int) -> None:
        """The trainer's per-epoch hook for all of a model's layers of this class (:func:`slth.supermask.
        after_epoch`): each layer's :meth:`after_epoch`, unless a method acts across layers (Gem-Miner's
        reference variant prunes globally)."""
        for p in layers:
            p.after_epoch(epoch, epochs)


class EdgePopup(Supermask):
    def training_weight(self, weight: torch.Tensor) -> torch.Tensor:
        if self.reference:
            return self._reference_training_weight(weight)
        if self.absent is not None:  # a sparse source: the top-k of the free weights
            return self._source_training_weight(weight)
        # == weight * GetSubnet.apply(scores.abs(), k), fused (tests/test_supermask.py checks they agree)
        return MaskedWeight.apply(weight, self.scores, self.k, self.kernels)


def biprop_divisor(variant: str, numel: int, density: float, kept: int) -> int:
    """The count biprop divides ||m * W||_1 by: ``kept`` = ||m||_0, or in the reference variant
    ``int(density * numel)`` (chrundle/biprop's ``num_unpruned = int(k * scores.numel())``)."""
    return int(density * numel) if variant == "reference" else kept


class BiProp(Supermask):
    def __init__(self, shape, density, scores, variant: str = "slth"):
        super().__init__(shape, density, scores, variant)
        self.divisor = biprop_divisor(variant, math.prod(shape), density, self.k)

    def effective_weight(self, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return binarized_weight(weight, mask, self.divisor)

    def training_weight(self, weight: torch.Tensor) -> torch.Tensor:
        if self.reference:  # straight-through: the score gradient does not pass through alpha
            return self._reference_training_weight(weight)
        if self.absent is not None:  # a sparse source
            return self._source_training_weight(weight, BinarizedWeight)
        if _numba_ok(weight, self.scores) and self.k < weight.numel():
            # == binarized_weight(weight, GetSubnet.apply(scores.abs(), k), k), fused (tested against it)
            return BinarizedWeight.apply(weight, self.scores, self.k, self.kernels)
        return super().training_weight(weight)


class _Sampling(Supermask):
    """A method with its own random stream; its state travels in ``state_dict`` (resume is exact)."""

    def __init__(self, shape, density, scores, sample_seed: int, variant: str = "slth"):
        super().__init__(shape, density, scores, variant)
        self.generator = torch.Generator().manual_seed(sample_seed)

    def get_extra_state(self):
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state) -> None:
        self.generator.set_state(state["generator"])


class Bernoulli(Supermask):
    """m ~ Bernoulli(sigmoid((s + b) / T)) with straight-through gradients (Zhou et al. 2019).

    Two additions make the deterministic final mask (top-k of s) the mask that was trained: a per-layer
    shift b keeps the *expected* kept fraction at the layer's density, and the temperature T anneals
    from 1 to 1/E over E epochs so the samples harden toward that top-k. Without them (MNIST FC,
    3 epochs) 77 % of first-layer probabilities stayed in (0.1, 0.9) and the final mask scored 65 %
    against 96 % for sampled masks.

    **The shift.** Each draw samples at the current b and sums p over the layer in the same pass; b then
    takes one Newton step toward sum(p) = k for the next draw. When the expected count at the b a draw
    used is off by more than a quarter of the sampled count's standard deviation sqrt(sum p (1 - p))
    (and more than half a weight), b is solved to within half a weight and the mask drawn again -- at
    the first draw and after the temperature changes, rarely otherwise: the scores move little per step.

    **The draws.** Mask number d of a layer is drawn from the Philox4x32-10 stream keyed by the layer's
    sample seed, at draw counter d (:mod:`slth.supermask._philox` defines the mask exactly): weight i is
    kept if a uniform on a 2^-32 grid -- its random byte, refined by a second draw in the one case in 256
    where the byte ties with floor(256 p_i) -- lies below p_i. A draw needs no generator state, so on CPU
    the forward step is one vectorised kernel call (:func:`slth.supermask._kernels.bernoulli_masked_weight`);
    the draw count travels in ``state_dict`` (resume is exact).
    """

    def __init__(self, shape, density, scores, sample_seed: int, variant: str = "slth"):
        super().__init__(shape, density, scores, variant)
        # buffers, so they travel in state_dict and a resumed run continues identically
        self.register_buffer("shift", torch.zeros(()))
        self.register_buffer("temperature", torch.ones(()))
        self.stream = PhiloxStream(sample_seed)
        self._plan: tuple | None = None  # speed only: see _make_plan

    def get_extra_state(self):
        return {"draws": self.stream.draws}

    def set_extra_state(self, state) -> None:
        if not isinstance(state, dict) or "draws" not in state:
            raise ValueError("this checkpoint's Bernoulli supermask state was written by an older slth, which "
                             "drew masks with a torch.Generator; masks are now drawn from a Philox stream, so "
                             "the run cannot resume exactly -- start it again")
        self.stream.draws = int(state["draws"])

    def final_mask(self) -> torch.Tensor:
        if self.reference:  # the most probable mask, p > 1/2 (the reference samples in eval mode too)
            return self.scores.detach() > 0
        return topk_mask(self._in_source(self.scores.detach()), self.k)  # the k most probable weights

    def probabilities(self, shift: float | None = None) -> torch.Tensor:
        """sigmoid((s + b) / T), b the current shift unless given (computed as (s + b) * (1/T), as the
        kernels do)."""
        b = float(self.shift) if shift is None else shift
        # a sparse source: p = 0 where absent, 1 where locked (scores -inf / +inf there, no gradient)
        return torch.sigmoid((self._in_source(self.scores) + b) * (1.0 / float(self.temperature)))

    def training_weight(self, weight: torch.Tensor) -> torch.Tensor:
        if _numba_ok(weight, self.scores) and _LITTLE_ENDIAN and self.absent is None:  # == weight * training_mask()
            return SampledMaskedWeight.apply(weight, self.scores, self._fused_draw, self.kernels)
        return super().training_weight(weight)

    def training_mask(self) -> torch.Tensor:
        """The next mask, straight-through in p: the reference of the fused CPU path, and the path for
        tensors its kernel does not take (a GPU, half precision)."""
        counter = self.stream.counter(self.stream.next_draw())
        u = torch.from_numpy(self.stream.bytes(self.scores.numel(), counter).astype(np.int32))
        probs = {}

        def sample(b: float) -> tuple[float, float]:
            probs["p"] = self.probabilities(b)
            return _sums(probs["p"])

        def evaluate(b: float) -> tuple[float, float]:
            with torch.no_grad():
                return _sums(self.probabilities(b))

        self.shift.fill_(self._control(sample, evaluate, float(self.shift), 1.0 / float(self.temperature))[1])
        p = probs["p"]
        real = torch.float64 if p.dtype == torch.float64 else torch.float32  # the kernel's arithmetic; fp16 -> fp32
        a = (p.detach().reshape(-1).to(real) * 256.0).cpu()  # exact: a power of two
        floor = a.floor()
        u = u.to(real)
        keep = u < floor
        ties = torch.nonzero(u == floor).squeeze(1)
        if len(ties):
            r = np.empty(len(ties), dtype=np.uint32)
            tie_words(*counter, ties.numpy().astype(np.int64), r)
            r24 = torch.from_numpy((r >> 8).astype(np.int32)).to(real)
            keep[ties] = r24 < (a[ties] - floor[ties]) * 16777216.0
        return StraightThroughBernoulli.apply(p, keep.view(p.shape).to(p.device))

    def _fused_draw(self, w: np.ndarray, s: np.ndarray, out_factor: np.ndarray) -> tuple:
        """:meth:`_control` with the fused kernel; returns the shift and 1/T of the draw that stands."""
        plan = self._plan
        buffers = self._buffers
        if plan is None or plan[0] is not s or plan[1] is not buffers["shift"] or plan[2] is not buffers["temperature"]:
            plan = self._plan = self._make_plan(s)
        _, _, _, shift, temperature, center, words, index, kernel, sums = plan
        inv_t = 1.0 / float(temperature[0])
        seed, draw, n = self.stream.seed, self.stream.next_draw(), s.shape[0]

        def sample(b: float) -> tuple[float, float]:
            total, var = kernel(w, s, b, inv_t, center, seed, draw, words, index, out_factor)
            return total + n * center, var

        # the shift through a numpy view: float() and fill_ cost microseconds each, every step (nothing
        # differentiates through the shift, so bypassing its version counter is harmless)
        b, shift[0] = self._control(sample, lambda b: sums(s, b, inv_t), float(shift[0]), inv_t)
        return b, inv_t

    def _make_plan(self, s: np.ndarray) -> tuple:
        """What :meth:`_fused_draw` needs besides the step's values, for the scores' numpy view ``s``:
        looked up once, not on every training step."""
        kernels = _kernels()
        n = s.shape[0]
        shift, temperature = self._buffers["shift"], self._buffers["temperature"]
        center = float(s.dtype.type(self.k / n))  # the kernel sums p - center in the scores' dtype
        return (s, shift, temperature, _flat(shift), _flat(temperature), center,
                np.empty((n + 7) // 8 * 2, dtype=np.uint32), np.empty(n, dtype=np.int64),
                kernels.bernoulli_masked_weight, kernels.probability_sums)

    def _control(self, sample: Callable, evaluate: Callable, b: float, inv_t: float) -> tuple[float, float]:
        """Draw at shift ``b`` (``sample(b)`` draws and returns (sum p, sum p (1 - p))); if the expected
        count is too far off, solve for the shift and draw again. Returns (the shift of the draw that
        stands, the shift for the next draw: one Newton step toward sum(p) = k). The reference variant
        draws at shift 0 and keeps it there (p = sigmoid(s), as Zhou et al.'s code)."""
        if self.reference:
            sample(0.0)
            return 0.0, 0.0
        total, var = sample(b)
        excess = total - self.k
        if not (abs(excess) <= 0.5 or abs(excess) <= 0.25 * math.sqrt(var)):  # (NaN fails both)
            if not math.isfinite(total):
                raise ValueError("Bernoulli supermask scores contain NaN")
            b = self._solve(evaluate, b, inv_t)
            total, var = sample(b)
            excess = total - self.k
        slope = var * inv_t
        if not slope > 0:
            return b, b
        # one Newton step, at most NEWTON_REACH in sigmoid units: where (nearly) every p is saturated the
        # linearisation means nothing, and the unbounded step overflowed the float32 shift to inf (then NaN);
        # in ordinary training the step is a small fraction of a unit, so the cap never acts there
        step = max(-NEWTON_REACH, min(NEWTON_REACH, excess / var)) / inv_t
        return b, b - step

    def _solve(self, evaluate: Callable, b: float, inv_t: float, tolerance: float = 0.5, max_iter: int = 60) -> float:
        """Safeguarded Newton on b: sum(sigmoid((s + b) / T)) = k to within ``tolerance`` weights."""
        lo, hi = -math.inf, math.inf  # bracket: expected count < k at lo, > k at hi
        for _ in range(max_iter):
            total, var = evaluate(b)
            excess = total - self.k
            if not math.isfinite(excess):
                raise ValueError("Bernoulli supermask scores contain NaN")
            if abs(excess) < tolerance:
                break
            if excess > 0:
                hi = b
            else:
                lo = b
            slope = var * inv_t
            step = b - excess / slope if slope > 0 else math.nan
            if lo < step < hi:
                b = step
            elif math.isfinite(lo) and math.isfinite(hi):
                b = 0.5 * (lo + hi)
            else:  # no bracket on one side yet: move outward geometrically
                b = b + (1.0 + abs(b)) * (1.0 if excess < 0 else -1.0)
        return b

    @torch.no_grad()
    def after_epoch(self, epoch: int, epochs: int) -> None:
        if not self.reference:  # the reference code has no temperature
            self.temperature.fill_(max(1.0 - epoch / epochs, 1.0 / epochs))


def _sums(probs: torch.Tensor) -> tuple[float, float]:
    p = probs.detach()
    if p.device.type == "mps":  # Apple GPUs have no float64: these two sums are taken on the CPU there
        p = p.cpu()
    p = p.double()
    return float(p.sum()), float((p * (1.0 - p)).sum())


class IteRand(_Sampling):
    """edge-popup plus periodic re-randomisation of pruned weights (Chijiwa et al. 2021).

    ``generation`` records, per weight, which draw of the init it currently holds (0 = the original), so a
    ticket can rebuild the frozen weights from the seed alone.
    """

    def __init__(self, shape, density, scores, sample_seed: int, redraw: Callable[[int], torch.Tensor],
                 period: int, prob: float, variant: str = "slth"):
        super().__init__(shape, density, scores, sample_seed, variant)
        self.redraw, self.period, self.prob = redraw, period, prob
        self.register_buffer("generation", torch.zeros(shape, dtype=torch.int16))

    def final_mask(self) -> torch.Tensor:
        if self.reference:  # dchiji-ntt/iterand's GetSubnet: signed scores at or above the sparsity percentile
            scores = self.scores.detach()
            return scores >= percentile_threshold(scores, 1.0 - self.density)
        return super().final_mask()

    def training_weight(self, weight: torch.Tensor) -> torch.Tensor:
        if self.reference:
            return self._reference_training_weight(weight, absolute=False)
        return EdgePopup.training_weight(self, weight)

    def after_step(self, step: int, weight: torch.Tensor) -> None:
        # the reference re-draws before iteration it when (it + 1) % period == 0, it counting from 0: after
        # steps period - 1, 2 period - 1, ...
        done = step + 1 if self.reference else step
        if done % self.period:  # (before entering no_grad: that context costs more than this whole test)
            return
        with torch.no_grad():
            self._rerandomize(done // self.period, weight)

    def _rerandomize(self, round_: int, weight: torch.Tensor) -> None:
        if round_ > torch.iinfo(torch.int16).max:
            raise OverflowError("IteRand: more re-randomisation rounds than an int16 generation can record")
        # the draws are made on the CPU (the layer's generator and the seeded re-draw), then moved to the
        # weight's device: a GPU run re-draws exactly the weights a CPU run does, bit for bit
        device = weight.device
        pruned = ~self.final_mask().to(device)
        if self.absent is not None:  # a sparse source's absent weights stay absent (zero)
            pruned &= ~self.absent.to(device)
        chosen = pruned & (torch.rand(weight.shape, generator=self.generator) < self.prob).to(device)
        # selections, not boolean indexing (a nonzero and a scatter each): the same values, several times faster
        weight.copy_(torch.where(chosen, self.redraw(round_).to(device=device, dtype=weight.dtype), weight))
        self.generation.masked_fill_(chosen.to(self.generation.device), round_)


GEM_MINER_PERIOD = 5  # the reference variant prunes every 5 epochs (pruning_is_enough's --iter-period default)


class GemMiner(Supermask):
    """Relaxed scores in [0, 1] rounded at 0.5, an L2 pull toward pruning, and a shrinking removable set."""

    def __init__(self, shape, density, scores, score_l2: float, variant: str = "slth"):
        super().__init__(shape, density, scores, variant)
        self.score_l2 = score_l2
        self.register_buffer("alive", torch.ones(shape, dtype=torch.bool))

    def set_source(self, pattern: torch.Tensor) -> None:
        super().set_source(pattern)
        self.alive &= ~self.absent  # the removable set starts as the source

    def _ranked_scores(self) -> torch.Tensor:
        return self._in_source(self.scores.detach().masked_fill(~self.alive, -math.inf))

    def final_mask(self) -> torch.Tensor:
        if self.reference:  # pruning_is_enough's naive rounding: the rounded mask on the remaining set
            return (self.scores.detach() > 0.5) & self.alive
        return topk_mask(self._ranked_scores(), self.k)

    def training_mask(self) -> torch.Tensor:
        mask = StraightThroughRound.apply(self.scores) * self.alive
        return mask if self.locked is None else mask.masked_fill(self.locked, 1.0)  # locked: always on

    def training_weight(self, weight: torch.Tensor) -> torch.Tensor:
        if _numba_ok(weight, self.scores) and self.locked is None:  # == weight * training_mask(), fused (tested)
            return RoundedMaskedWeight.apply(weight, self.scores, self.alive, self.kernels)
        return super().training_weight(weight)

    def regularization(self) -> torch.Tensor | float:
        # The pull toward pruning stops once the rounded mask is down to the target: Gem-Miner reaches its
        # sparsity through lambda, but a fixed lambda overshoots (MNIST FC, lr 3: 1.2 % of the first layer
        # left on at a 50 % target) and the final top-k then switches on weights that were never trained on.
        if self.reference:  # pruning_is_enough: lmbda * ||scores||_2^2 over all scores, always on
            return self.score_l2 * torch.norm(self.scores, p=2) ** 2
        counted = self.kernels.last_count  # this step's forward pass counted them
        if counted is not None and counted[0] == _identity(self.scores, self.alive):
            on = counted[1]
        else:
            on_mask = (self.scores.detach() > 0.5) & self.alive
            on = int(torch.count_nonzero(on_mask if self.locked is None else on_mask | self.locked))
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

    @classmethod
    @torch.no_grad()
    def after_epoch_all(cls, layers: list[GemMiner], epoch: int, epochs: int) -> None:
        """The reference variant prunes across all layers (pruning_is_enough ``prune``, ``hc_iter`` with
        ``prune_type: BottomK``): after 0-based epoch e with e % PERIOD == 0 and e > 0 it removes the
        ceil(rate * active) lowest |scores| of all still-active weights (ties at the threshold too), rate =
        1 - target ** (1 / floor((epochs - 1) / PERIOD)), target the kept fraction over all layers. With
        fewer than PERIOD + 1 epochs it never prunes."""
        reference = [p for p in layers if p.reference]
        super().after_epoch_all([p for p in layers if not p.reference], epoch, epochs)
        e = epoch - 1
        rounds = math.floor((epochs - 1) / GEM_MINER_PERIOD)
        if not reference or e % GEM_MINER_PERIOD or e == 0 or rounds == 0:
            return
        total = sum(p.alive.numel() for p in reference)
        target = sum(p.density * p.alive.numel() for p in reference) / total
        rate = 1.0 - math.exp(math.log(target) / rounds)
        active = torch.cat([p.scores.detach()[p.alive].abs().reshape(-1).cpu() for p in reference])
        count = int(np.ceil(rate * active.numel()))
        if count <= 0:
            return
        threshold = torch.sort(active).values[count - 1].item()
        for p in reference:
            p.alive &= p.scores.detach().abs() > threshold

    @torch.no_grad()
    def after_epoch(self, epoch: int, epochs: int) -> None:
        if self.reference:  # the model-level hook above prunes
            return
        # geometric schedule: after epoch e the removable set keeps start * (density / start) ** (e / P) of the
        # layer, P above, start the source's present fraction (1 for the dense source: density ** (e / P))
        n = self.alive.numel()
        start = self.present / n
        fraction = start * (self.density / start) ** min(1.0, epoch / self.pruning_epochs(epochs))
        keep = max(self.k, kept_count(n, fraction))
        self.alive.copy_(topk_mask(self._ranked_scores(), keep))


def masked_weight(weight: torch.Tensor, mask: torch.Tensor, kept: int) -> torch.Tensor:
    """The effective weight W * m under a (float) mask; ``kept`` = m.sum(), unused."""
    return weight * mask


def uniform_scores(u: torch.Tensor, fan_in: int, density: float, *, divide: bool = False) -> torch.Tensor:
    """Scores ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) from ``u`` ~ U[0, 1): kaiming_uniform_(a=sqrt(5)), as
    hidden-networks (Ramanujan et al.). ``divide`` computes (2u - 1) / sqrt(fan_in) rather than
    (2u - 1) * (1 / sqrt(fan_in)): the two differ in the last bit, and the planted and pensia-exp2 records
    (:mod:`slth.experiments.masking`) were computed dividing."""
    centred = 2.0 * u - 1.0
    return centred / math.sqrt(fan_in) if divide else centred * (1.0 / math.sqrt(fan_in))


def logit_shifted_scores(u: torch.Tensor, fan_in: int, density: float, *, divide: bool = False) -> torch.Tensor:
    """:func:`uniform_scores` + logit(density), so that sigmoid(s) ~ density and the sampled masks start at
    the target density (Bernoulli)."""
    d = min(max(density, 1e-3), 1 - 1e-3)
    return uniform_scores(u, fan_in, density, divide=divide) + math.log(d / (1.0 - d))


def unit_scores(u: torch.Tensor, fan_in: int, density: float, *, divide: bool = False) -> torch.Tensor:
    """Scores ~ U[0, 1] (Gem-Miner's relaxed mask)."""
    return u


def kaiming_uniform_scores(u: torch.Tensor, fan_in: int, density: float, *, divide: bool = False) -> torch.Tensor:
    """Scores ~ U(-sqrt(6 / fan_in), sqrt(6 / fan_in)): ``kaiming_uniform_(mode="fan_in",
    nonlinearity="relu")``, IteRand's score init (dchiji-ntt/iterand ``init_mode_mask: kaiming_uniform``)."""
    centred = 2.0 * u - 1.0
    return centred / math.sqrt(fan_in / 6.0) if divide else centred * math.sqrt(6.0 / fan_in)


@dataclass(frozen=True)
class ReferenceDefaults:
    """A method's ``variant="reference"`` defaults, from its reference repository's config ``source``;
    ``scores`` the reference's score init where it differs from slth's (None: the same)."""

    lr: float
    weight_decay: float
    init: str
    source: str
    scores: Callable[..., torch.Tensor] | None = None


@dataclass(frozen=True)
class Method:
    """Everything slth knows about one supermask method; :data:`METHODS` holds one per method.

    ``make(shape, density, scores, *, config, sample_seed, redraw)`` returns the parametrization of one
    tensor (``config`` the :class:`SupermaskConfig`, ``sample_seed`` the tensor's own seed for sampled
    masks, ``redraw(generation)`` the tensor's re-drawn weights where ``redraws``). ``scores(u, fan_in,
    density, divide=False)`` gives the initial scores from ``u`` ~ U[0, 1) of the tensor's shape.
    ``final_weight(weight, float mask, kept)`` is the weight a ticket rebuilds: the parametrization's
    eval-mode output, with the same arithmetic, so a rebuilt ticket is bit-identical.
    ``lr``, ``weight_decay`` and ``init`` are ``slth train``'s defaults (:mod:`slth.train.config`).
    """

    name: str
    make: Callable[..., Supermask]
    scores: Callable[..., torch.Tensor]
    lr: float
    weight_decay: float
    init: str = "signed-constant"  # Ramanujan et al.'s best init for every method here
    redraws: bool = False  # the parametrization re-draws pruned weights (needs ``redraw``)
    final_weight: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor] = masked_weight
    paper: str = ""
    doc: str = ""
    reference: ReferenceDefaults | None = None  # variant="reference": defaults and score init
    # the count final_weight is given: (variant, numel, density, kept) -> int; None: kept
    final_count: Callable[[str, int, float, int], int] | None = None

    def default_lr(self, variant: str = "slth") -> float:
        return self.reference.lr if variant == "reference" else self.lr

    def default_weight_decay(self, variant: str = "slth") -> float:
        return self.reference.weight_decay if variant == "reference" else self.weight_decay

    def default_init(self, variant: str = "slth") -> str:
        return self.reference.init if variant == "reference" else self.init

    def score_init(self, variant: str = "slth") -> Callable[..., torch.Tensor]:
        if variant == "reference" and self.reference.scores is not None:
            return self.reference.scores
        return self.scores


# Learning rates: score learning in the papers uses 0.1 for ~100 epochs; for the short CPU budgets here
# 1.0 is better (MNIST FC, density 0.5, 3 epochs: 95.59 % at 0.1, 97.44 % at 0.5, 97.38 % at 1.0, 97.17 %
# at 2.0). Bernoulli's sigmoid gradients are small (Zhou et al. also used very large rates) and
# Gem-Miner's scores live in [0, 1]: their rates are the best of {1, 10, 50, 100, 200, 500} and
# {0.01, 0.1, 1, 3} on digits (FC 64-300-100-10, density 0.5, 10 epochs).
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("edge-popup", lambda shape, density, scores, *, config, **_: EdgePopup(shape, density, scores,
                                                                                   config.variant),
           uniform_scores, lr=1.0, weight_decay=1e-4,
           paper="Ramanujan et al. 2020, What's Hidden in a Randomly Weighted Neural Network?, arXiv 1911.13299",
           doc="top-k of |scores|, straight-through gradients",
           reference=ReferenceDefaults(0.1, 1e-4, "signed-constant",
                                       "allenai/hidden-networks configs/smallscale/fc/fc_usc_unsigned.yml")),
    Method("bernoulli", lambda shape, density, scores, *, config, sample_seed, **_: Bernoulli(
               shape, density, scores, sample_seed, config.variant),
           logit_shifted_scores, lr=500.0, weight_decay=0.0,
           paper="Zhou et al. 2019, Deconstructing Lottery Tickets: Zeros, Signs, and the Supermask, arXiv 1905.01067",
           doc="masks sampled from sigmoid(scores), expected density held at the target, annealed temperature",
           reference=ReferenceDefaults(100.0, 0.0, "signed-constant",
                                       "uber-research/deconstructing-lottery-tickets README (train_supermask.py "
                                       "--opt sgd --lr 100, momentum 0.9)", scores=uniform_scores)),
    Method("biprop", lambda shape, density, scores, *, config, **_: BiProp(shape, density, scores, config.variant),
           uniform_scores, lr=1.0, weight_decay=1e-4, final_weight=binarized_weight,
           paper="Diffenderfer & Kailkhura 2021, Multi-Prize Lottery Ticket Hypothesis, arXiv 2103.09377",
           doc="edge-popup's mask over binarised weights alpha * sign(W), alpha = mean |W| over the kept",
           reference=ReferenceDefaults(0.1, 1e-4, "scaled-kaiming-normal",
                                       "chrundle/biprop configs/smallscale/conv4/conv4_kn_unsigned.yml"),
           final_count=biprop_divisor),
    Method("iterand", lambda shape, density, scores, *, config, sample_seed, redraw, **_: IteRand(
               shape, density, scores, sample_seed, redraw=redraw, period=config.rerand_period,
               prob=config.rerand_prob, variant=config.variant),
           uniform_scores, lr=1.0, weight_decay=1e-4, redraws=True,
           paper="Chijiwa et al. 2021, Pruning Randomly Initialized Neural Networks with Iterative "
                 "Randomization, arXiv 2106.09269",
           doc="edge-popup that periodically re-draws pruned weights from the init",
           reference=ReferenceDefaults(0.1, 1e-4, "signed-constant",
                                       "dchiji-ntt/iterand config.yaml (cifar10_sgd, cifar10_resnet18_sc_iterand; "
                                       "weight decay 1e-4 for convs)", scores=kaiming_uniform_scores)),
    Method("gem-miner", lambda shape, density, scores, *, config, **_: GemMiner(shape, density, scores,
                                                                               score_l2=config.score_l2,
                                                                               variant=config.variant),
           unit_scores, lr=3.0, weight_decay=0.0,  # its own regulariser instead (score_l2)
           paper="Sreenivasan et al. 2022, Rare Gems: Finding Lottery Tickets at Initialization, arXiv 2202.12002",
           doc="scores in [0, 1] rounded at 0.5, an L2 pull toward pruning, a shrinking removable set",
           reference=ReferenceDefaults(0.1, 0.0, "signed-constant",
                                       "ksreenivasan/pruning_is_enough configs/ablation_ep_gm_resnet20_059/gm.yml")),
)}
check_registry("supermask method", METHODS, METHOD_NAMES)  # slth train --help lists them without torch
