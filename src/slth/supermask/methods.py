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
signed      M = sign(s) * 1[top-k of |s|] in {-1, 0, +1}; W * M, plain            top-k of |s|, signed
            straight-through dL/ds = dL/dM (Koster et al. 2022)
multicoated K nested top-k coats of |s| (densities: density, density * coats);    the same coats
            W * level, level = coats keeping the weight; dL/ds = K sign(s) dL/dM
            (Okoshi et al. 2022)
l0-gauss    W * z, z = clamp(mu + eps, 0, 1), eps ~ N(0, sigma^2), reparametrised   top-k of mu
            gradients; + lambda * sum Phi(mu / sigma) while more than k gates
            mu > 0 are open, - the same while fewer, with an adaptive gain;
            mu clamped to [-sigma, 1 + sigma] (Tsayag & Lindenbaum 2026)
l0-hc       W * z, z hard concrete of log alpha (Louizos et al. 2018); the same     top-k of log alpha
            two-sided L0 switch with P(z > 0) = sigmoid(log alpha - beta
            log(-gamma / zeta)); log alpha clamped to [-4, 4]
==========  ===================================================================  ====================

**Multi-level masks.** signed and multicoated masks hold a level per weight (-1 / +1; 1..K), not just kept /
pruned: :meth:`Supermask.final_levels` gives them (int8), :meth:`Supermask.final_mask` is the nonzero set, and
a ticket stores the kept set as every method does plus the level of each kept weight (extras
``level/<name>``, :mod:`slth.supermask.ticket`). ``density`` is the kept fraction (the outermost coat's).
The signed method's reference variant keeps |s| > tau, tau = ``sign_threshold`` * max |s| at init, fixed: its
kept fraction comes out of training and ``density`` is not imposed there (it still sets the scaled inits'
fan), as Bernoulli's reference variant.

**Variants.** ``SupermaskConfig(variant="reference")`` runs each method as its reference code does
(docs/reference-code.md): edge-popup and biprop keep ``n - int((1 - density) n)`` weights (hidden-networks'
``GetSubnet``), ties going to the last indices; biprop's score gradient is straight-through (not through
alpha) and alpha divides by ``int(density n)``; IteRand ranks the signed scores against their
``100 (1 - density)`` percentile, its scores start at kaiming_uniform's bound and it re-draws after steps
``period - 1, 2 period - 1, ...``; Gem-Miner prunes the lowest active scores of all layers together every
``GEM_MINER_PERIOD`` epochs (:meth:`GemMiner.after_epoch_all`), its regulariser covers every score and never
switches off, and its final mask is the rounded scores; Bernoulli samples sigmoid(s) with no shift and no
temperature, its final mask the most probable one (s > 0); the signed supermask keeps |s| above a threshold
fixed at init, from Xavier-uniform scores (kosnil/signed_supermasks); the multicoated supermask thresholds
each coat at the reference's percentile ``sorted(|s|)[1 + floor(q (n - 1))]``, ties all kept, from
Kaiming-normal (fan_out) scores (yasu0001/multicoated-supermasks); the relaxed gates (l0-gauss, l0-hc) keep
their L0 penalty on throughout at gain 1, leave their scores unbounded, and their final mask is the open
test-time gates (any count). The default ``"slth"`` is the table above, on the fused kernels; the reference
variant uses torch ops around them.

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
from .._hparams import METHOD_FIELDS, MethodSettings
from .._hparams import is_real as _is_real
from .._names import METHOD_NAMES, check_registry
from ._philox import PhiloxStream, tie_words
from .core import (
    AliveSquareSum,
    BinarizedWeight,
    CoatedMaskedWeight,
    GetSubnet,
    KernelState,
    MaskedWeight,
    RoundedMaskedWeight,
    SampledMaskedWeight,
    SignedMaskedWeight,
    StraightThroughBernoulli,
    StraightThroughRound,
    StraightThroughWeight,
    ThresholdTracker,
    _flat,
    _identity,
    _kernels,
    _numba_ok,
    binarized_weight,
    kept_count,
    kernel_threads,
    percentile_threshold,
    reference_kept_count,
    run_kernel,
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
    sign_threshold: float = _METHOD.sign_threshold  # signed, variant "reference": tau / max|m_init| per layer
    coats: tuple[float, ...] = _METHOD.coats  # multicoated: inner coats' kept fractions relative to density
    gate_l0: float = _METHOD.gate_l0  # l0-gauss / l0-hc: lambda of the L0 penalty lambda * sum P(z > 0)
    gate_sigma: float = _METHOD.gate_sigma  # l0-gauss: standard deviation of the gates' noise
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
        if isinstance(self.coats, list):  # a ticket's or checkpoint's JSON holds the tuple as a list
            object.__setattr__(self, "coats", tuple(self.coats))
        if not _is_real(self.density) or not 0.0 < self.density <= 1.0:
            raise ValueError(f"density (kept fraction) must lie in (0, 1], got {self.density!r}")
        check_init(self.init)
        check_variant_init(self.init, METHODS[self.method].init_variant(self.variant), {"": self.density})
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown density distribution {self.distribution!r}; "
                             f"valid names: {', '.join(DISTRIBUTIONS)}")
        self.method_settings()  # checks every method setting (MethodSettings.__post_init__) and the source
        check_method_settings(self.method, self.method_settings())
        if self.source != "dense" and not METHODS[self.method].sparse_sources:
            supported = ", ".join(name for name, m in METHODS.items() if m.sparse_sources)
            raise ValueError(f"{self.method} does not search inside a sparse source (its masks rank every weight); "
                             f"source {self.source!r} works with {supported}")
        if self.density > self.source_density:
            raise ValueError(f"density {self.density} exceeds source_density {self.source_density}: the mask keeps "
                             "weights of the source only (density is the kept fraction of the full layers)")
        if self.density < self.source_locked:
            raise ValueError(f"density {self.density} is below source_locked {self.source_locked}: the locked "
                             "weights are always kept")

    def method_settings(self) -> MethodSettings:
        """The methods' own settings of this config (checked)."""
        return MethodSettings(**{name: getattr(self, name) for name in METHOD_FIELDS})

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
            extra = (present,) if fused is BinarizedWeight else ()  # (biprop: constant where present?)
            out = fused.apply(weight, self.scores, self.k, self.kernels, ranking, *extra)
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

    def final_levels(self) -> torch.Tensor | None:
        """The final mask's level per weight (int8, 0 = pruned) for a method whose mask is more than kept /
        pruned (:class:`_Leveled`); None for a 0/1 mask. A ticket stores the levels of the kept weights."""
        return None

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


class LevelStraightThrough(torch.autograd.Function):
    """Forward: the precomputed mask levels ``levels`` (a float tensor, computed by the caller from ``scores``).
    Backward: ``scale * grad`` to the scores, times ``sign(scores)`` when the levels rank ``|scores|``
    (``absolute``): the signed supermask's plain straight-through estimator (scale 1, not absolute;
    Koster et al.), or the multicoated supermask's K coats each passing the gradient of ``|s|`` (scale K,
    absolute; Okoshi et al.'s ``GetSubnet`` with ``bw_scale`` 1 on ``score.abs()``)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, levels: torch.Tensor, scale: float, absolute: bool) -> torch.Tensor:
        ctx.save_for_backward(scores)
        ctx.scale, ctx.absolute = scale, absolute
        return levels

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (scores,) = ctx.saved_tensors
        g = grad if ctx.scale == 1 else grad * ctx.scale
        return (g * scores.sign() if ctx.absolute else g), None, None, None


class _Leveled(Supermask):
    """A supermask whose mask holds a small integer level per weight, not just kept / pruned: W_eff = W * level.

    The final mask (:meth:`final_mask`) is the set of weights with a nonzero level; :meth:`final_levels` the
    levels (int8). The eval-mode weight and the weight a ticket rebuilds (``Method.final_weight`` given the
    levels as its float mask) are both ``weight * level`` in the weight's dtype: bit-identical."""

    scale = 1.0  # the gradient's factor (LevelStraightThrough)
    absolute = False  # the levels rank |scores|: the gradient takes sign(s)

    def levels(self, dtype: torch.dtype) -> torch.Tensor:
        """The current levels as a tensor of ``dtype`` (from the detached scores)."""
        raise NotImplementedError

    def final_levels(self) -> torch.Tensor:
        return self.levels(torch.int8)

    def final_mask(self) -> torch.Tensor:
        return self.final_levels() != 0

    def training_weight(self, weight: torch.Tensor) -> torch.Tensor:
        levels = self.levels(weight.dtype).to(weight.device)
        return weight * LevelStraightThrough.apply(self.scores, levels, self.scale, self.absolute)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.training_weight(weight)
        return weight * self.levels(weight.dtype).to(weight.device)


def _signs_of(scores: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """+1 / -1 of ``dtype`` per score, a zero score counting as +1 (so a kept weight never has level 0)."""
    return 1 - 2 * (scores < 0).to(dtype)


class Signed(_Leveled):
    """Signed supermask (Koster, Grothe & Rettinger 2022): M = sign(m) * 1[m kept] in {-1, 0, +1}, W_eff = W * M,
    the score gradient straight through (dL/dm = dL/dM = dL/dW_eff * W).

    slth keeps the top-``k`` |m| (``k = kept_count(n, density)``, ties to the first in index order), so the
    density is exactly the one asked for. The reference variant keeps |m| > tau, tau = ``sign_threshold`` *
    max |m| at init, fixed (kosnil/signed_supermasks): its kept fraction comes out of training and
    ``density`` is not imposed (it still sets the scaled inits' fan).
    """

    def __init__(self, shape, density, scores, sign_threshold: float, variant: str = "slth"):
        super().__init__(shape, density, scores, variant)
        self.register_buffer("tau", self.scores.detach().abs().max() * sign_threshold)

    def levels(self, dtype: torch.dtype) -> torch.Tensor:
        s = self.scores.detach()
        if self.reference:
            kept = (s.abs() > self.tau).to(dtype)
        else:
            kept = topk_mask(s.abs(), self.k, dtype=dtype, tracker=self.tracker)
        return _signs_of(s, dtype) * kept

    def training_weight(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.reference and self.k < weight.numel() and _numba_ok(weight, self.scores):
            # == weight * LevelStraightThrough(scores, levels), fused (tested bit for bit)
            return SignedMaskedWeight.apply(weight, self.scores, self.k, self.kernels)
        return super().training_weight(weight)


def coat_densities(density: float, coats: tuple[float, ...]) -> tuple[float, ...]:
    """Each coat's kept fraction, outermost first: ``density`` and ``density * c`` for each inner coat c."""
    return (density, *(density * c for c in coats))


def reference_coat_count(numel: int, density: float) -> int:
    """The index (0-based, ascending |s|) of yasu0001/multicoated-supermasks' threshold at sparsity
    q = 1 - density: ``1 + floor(q (n - 1))``; every |s| at or above that sorted value is kept."""
    return 1 + math.floor((1.0 - density) * (numel - 1))


class Multicoated(_Leveled):
    """Multicoated supermask (Okoshi et al. 2022): K nested coats over one score tensor; coat j keeps the top
    ``k_j`` |s| (``k_j = kept_count(n, d_j)``, :func:`coat_densities`), and a weight's level is the number of
    coats that keep it: W_eff = W * level. With the scaled-signed-constant init at the layer's density (the
    reference variant's default) W = c sign(W0), c = gain / sqrt(fan_in * d_1): the paper's
    c * sign(W0) * sum_k 1[|s| >= t_k]; slth's default init is signed-constant (c = gain / sqrt(fan_in)),
    which trained where the paper's constant collapsed at low density (MULTICOATED_INIT_NOTE).
    Each coat passes the gradient straight through |s|: dL/ds = K sign(s) dL/dW_eff * W.

    The reference variant thresholds at yasu0001/multicoated-supermasks' percentiles (:func:`reference_coat_count`,
    ties all kept) and draws Kaiming-normal (fan_out) scores.
    """

    absolute = True

    def __init__(self, shape, density, scores, coats: tuple[float, ...], variant: str = "slth"):
        super().__init__(shape, density, scores, variant)
        n = math.prod(shape)
        self.coat_densities = coat_densities(density, tuple(coats))
        self.scale = float(len(self.coat_densities))
        if self.reference:
            self.counts = tuple(reference_coat_count(n, d) for d in self.coat_densities)
        else:
            self.counts = tuple(kept_count(n, d) for d in self.coat_densities)
        # one tracker per coat (the first coat's is the layer's own): each threshold moves steadily
        self.trackers = (self.tracker, *(ThresholdTracker() for _ in coats))

    def levels(self, dtype: torch.dtype) -> torch.Tensor:
        a = self.scores.detach().abs()
        if self.reference:
            ascending = a.reshape(-1).sort().values
            level = torch.zeros_like(a, dtype=dtype)
            for index in self.counts:
                level += (a >= ascending[index]).to(dtype)
            return level
        level = topk_mask(a, self.counts[0], dtype=dtype, tracker=self.trackers[0])
        for k, tracker in zip(self.counts[1:], self.trackers[1:]):
            level += topk_mask(a, k, dtype=dtype, tracker=tracker)
        return level

    def training_weight(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.reference and _numba_ok(weight, self.scores):
            # == weight * LevelStraightThrough(scores, levels, K, absolute), fused (tested bit for bit)
            return CoatedMaskedWeight.apply(weight, self.scores, self.counts, self.trackers, self.kernels)
        return super().training_weight(weight)


class _GateWeight(torch.autograd.Function):
    """A relaxed-gate layer's ``weight * z`` on CPU, and a second output for the L0 penalty that
    :meth:`_Gates.regularization` hands out (its value lambda times the open test-time gates; the gradient
    reaching it brings in the relaxed penalty's): one kernel pass forward (the noise, the gates, the output,
    what the gradient needs, the open count: :mod:`slth.supermask._gates`), one pass backward for both
    outputs' score gradients (no second gradient for autograd to add)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, scores: torch.Tensor, gates: _Gates, draw: int):
        state, step = gates.kernels, gates.step
        w, s = state.view("weight", weight), state.view("scores", scores)
        n = s.shape[0]
        serial, parallel, args, grad, aux_dtype, draw_into = gates._kernel_args(w.dtype)
        out = state.pool.take("gate", (n,), w.dtype)
        aux = state.pool.take("gate-aux", (n,), aux_dtype)  # what the backward pass needs besides the scores
        ctx.grad = state.pool.take("gate-grad", (n,), w.dtype)  # the backward's output
        words = step.words
        m = _gates().word_count(n)  # a byte of noise per weight
        if words is None or words.shape[0] != m:
            words = step.words = np.empty(m, dtype=np.uint32)
        draw_into(step.key[0], step.key[1], draw, words)
        count = step.count = int(run_kernel(serial, parallel, kernel_threads(n), w, s, words, *args, out, aux))
        ctx.kernels, ctx.args = grad, gates._grad_args(w, s, aux)
        ctx.scale, ctx.real = 1.0, w.dtype.type  # what _Gates.regularization multiplies the penalty by: sign, gain
        ctx.save_for_backward(weight, scores)  # (autograd's check that neither changed in place since)
        # numpy's reshape and a 0-d array: torch's view and torch.tensor cost microseconds more (same values)
        step.penalty = np.array(gates.lam * count, w.dtype)
        return torch.from_numpy(out.reshape(weight.shape)), torch.from_numpy(step.penalty)

    @staticmethod
    def backward(ctx, grad: torch.Tensor, grad_penalty: torch.Tensor):
        weight, _ = ctx.saved_tensors
        serial, parallel = ctx.kernels
        c = float(grad_penalty)
        if ctx.scale != 1.0 and c != 0.0:  # the gradient of penalty * scale, rounded as torch's mul rounds it
            real = ctx.real
            c = float(real(real(c) * real(ctx.scale)))
        if grad.dtype != weight.dtype or not grad.is_cpu:  # the factor and the penalty's gradient, as tensors
            ones, zeros = np.ones(weight.numel(), ctx.real), np.zeros(weight.numel(), ctx.real)
            factor, pgrad = np.empty_like(ones), np.empty_like(ones)
            serial(ones, *ctx.args, 0.0, factor)  # 1 * factor
            serial(zeros, *ctx.args, 1.0, pgrad)  # 0 * factor + 1 * the penalty's gradient
            g = grad * torch.from_numpy(factor).view(grad.shape).to(grad.device)
            if c != 0.0:
                g = g + c * torch.from_numpy(pgrad).view(grad.shape).to(grad.device)
            return None, g, None, None
        out, ctx.grad = ctx.grad, None  # (the pool's array, prepared by the forward pass; once)
        if out is None:  # a second backward pass through a retained graph
            out = np.empty(weight.numel(), ctx.real)
        run_kernel(serial, parallel, kernel_threads(out.shape[0]), _flat(grad), *ctx.args, c, out)
        return None, torch.from_numpy(out.reshape(grad.shape)), None, None


class _GateStep:
    """What a gate layer's training steps carry from one call to the next: a plain object, because
    ``nn.Module`` attribute writes cost microseconds each (several per layer and step)."""

    __slots__ = ("key", "words", "count", "last", "penalty", "adapted", "side", "kernel")

    def __init__(self, key: tuple) -> None:
        self.key = (int(key[0]), int(key[1]))  # the Philox key words, as integers (for _gates.draw_into)
        self.words: np.ndarray | None = None  # the Philox words of the last draw
        self.count = 0  # the open test-time gates the last fused forward pass counted
        # (core._identity of the scores, draw, the penalty output (lambda * open count), open count, its array)
        self.last: tuple | None = None
        self.penalty: np.ndarray | None = None  # the last forward pass's penalty output's array
        self.adapted: int | None = None  # the draw the gain was last adapted at
        self.side = 0  # the side of k the open count was on then (+1 above, -1 below)
        self.kernel: tuple | None = None  # (dtype, the kernels' parameters, the kernels and their parameters), cached


def _gates():
    """:mod:`slth.supermask._gates`, imported on first use (as :func:`slth.supermask.core._kernels`)."""
    from . import _gates as module

    return module


class _Gates(Supermask):
    """Relaxed gates z in [0, 1] over the frozen weights, trained by their reparametrised gradients (no
    straight-through), with an L0 penalty ``lambda * sum_i P(z_i > 0)``; the subclasses say how z is drawn.

    **Density.** The penalty alone sets no density, so slth's variant uses it as a two-sided switch on the
    number of open test-time gates (counted in each step's forward pass): while more than ``k`` are open it
    adds ``lambda * sum_i P(z_i > 0)`` (closing gates), while fewer it subtracts the same term (opening
    them), at exactly ``k`` it is off. A one-sided switch (off at ``k``, as Gem-Miner's regulariser)
    overshot: all gates start alike, cross zero together and momentum carries them on (digits, FC, density
    0.5, lr 10, lambda 1e-3: 2,888 of the first layer's 9,600 target left open, 71 % accuracy; two-sided:
    9,597 open, 83 %; 96.7 % at lr 100 and lambda 3e-4, 97.2 % with the additions below). The final mask
    is the top-k of the scores (the test-time gate is monotone in them), so the stored mask keeps exactly
    ``kept_count(n, density)`` weights, nearly the open set, and the eval-mode weight is ``W * mask`` -- binary, as a
    ticket rebuilds it. The reference
    variant keeps the penalty on throughout and its final mask is the open test-time gates (any count); it
    too is binary (the papers' test-time gate keeps a value in (0, 1) where it is not saturated, which no
    mask can hold).

    **Two additions make the penalty reach k in every layer.** The penalty's gradient dP(z > 0)/ds vanishes
    for a gate open with certainty (Phi'(mu / sigma) at mu >> sigma), and the loss drives some gates far
    open: MNIST FC, l0-gauss, density 0.1, 1 epoch, the output layer kept 404 gates open for its k = 100
    (median mu 5.9, 403 of them with a penalty gradient below 1e-3), the final top-k cut 304 open gates, and
    the binary mask scored 66.7 % where the continuous test-time gate clamp(mu, 0, 1) scored 91 %. So the
    scores are clamped after each step to :attr:`bounds` (l0-gauss [-sigma, 1 + sigma], where the gate is
    already 0 or 1 with probability 0.84; l0-hc [-4, 4]), where the gradient stays alive, and the penalty's
    ``gain`` (a buffer, starting at 1) grows by ``GATE_GAIN`` each step the count stays on the same side of
    ``k`` and halves when it crosses, so the penalty outgrows the loss where it must. The bounds alone left
    the output layer at 431 open (54.7 %), a gain alone too (431; 46.5 %, an earlier form that divided the
    gain by 1.02 on a crossing); together every layer reached k (within 0.1 %): 88.1 % binary against 88.4 %
    continuous (l0-hc 88.6 % and 88.5 %).

    **The term's value.** In slth's variant the penalty acts through its gradient, ``sign * gain * lambda *
    dP(z_i > 0)/ds_i``; the value it adds to the objective is ``sign * gain * lambda * (open test-time gates)``,
    the count the forward pass makes anyway, not the expected count ``sum_i P(z_i > 0)``, which would take
    another pass of exponentials per step (a switch with a growing gain is a controller, not an objective: its
    value steers nothing). The reference variant's term is the papers' ``lambda * sum_i P(z_i > 0)``.

    **Noise.** Draw d of a layer is defined by :mod:`slth.supermask._gates` (Philox, key the layer's sample
    seed); the draw count travels in ``state_dict``.
    """

    noise: str = ""  # "normal" or "logistic"
    open_at: float = 0.0  # the test-time gate is open iff score > open_at

    def __init__(self, shape, density, scores, sample_seed: int, lam: float, variant: str = "slth"):
        super().__init__(shape, density, scores, variant)
        self.lam = float(lam)
        self.stream = PhiloxStream(sample_seed)
        self.step = _GateStep(self.stream.key)  # the open count, the last penalty, the gain's side, ...
        # the penalty's gain (slth's variant; class docstring): a buffer, so a resumed run continues with it
        self.register_buffer("gain", torch.ones((), dtype=torch.float64))

    def get_extra_state(self):
        return {"draws": self.stream.draws}

    def set_extra_state(self, state) -> None:
        if not isinstance(state, dict) or not isinstance(state.get("draws"), int) or state["draws"] < 0:
            raise ValueError(f"{type(self).__name__}: damaged sampling state {state!r} (expected {{'draws': n >= 0}})")
        self.stream.draws = state["draws"]

    def final_mask(self) -> torch.Tensor:
        if self.reference:  # the open test-time gates
            return self.scores.detach() > self.open_at
        return topk_mask(self.scores.detach(), self.k, tracker=self.tracker)

    def noise_sample(self, draw: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The unit noise of draw ``draw`` (the table's levels: N(0, 1) or logistic), of the scores' shape."""
        gates = _gates()
        n = self.scores.numel()
        levels = gates.noise_levels(gates.draw_words(*self.stream.key, draw, n), n)
        real = np.float64 if dtype == torch.float64 else np.float32
        return torch.from_numpy(gates.noise_table(self.noise, real)[levels]).view(self.scores.shape).to(dtype)

    def training_weight(self, weight: torch.Tensor) -> torch.Tensor:
        draw = self.stream.next_draw()
        if not self.reference and _numba_ok(weight, self.scores):
            scores = self.scores
            out, penalty = _GateWeight.apply(weight, scores, self, draw)
            step = self.step
            step.last = (_identity(scores), draw, penalty, step.count, step.penalty)
            return out
        eps = self.noise_sample(draw, self.scores.dtype).to(self.scores.device)
        return weight * self.gate(self.scores, eps)

    def open_count(self) -> int:
        return int(torch.count_nonzero(self.scores.detach() > self.open_at))

    def regularization(self) -> torch.Tensor | float:
        if self.lam == 0.0:
            return 0.0
        if self.reference:  # always on
            return self.lam * self.open_probability(self.scores).sum()
        step, draws = self.step, self.stream.draws
        last = step.last
        fresh = last is not None and last[1] == draws - 1 and last[0] == _identity(self.scores)
        count = last[3] if fresh else self.open_count()
        if count == self.k:
            return 0.0
        sign = 1.0 if count > self.k else -1.0  # close gates while too many are open, open them while too few
        gain = self.gain
        scale = sign * float(gain)
        if step.adapted != draws:  # once per draw: the gain grows while the count stays on one side
            step.adapted = draws
            side = 1 if sign > 0 else -1
            if step.side:  # (the first step only records the side)
                factor = GATE_GAIN if side == step.side else 0.5
                if gain.is_cpu:  # the same float64 product as gain.mul_, without a torch op's dispatch
                    gain.numpy()[()] *= factor
                else:
                    gain.mul_(factor)
            step.side = side
        if fresh and last[2].grad_fn is not None:  # the forward pass's output, scaled in place
            # == last[2] * scale (value and gradient, tested bit for bit) without a torch op and its graph
            # node: the value written into the output's array, the factor left for the backward pass
            penalty = last[4]
            penalty[()] = penalty.dtype.type(self.lam * count) * penalty.dtype.type(scale)
            last[2].grad_fn.scale = scale
            return last[2]
        if fresh:
            return last[2] * scale
        # the same term from the scores: the relaxed penalty's gradient, the value lambda * count rounded alike
        probability = self.open_probability(self.scores).sum()
        value = self.scores.new_tensor(self.lam * count) * scale
        return scale * self.lam * (probability - probability.detach()) + value

    def after_step(self, step: int, weight: torch.Tensor) -> None:
        if not self.reference:  # (the references leave the gate parameters unbounded)
            # in place through a detached alias: what torch.no_grad would do, without entering that context
            self.scores.detach().clamp_(*self.bounds)

    # the subclasses' semantics, in torch ops (the reference of the kernels)
    def gate(self, scores: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def open_probability(self, scores: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _kernel(self, dtype) -> tuple:
        """(forward kernel, its parallel form, its parameters, (gradient kernel, its parallel form), the dtype
        of the array the forward pass leaves the gradient) for numpy ``dtype``."""
        raise NotImplementedError

    def _grad_args(self, weight: np.ndarray, scores: np.ndarray, aux: np.ndarray) -> tuple:
        """The gradient kernel's arguments between the upstream gradient and ``c``."""
        raise NotImplementedError

    def _kernel_args(self, dtype) -> tuple:
        """:meth:`_kernel` and ``_gates.draw_into``, cached while the dtype and the kernels' parameters stay
        (the noise table's look-up costs microseconds a call)."""
        cached = self.step.kernel
        if cached is None or cached[0] != dtype or cached[1] != self._kernel_key():
            cached = self.step.kernel = (dtype, self._kernel_key(), (*self._kernel(dtype), _gates().draw_into))
        return cached[2]

    def _kernel_key(self):
        """The kernels' parameters (a change refreshes :meth:`_kernel_args`' cache)."""
        return None


class GaussianGates(_Gates):
    """Gaussian stochastic gates (Yamada et al. 2020, arXiv 1810.04247; for strong lottery tickets Tsayag &
    Lindenbaum 2026, arXiv 2603.08914): z = clamp(mu + eps, 0, 1), eps ~ N(0, sigma^2) (quantised:
    :mod:`slth.supermask._gates`), P(z > 0) = Phi(mu / sigma); the test-time gate clamp(mu, 0, 1)."""

    noise = "normal"
    open_at = 0.0

    @property
    def bounds(self) -> tuple[float, float]:
        """Where slth's variant keeps mu: beyond, the gate is 0 or 1 with probability above 0.84."""
        return (-self.sigma, 1.0 + self.sigma)

    def __init__(self, shape, density, scores, sample_seed: int, lam: float, sigma: float, variant: str = "slth"):
        super().__init__(shape, density, scores, sample_seed, lam, variant)
        self.sigma = float(sigma)

    def gate(self, scores, eps):
        return torch.clamp(scores + self.sigma * eps, 0.0, 1.0)

    def _kernel_key(self):
        return self.sigma

    def open_probability(self, scores):
        return torch.special.ndtr(scores / self.sigma)

    def _kernel(self, dtype):
        gates = _gates()
        return (gates.gauss_gates, gates.gauss_gates_parallel, (gates.noise_table("normal", dtype), self.sigma),
                (gates.gauss_grad, gates.gauss_grad_parallel), np.bool_)

    def _grad_args(self, weight, scores, aux):
        return weight, aux, scores, self.sigma, self.lam


class HardConcreteGates(_Gates):
    """Hard-concrete gates (Louizos et al. 2018, arXiv 1712.01312): z = clamp(g (zeta - gamma) + gamma, 0, 1),
    g = sigmoid((logit u + log alpha) / beta), u ~ U(0, 1) (quantised: :mod:`slth.supermask._gates`),
    P(z > 0) = sigmoid(log alpha - beta log(-gamma / zeta)); beta = 2/3, gamma = -0.1, zeta = 1.1."""

    noise = "logistic"
    open_at = math.log(0.1 / 1.1)  # log(-gamma / zeta): the test-time gate clamp(sigmoid(la) 1.2 - 0.1) > 0
    bounds = (-4.0, 4.0)  # where slth's variant keeps log alpha (P(z > 0) = 0.083 and 0.996 at the ends)

    def gate(self, scores, eps):
        gates = _gates()
        g = torch.sigmoid((eps + scores) * (1.0 / gates.BETA))
        return torch.clamp(g * (gates.ZETA - gates.GAMMA) + gates.GAMMA, 0.0, 1.0)

    def open_probability(self, scores):
        return torch.sigmoid(scores - _gates().HC_SHIFT)

    def _kernel(self, dtype):
        gates = _gates()
        return (gates.hard_concrete_gates, gates.hard_concrete_gates_parallel, (gates.noise_table("logistic", dtype),),
                (gates.hard_concrete_grad, gates.hard_concrete_grad_parallel), dtype)

    def _grad_args(self, weight, scores, aux):
        return aux, scores, self.lam


def masked_weight(weight: torch.Tensor, mask: torch.Tensor, kept: int) -> torch.Tensor:
    """The effective weight W * m under a (float) mask; ``kept`` = m.sum(), unused."""
    return weight * mask


def uniform_scores(u: torch.Tensor, fan_in: int, density: float) -> torch.Tensor:
    """Scores ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) from ``u`` ~ U[0, 1): (2u - 1) * (1 / sqrt(fan_in)),
    kaiming_uniform_(a=sqrt(5)) as hidden-networks (Ramanujan et al.)."""
    return (2.0 * u - 1.0) * (1.0 / math.sqrt(fan_in))


def logit_shifted_scores(u: torch.Tensor, fan_in: int, density: float) -> torch.Tensor:
    """:func:`uniform_scores` + logit(density), so that sigmoid(s) ~ density and the sampled masks start at
    the target density (Bernoulli)."""
    d = min(max(density, 1e-3), 1 - 1e-3)
    return uniform_scores(u, fan_in, density) + math.log(d / (1.0 - d))


def unit_scores(u: torch.Tensor, fan_in: int, density: float) -> torch.Tensor:
    """Scores ~ U[0, 1] (Gem-Miner's relaxed mask)."""
    return u


def kaiming_uniform_scores(u: torch.Tensor, fan_in: int, density: float) -> torch.Tensor:
    """Scores ~ U(-sqrt(6 / fan_in), sqrt(6 / fan_in)): ``kaiming_uniform_(mode="fan_in",
    nonlinearity="relu")``, IteRand's score init (dchiji-ntt/iterand ``init_mode_mask: kaiming_uniform``)."""
    return (2.0 * u - 1.0) * math.sqrt(6.0 / fan_in)


def _fan_out(shape: torch.Size, fan_in: int) -> int:
    """torch's fan_out of a weight of ``shape``: the output dimension times the receptive field (the trailing
    dimensions past the second)."""
    return shape[0] * math.prod(shape[2:]) if len(shape) > 1 else fan_in


def xavier_uniform_scores(u: torch.Tensor, fan_in: int, density: float, *, divide: bool = False) -> torch.Tensor:
    """Scores ~ U(-b, b), b = sqrt(6 / (fan_in + fan_out)): Glorot/Xavier uniform, the signed supermask's
    mask init (kosnil/signed_supermasks). ``divide`` as :func:`uniform_scores`."""
    fans = fan_in + _fan_out(u.shape, fan_in)
    centred = 2.0 * u - 1.0
    return centred / math.sqrt(fans / 6.0) if divide else centred * math.sqrt(6.0 / fans)


def kaiming_normal_fan_out_scores(u: torch.Tensor, fan_in: int, density: float, *,
                                  divide: bool = False) -> torch.Tensor:
    """Scores ~ N(0, 2 / fan_out) from ``u`` ~ U[0, 1) by the inverse normal CDF: ``kaiming_normal_(mode="fan_out",
    nonlinearity="relu")``, the multicoated supermask's score init (yasu0001/multicoated-supermasks
    ``ScoreKaiming``). u = 0 is moved half a float32 step in, where the CDF is finite."""
    centred = (2.0 * u - 1.0).clamp(min=-1.0 + 2.0**-24)
    normal = torch.erfinv(centred) * math.sqrt(2.0)
    std = math.sqrt(2.0 / _fan_out(u.shape, fan_in))
    return normal / (1.0 / std) if divide else normal * std


def stg_scores(u: torch.Tensor, fan_in: int, density: float, *, divide: bool = False) -> torch.Tensor:
    """Gaussian gates' mu = 0.5 + 0.01 N(0, 1) (the normal quantile of ``u``): runopti/stg's mu = 0.01 N(0, 1)
    in its gate clamp(mu + 0.5 + eps, 0, 1), written as clamp(mu + eps, 0, 1)."""
    tiny = 2.0 ** -25  # u = 0 would map to -inf
    return 0.5 + 0.01 * torch.special.ndtri(u.clamp(tiny, 1.0 - tiny).double()).to(u.dtype)


def log_alpha_scores(u: torch.Tensor, fan_in: int, density: float, *, divide: bool = False) -> torch.Tensor:
    """Hard-concrete log alpha = 0.01 N(0, 1) (the normal quantile of ``u``): L0_regularization's
    ``qz_loga.normal_(log(1 - droprate_init) - log(droprate_init), 1e-2)`` at droprate_init 0.5."""
    tiny = 2.0 ** -25
    return 0.01 * torch.special.ndtri(u.clamp(tiny, 1.0 - tiny).double()).to(u.dtype)


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
    density)`` gives the initial scores from ``u`` ~ U[0, 1) of the tensor's shape.
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
    # the final mask has levels (Supermask.final_levels: the sign for signed, the coat count for multicoated):
    # a ticket stores them as int8 extras "level/<name>" over the kept weights, and final_weight gets them
    # as its float mask
    levels: bool = False
    # the reference code scales the scaled inits' fan by the kept fraction, as slth does, not by hidden-networks'
    # pruned fraction (slth.supermask.init.init_fractions): multicoated's sign_init, fan * (1 - sparsity[0])
    reference_fan_kept: bool = False
    # the parametrization keeps its masks inside a sparse source (Supermask.set_source: the ranking restricted
    # to the present weights); the others are refused a sparse source by SupermaskConfig
    sparse_sources: bool = True
    # the settings of slth._hparams.MethodSettings this method reads (its own, besides variant and source);
    # SupermaskConfig refuses another method's setting changed from its default (check_method_settings)
    settings: tuple[str, ...] = ()

    def default_lr(self, variant: str = "slth") -> float:
        return self.reference.lr if variant == "reference" else self.lr

    def default_weight_decay(self, variant: str = "slth") -> float:
        return self.reference.weight_decay if variant == "reference" else self.weight_decay

    def default_init(self, variant: str = "slth") -> str:
        return self.reference.init if variant == "reference" else self.init

    def init_variant(self, variant: str) -> str:
        """The variant whose fan scaling the scaled inits follow (:func:`slth.supermask.init.init_fractions`)."""
        return "slth" if self.reference_fan_kept else variant

    def score_init(self, variant: str = "slth") -> Callable[..., torch.Tensor]:
        if variant == "reference" and self.reference.scores is not None:
            return self.reference.scores
        return self.scores


# Learning rates: score learning in the papers uses 0.1 for ~100 epochs; for the short CPU budgets here
# 1.0 is better (MNIST FC, density 0.5, 3 epochs: 95.59 % at 0.1, 97.44 % at 0.5, 97.38 % at 1.0, 97.17 %
# at 2.0). Bernoulli's sigmoid gradients are small (Zhou et al. also used very large rates) and
# Gem-Miner's scores live in [0, 1]: their rates are the best of {1, 10, 50, 100, 200, 500} and
# {0.01, 0.1, 1, 3} on digits (FC 64-300-100-10, density 0.5, 10 epochs).
# multicoated: the best of {0.1, 0.2, 0.3, 0.5, 1, 3} on MNIST FC (784-300-100-10, density 0.1, 2 epochs, seed 0,
# one run each): under the paper's scaled-signed-constant init 44.98 / 91.84 / 94.45 / 92.83 / 74.61 / 63.98 % and
# under signed-constant (its default, below) 97.08 % at 0.3, 96.57 % at 1.0 (its K = 3 coats triple the score
# gradient); edge-popup at its 1.0: 92.40 %.
# signed: 0.5, the one rate that trained all three nets of `slth experiment methods` (3 epochs, 6,000 examples,
# seeds 0-2, densities 0.5 and 0.1; the sweep table: docs/supermask.md, "The signed supermask's learning rate").
# Its earlier 10 (best of {0.1, ..., 30} on MNIST FC only) killed LeNet-5: the sign flips let a step turn every
# ReLU of the bias-free net off, after which no gradient flows (9.68 %, chance, from step 4); conv layers, their
# gradient summed over every position a filter is used at, take the largest steps relative to their scores.
# LeNet-5 failed at 1 too on two of six (seed, density) runs (21 %, 9.68 %); FC prefers 3 (1 and 3 points above 0.5).
# multicoated's init: the paper's constant c = gain / sqrt(fan_in * density) (scaled-signed-constant, the
# reference variant's) collapsed on MNIST FC at density 0.03 (2 epochs: 9.8 % at lr 0.3, 19.9 % at 0.1, 9.8 % at
# 0.03; edge-popup under the same init 53.5 % against 76.1 % under signed-constant), while signed-constant gave
# 88.6 % at lr 0.3: slth's default is signed-constant, W * level with W = +-gain / sqrt(fan_in)
# (MULTICOATED_INIT_NOTE).
LR_SIGNED = 0.5
LR_MULTICOATED = 0.3
# Relaxed gates (l0-gauss, l0-hc): their scores are gate locations (mu in gate units, log alpha in logits) and
# the gradient reaching them is the small dL/dW_eff * W, so their rates are large; the best of lr {10, 20, 50,
# 100, 200} and {50, 200, 500, 2000} crossed with gate_l0 {1e-4, 3e-4, 1e-3, 3e-3, 1e-2} on digits (FC
# 64-300-100-10, density 0.5, 10 epochs, seed 0): l0-gauss 97.5 % at (100, 1e-4), 96.7 % at (100, 3e-4),
# 96.1 % at (200, 3e-4), 83.1 % at (10, 1e-3); l0-hc 96.4 % at (2000, 3e-4), 95.3 % at (500, 1e-3), 8.9 %
# at (500, 1e-2) (a large lambda swings the open count far around k); edge-popup 98.3 % there. (Swept before
# the score bounds and the penalty's gain were added; with them the defaults give 97.2 % for both.)
GATE_GAIN = 1.02  # the relaxed gates' penalty gain: x 1.02 per step on the same side of k, halved on a crossing
GATE_LR = 100.0
HC_LR = 2000.0
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
           settings=("rerand_period", "rerand_prob"),
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
           settings=("score_l2",),
           paper="Sreenivasan et al. 2022, Rare Gems: Finding Lottery Tickets at Initialization, arXiv 2202.12002",
           doc="scores in [0, 1] rounded at 0.5, an L2 pull toward pruning, a shrinking removable set",
           reference=ReferenceDefaults(0.1, 0.0, "signed-constant",
                                       "ksreenivasan/pruning_is_enough configs/ablation_ep_gm_resnet20_059/gm.yml")),
    Method("signed", lambda shape, density, scores, *, config, **_: Signed(shape, density, scores,
                                                                           config.sign_threshold, config.variant),
           uniform_scores, lr=LR_SIGNED, weight_decay=1e-4, final_weight=masked_weight, levels=True,
           settings=("sign_threshold",),
           paper="Koster, Grothe & Rettinger 2022, Signing the Supermask: Keep, Hide, Invert, arXiv 2201.13361",
           doc="mask in {-1, 0, +1}: the top-k |scores| kept with the scores' signs, straight-through gradients",
           sparse_sources=False,
           reference=ReferenceDefaults(0.005, 3e-4, "signed-constant",
                                       "kosnil/signed_supermasks (FCN sample config: SGDW Nesterov 0.9, lr 0.005, "
                                       "weight decay 3e-4, tanh_th 0.4)", scores=xavier_uniform_scores)),
    Method("multicoated", lambda shape, density, scores, *, config, **_: Multicoated(shape, density, scores,
                                                                                     config.coats, config.variant),
           uniform_scores, lr=LR_MULTICOATED, weight_decay=1e-4,  # signed-constant: see MULTICOATED_INIT_NOTE
           final_weight=masked_weight, levels=True, reference_fan_kept=True,
           settings=("coats",),
           paper="Okoshi et al. 2022, Multicoated Supermasks Enhance Hidden Networks, ICML 2022, PMLR 162 "
                 "(proceedings.mlr.press/v162/okoshi22a.html; no arXiv version)",
           doc="K nested top-k coats of |scores|; a weight's level is how many coats keep it: W * level",
           sparse_sources=False,
           reference=ReferenceDefaults(0.1, 1e-4, "scaled-signed-constant",
                                       "yasu0001/multicoated-supermasks "
                                       "configs/_base_/schedules/cifar10_bs128_cosine.py "
                                       "(SGD lr 0.1, momentum 0.9, weight decay 1e-4; sparsity [0.7, 0.9212, 0.9685])",
                                       scores=kaiming_normal_fan_out_scores)),
    Method("l0-gauss", lambda shape, density, scores, *, config, sample_seed, **_: GaussianGates(
               shape, density, scores, sample_seed, lam=config.gate_l0, sigma=config.gate_sigma,
               variant=config.variant),
           stg_scores, lr=GATE_LR, weight_decay=0.0,  # the L0 penalty instead (gate_l0)
           settings=("gate_l0", "gate_sigma"),
           paper="Tsayag & Lindenbaum 2026, Uncovering a Winning Lottery Ticket with Continuously Relaxed "
                 "Bernoulli Gates, arXiv 2603.08914 (gates: Yamada et al. 2020, arXiv 1810.04247)",
           doc="Gaussian stochastic gates clamp(mu + eps, 0, 1), L0 penalty until k gates are open, top-k of mu",
           sparse_sources=False,
           reference=ReferenceDefaults(GATE_LR, 0.0, "signed-constant",
                                       "no official code; runopti/stg python/stg/layers.py (sigma 0.5, mu init)")),
    Method("l0-hc", lambda shape, density, scores, *, config, sample_seed, **_: HardConcreteGates(
               shape, density, scores, sample_seed, lam=config.gate_l0, variant=config.variant),
           log_alpha_scores, lr=HC_LR, weight_decay=0.0,
           settings=("gate_l0",),
           paper="Louizos et al. 2018, Learning Sparse Neural Networks through L0 Regularization, arXiv 1712.01312",
           doc="hard-concrete gates, L0 penalty until k gates are open, top-k of log alpha",
           sparse_sources=False,
           reference=ReferenceDefaults(HC_LR, 0.0, "signed-constant",
                                       "AMLab-Amsterdam/L0_regularization l0_layers.py (beta, gamma, zeta, "
                                       "log alpha init)")),
)}
check_registry("supermask method", METHODS, METHOD_NAMES)  # slth train --help lists them without torch
# the settings every method reads: the variant and the random source; the rest belong to the methods that name them
COMMON_SETTINGS = ("variant", "source", "source_density", "source_distribution", "source_locked")


def check_method_settings(method: str | None, settings: MethodSettings) -> None:
    """Refuse a method's own setting changed from its default for a method that does not read it (``None``:
    dense training, which reads none): a silently ignored option is a wrong experiment."""
    reads = set(COMMON_SETTINGS) | set(METHODS[method].settings if method is not None else ())
    for name in METHOD_FIELDS:
        if name not in reads and getattr(settings, name) != getattr(_METHOD, name):
            owners = [m for m, entry in METHODS.items() if name in entry.settings]
            raise ValueError(f"{name} is a setting of {' and '.join(owners)}; {method or 'dense training'} does not "
                             f"read it (leave it at its default, {getattr(_METHOD, name)!r})")


def unread_settings_dropped(method: str | None, record: dict) -> dict:
    """``record`` (a ticket's or checkpoint's settings, by name) without the method settings ``method`` does not
    read: slth before 2026-12-07 accepted and ignored them, so its files still load (they take their defaults,
    which is what training saw)."""
    reads = set(COMMON_SETTINGS) | set(METHODS[method].settings if method in METHODS else ())
    return {k: v for k, v in record.items() if k not in METHOD_FIELDS or k in reads}
