"""The machinery under every supermask method: kept counts and thresholds, top-k masks (with a threshold tracker
that narrows the search to a band), and the autograd functions that compute a mask from scores in the forward
pass and pass the gradient straight through in the backward pass (Ramanujan et al., arXiv 1911.13299,
``GetSubnet``), fused with the masked weight on CPU by the numba kernels of :mod:`._kernels` (run on torch's
thread count for large layers, :func:`kernel_threads`). The methods built from them: :mod:`.methods`."""

from __future__ import annotations

import math
import sys

import numpy as np
import torch


def kept_count(numel: int, density: float) -> int:
    """Number of weights a layer keeps at ``density`` (kept fraction): round half up, at least one."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density (kept fraction) must lie in (0, 1], got {density}")
    return min(numel, max(1, math.floor(numel * density + 0.5)))


def reference_kept_count(numel: int, density: float) -> int:
    """Number of weights hidden-networks' ``GetSubnet`` keeps at ``prune_rate = density`` (its prune_rate is
    the kept fraction): it zeroes the ``int((1 - density) * numel)`` lowest, so it keeps the rest (Python
    floats, truncation: 211,681 of 300 x 784 at 0.9 where round-half-up keeps 211,680). Zero for a tiny
    density, as there; biprop and edge-popup's reference variant (:mod:`slth.supermask.methods`)."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density (kept fraction) must lie in (0, 1], got {density}")
    return numel - int((1 - density) * numel)


def percentile_threshold(values: torch.Tensor, sparsity: float) -> float:
    """IteRand's ``percentile(scores, 100 * sparsity)``: the k-th smallest value with
    ``k = 1 + round(0.01 * q * (n - 1))`` (Python's round, half to even), ``q = sparsity * 100``."""
    flat = values.detach().reshape(-1)
    if bool(torch.isnan(flat).any()):
        raise ValueError("cannot rank scores that contain NaN")
    k = 1 + round(.01 * float(sparsity * 100) * (flat.numel() - 1))
    return flat.kthvalue(k).values.item()


class ThresholdTracker:
    """Where a layer's next top-k threshold is expected, so that the next exact selection runs over a
    narrow band around it (:mod:`slth.supermask._kernels`) instead of over every score.

    Only speed depends on it: the threshold is the exact k-th largest value whatever the band. The band is
    centred on the last threshold plus its drift (a running mean of its moves: under weight decay the
    scores shrink and the threshold falls by a similar amount every step, so the prediction's error is a
    fraction of the move). Its half-width grows at least fourfold when it misses, follows the prediction's
    errors (:meth:`_adapt`) and halves when the band holds more than 1/32 of the values. Every value in the
    band costs a second look at its block of 64 scores.
    """

    def __init__(self) -> None:
        self.center: float | None = None  # the band's centre for the next selection
        self.width = 0.0  # its half-width
        self._last: float | None = None  # the last threshold
        self._drift = 0.0  # running mean of the threshold's moves
        self._band: np.ndarray | None = None
        self._index: np.ndarray | None = None
        self._ones: np.ndarray | None = None

    def threshold(self, values: np.ndarray, k: int, absolute: bool = False) -> float:
        """The k-th largest of ``values`` (1-D float32/float64; of ``|values|`` if ``absolute``)."""
        return self._select(values, k, absolute, False)[0]

    def threshold_count(self, values: np.ndarray, k: int, absolute: bool = False) -> tuple:
        """(:meth:`threshold`, how many of the values are at or above it): ``k`` unless ties at the threshold
        straddle the k-th place. Counted in the band (the values above it, and the band's own at or above the
        threshold), so without a second pass over the values, except after a miss."""
        return self._select(values, k, absolute, True)

    def _select(self, values: np.ndarray, k: int, absolute: bool, count: bool) -> tuple:
        kernels = _kernels()

        n = values.shape[0]
        if self.center is not None:
            if self._band is None or self._band.shape[0] < n or self._band.dtype != values.dtype:
                self._band = np.empty(n, dtype=values.dtype)
            above, in_band, nan = kernels.band_count(values, absolute, self.center - self.width,
                                                     self.center + self.width, self._band)
            if nan:
                raise ValueError("cannot rank scores that contain NaN")
            if above < k <= above + in_band:
                j = in_band - (k - above)  # ascending position of the k-th largest within the band
                band = self._band[:in_band]
                thr = np.partition(band, j)[j]
                self._adapt(float(thr), in_band, n)
                return thr, (above + int(np.count_nonzero(band >= thr))) if count else None
        thr = self._full(values, k, absolute)
        return thr, int(np.count_nonzero((np.abs(values) if absolute else values) >= thr)) if count else None

    def masked_weight(self, weight: np.ndarray, scores: np.ndarray, k: int, out: np.ndarray,
                      threads: int = 1) -> None:
        """out = weight * (top-k mask of |scores|), exactly k kept (ties: the first in index order); in one
        pass over the band around the predicted threshold when it holds the new one, on ``threads`` of
        numba's threads (:func:`kernel_threads`; the same result on any number)."""
        kernels = _kernels()

        n = scores.shape[0]
        if self.center is not None:
            if self._index is None or self._index.shape[0] < n:
                self._index = np.empty(n, dtype=np.int64)
            status, thr, in_band = run_kernel(kernels.masked_weight_banded, kernels.masked_weight_banded_parallel,
                                              threads, weight, scores, k, self.center - self.width,
                                              self.center + self.width, self._index, out)
            # status 2, a NaN: refused here, though _full below would refuse it with the same error, so deleting
            # this check changes no result a test can see (it only spares a full selection). threshold()'s band
            # check is not redundant: there a NaN is caught later only when the band misses (it has its own test)
            if status == 2:
                raise ValueError("cannot rank scores that contain NaN")
            if status == 0:
                self._adapt(float(thr), in_band, n)
                return
        thr = self._full(scores, k, absolute=True)
        kernels.masked_weight(weight, scores, scores.dtype.type(thr), k, out)

    def mask(self, scores: np.ndarray, k: int, out: np.ndarray) -> None:
        """out = 0/1 top-k mask of |scores| (out's dtype), as :meth:`masked_weight` of a weight of ones."""
        if self._ones is None or self._ones.shape[0] != scores.shape[0] or self._ones.dtype != scores.dtype:
            self._ones = np.ones(scores.shape[0], dtype=scores.dtype)
        self.masked_weight(self._ones, scores, k, out)

    def _adapt(self, thr: float, in_band: int, n: int) -> None:
        """After a hit: keep the half-width a few times the prediction's last error (a miss costs a full
        selection, ten passes' worth), but the band below 1/32 of the values (each band value costs a
        second look at its block)."""
        error = abs(thr - self.center)
        if in_band > max(256, n >> 5):
            self.width *= 0.5
        elif 3.0 * error > self.width:
            self.width *= 2.0
        else:
            self.width *= 0.95
        self._follow(thr)

    def _follow(self, thr: float) -> None:
        """Centre the next band on ``thr`` plus the drift, updated with the move to ``thr``."""
        if self._last is not None:
            self._drift = 0.5 * self._drift + 0.5 * (thr - self._last)
        self._last = thr
        self.center = thr + self._drift

    def _full(self, values: np.ndarray, k: int, absolute: bool):
        n = values.shape[0]
        full = np.abs(values) if absolute else values
        if np.isnan(full).any():
            raise ValueError("cannot rank scores that contain NaN")
        thr = np.partition(full, n - k)[n - k]
        if not math.isfinite(thr):  # e.g. -inf (Gem-Miner's removed weights): no band to keep
            self.center, self._last, self._drift = None, None, 0.0
            return thr
        if self.center is None:
            self.width = abs(float(thr)) * 1e-3
        else:  # a miss: at least twice the error that missed it
            self.width = max(4.0 * self.width, 2.0 * abs(float(thr) - self.center))
        self.width = max(self.width, abs(float(thr)) * 2.0**-20, 1e-30)
        self._follow(float(thr))
        return thr


def _kernels():
    """:mod:`slth.supermask._kernels`, imported on first use (numba's import and the kernels' cache load
    cost a second; an import statement in a per-step function costs microseconds). Every kernel call here
    goes through it."""
    global _KERNELS
    if _KERNELS is None:
        from . import _kernels as kernels

        _KERNELS = kernels
    return _KERNELS


_KERNELS = None


PARALLEL_MIN = 1 << 16  # below this many weights one thread is faster (waking numba's threads costs ~10 us)


def kernel_threads(n: int) -> int:
    """How many threads the kernels of a layer of ``n`` weights run on: torch's intra-op thread count
    (``torch.set_num_threads``; capped at numba's pool) for large layers, one for small ones. Each
    thread takes a contiguous chunk and the kernels' results are the same on any number of threads
    (torch's own ops around them may round differently on another thread count: docs/training.md)."""
    if n < PARALLEL_MIN:
        return 1
    threads = torch.get_num_threads()
    return 1 if threads < 2 else _kernels().usable_threads(threads)


def run_kernel(serial, parallel, threads: int, *args):
    """``serial(*args)`` when ``threads`` is 1, else ``parallel(*args, threads)`` on that many of numba's
    threads: the same results either way (the parallel kernels split the serial loops into contiguous
    chunks)."""
    if threads < 2:
        return serial(*args)
    kernels = _kernels()
    with kernels.PARALLEL:
        kernels.set_threads(threads)
        return parallel(*args, threads)


def _numba_ok(*tensors: torch.Tensor) -> bool:
    """The CPU kernels apply: every tensor on CPU and of the same float32/float64 dtype."""
    dtype = tensors[0].dtype
    return (dtype == torch.float32 or dtype == torch.float64) and all(t.dtype == dtype and t.is_cpu for t in tensors)


def _flat(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return (t if t.is_contiguous() else t.contiguous()).numpy().reshape(-1)


class BufferPool:
    """Arrays a layer's kernels write their outputs into, reused from step to step.

    A fresh array of a layer's size is served by ``mmap`` and every 4 KiB page of it faults on first touch
    (on the VM these numbers come from, allocating and filling three arrays of the first FC layer's
    235,200 floats took 2.7 ms and 428 page faults; refilling three kept arrays, 63 us). An array is
    handed out again only when no tensor refers to it any more -- a tensor made by ``torch.from_numpy``
    (and its views, and the autograd graph that saves it) holds a reference to the array -- so an output
    a caller still holds is never overwritten.
    """

    _SLOTS = 3  # per name: this step's array, last step's (a graph not yet freed), one a caller holds

    def __init__(self) -> None:
        self._arrays: dict[str, list[np.ndarray]] = {}
        # what getrefcount reports for an array held by a list alone, measured the way take() asks (the
        # interpreter decides whether its own argument counts)
        probe = [np.empty(1)]
        self._free = sys.getrefcount(probe[0])

    def take(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        """A C-contiguous array of ``shape`` and ``dtype`` (contents undefined) that nothing else refers to."""
        arrays = self._arrays.setdefault(name, [])
        for i in range(len(arrays)):
            # any reference beyond the list's and a tensor (or a caller) still uses it
            if sys.getrefcount(arrays[i]) == self._free and arrays[i].shape == shape and arrays[i].dtype == dtype:
                return arrays[i]
        fresh = np.empty(shape, dtype=dtype)
        arrays.insert(0, fresh)
        del arrays[self._SLOTS:]
        return fresh


class KernelState:
    """What a layer's fused kernels keep from step to step; only speed depends on it.

    * where the last top-k threshold was (:class:`ThresholdTracker`);
    * reusable output arrays (:class:`BufferPool`);
    * the numpy views of the layer's weight and scores, and whether the weight is signed-constant (every
      entry +-c), cached per tensor and version: a supermask layer's fixed cost per call is a few dozen
      Python operations, and inside a training step, after the matrix products have evicted the caches,
      each costs several microseconds -- on a small network a visible part of the step.

    The weight's cache follows the tensor's version counter (in-place changes such as IteRand's redraws or
    ``load_state_dict`` bump it); writes that bypass it (``weight.data[...] = ``, numpy views) must be
    followed by :meth:`clear`.
    """

    def __init__(self) -> None:
        self.tracker = ThresholdTracker()
        self.pool = BufferPool()
        self.last_count: tuple | None = None  # Gem-Miner: (tensor identities, weights on) of the last forward
        self.clear()

    def clear(self) -> None:
        self._views: dict[str, tuple] = {}

    def view(self, name: str, t: torch.Tensor) -> np.ndarray:
        """Flat numpy view of tensor ``t`` (CPU), cached while ``t`` keeps its storage."""
        cached = self._views.get(name)
        if cached is not None and cached[0] is t and cached[1] == t.data_ptr() and cached[2].shape[0] == t.numel():
            return cached[2]
        flat = _flat(t)
        self._views[name] = (t, t.data_ptr(), flat) if t.is_contiguous() else None
        return flat

    def present_magnitude(self, weight: torch.Tensor, present: np.ndarray) -> float:
        """c if every entry of ``weight`` where ``present`` is nonzero is +-c and every other entry is +0 (a
        signed-constant weight in a sparse source), else 0; recomputed when either changes."""
        kernels = _kernels()

        try:
            key = (weight.data_ptr(), weight._version, id(present))
        except RuntimeError:  # an inference-mode tensor has no version counter: no caching
            return float(kernels.present_constant_magnitude(_flat(weight), present))
        cached = self._views.get("present magnitude")
        if cached is None or cached[0] is not weight or cached[1] != key or cached[2] is not present:
            magnitude = float(kernels.present_constant_magnitude(self.view("weight", weight), present))
            cached = self._views["present magnitude"] = (weight, key, present, magnitude)
        return cached[3]

    def magnitude(self, weight: torch.Tensor) -> float:
        """c if every entry of ``weight`` is +-c (signed-constant), else 0; recomputed when it changes."""
        kernels = _kernels()

        try:
            key = (weight.data_ptr(), weight._version)
        except RuntimeError:  # an inference-mode tensor has no version counter: no caching
            return float(kernels.constant_magnitude(_flat(weight)))
        cached = self._views.get("magnitude")
        if cached is None or cached[0] is not weight or cached[1] != key:
            magnitude = float(kernels.constant_magnitude(self.view("weight", weight)))
            cached = self._views["magnitude"] = (weight, key, magnitude)
        return cached[2]


def topk_mask(scores: torch.Tensor, k: int, dtype: torch.dtype = torch.bool,
              tracker: ThresholdTracker | None = None, last_ties: bool = False) -> torch.Tensor:
    """Mask (0/1 of ``dtype``) of the ``k`` largest entries of ``scores``: exactly ``k``, ties kept in
    index order (``last_ties``: the last tied indices, as hidden-networks' ascending sort keeps them).

    On CPU the threshold is an exact selection in numba (over a band around the last threshold when a
    ``tracker`` is given; :class:`ThresholdTracker`), and the mask is built in numpy, whose comparisons
    are cheaper than torch's bool kernels; ranking is most of a supermask step's overhead over a dense step.
    """
    flat = scores.detach().reshape(-1)
    n = flat.numel()
    if k >= n:
        return torch.ones_like(scores, dtype=dtype)
    if k <= 0:
        return torch.zeros_like(scores, dtype=dtype)
    if _numba_ok(flat):
        values = _flat(flat)
        threshold = (tracker or ThresholdTracker()).threshold(values, k)
        threshold = values.dtype.type(threshold)
        mask = values >= threshold
        surplus = int(np.count_nonzero(mask)) - k
        if surplus:  # ties at the threshold: keep the first ones in index order (or the last)
            tied = np.flatnonzero(values == threshold)
            mask[tied[:surplus] if last_ties else tied[len(tied) - surplus :]] = False
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
        mask[tied[:surplus] if last_ties else tied[len(tied) - surplus :]] = False
    return mask.view_as(scores).to(dtype)


class GetSubnet(torch.autograd.Function):
    """Forward: 0/1 mask of the top-``k`` scores. Backward: identity (straight-through estimator)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, k: int, tracker: ThresholdTracker | None = None) -> torch.Tensor:
        return topk_mask(scores, k, dtype=scores.dtype, tracker=tracker)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


class StraightThroughWeight(torch.autograd.Function):
    """The reference variant's effective weight with edge-popup's straight-through score gradient:
    forward returns ``effective`` (computed by the caller from a mask of ``scores``), backward
    dL/ds = dL/dW_eff * W (* sign(s) when the mask ranked |s|). hidden-networks and biprop pass the
    gradient this way (biprop's ``GetQuantnet_binary`` returns g * |W| for the mask, times sign(W) from
    the product: W, not alpha); IteRand ranks the signed scores (``absolute=False``)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, scores: torch.Tensor, effective: torch.Tensor, absolute: bool):
        ctx.save_for_backward(weight, scores)
        ctx.absolute = absolute
        return effective

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight, scores = ctx.saved_tensors
        g = grad * weight
        return None, g * scores.sign() if ctx.absolute else g, None, None


class MaskedWeight(torch.autograd.Function):
    """``weight * GetSubnet(|scores|, k)`` fused: the same values and score gradients in fewer passes.

    Forward keeps the top-``k`` |scores|; backward is straight-through, dL/ds = dL/dW_eff * W * sign(s)
    (the sign from |s|). On CPU both directions are single numba loops (:mod:`slth.supermask._kernels`)
    that keep their state in a :class:`KernelState`. The composition of :class:`GetSubnet` and ``abs`` is
    the reference it is tested against, bit for bit.
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, scores: torch.Tensor, k: int, state: KernelState | None = None,
                ranking: np.ndarray | None = None):
        ctx.save_for_backward(weight, scores)
        if k >= weight.numel() or not _numba_ok(weight, scores):
            ctx.fused = None
            return weight * topk_mask(scores.abs(), k, dtype=weight.dtype, tracker=state and state.tracker)
        state = state or KernelState()
        w, s = state.view("weight", weight), state.view("scores", scores)
        out = state.pool.take("weight", weight.shape, w.dtype)
        threads = kernel_threads(w.shape[0])
        # ``ranking``: the values whose |.| are ranked instead of the scores' (a sparse source's scores with its
        # absent weights at 0: slth.supermask.methods.EdgePopup); the gradient is the scores' all the same
        state.tracker.masked_weight(w, s if ranking is None else ranking, k, out.reshape(-1), threads)
        # the backward pass's arrays, prepared here: after the forward pass each Python step costs more
        grad = state.pool.take("grad", weight.shape, w.dtype)
        ctx.fused = (w, s, grad, torch.from_numpy(grad), threads)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight, scores = ctx.saved_tensors  # (also autograd's check that neither changed in place since)
        fused, ctx.fused = ctx.fused, None  # the graph may outlive the step: let the pool have the array back
        if fused is None or grad.dtype != weight.dtype or not grad.is_cpu:
            return None, grad * weight * scores.sign(), None, None, None
        kernels = _kernels()

        w, s, out, out_tensor, threads = fused
        run_kernel(kernels.abs_straight_through_grad, kernels.abs_straight_through_grad_parallel, threads,
                   _flat(grad), w, s, out.reshape(-1))
        return None, out_tensor, None, None, None


def binarized_weight(weight: torch.Tensor, mask: torch.Tensor, kept: int) -> torch.Tensor:
    """biprop's effective weight alpha * sign(W) * m, alpha = ||m * W||_1 / ||m||_0 (per layer)."""
    alpha = (weight.abs() * mask).sum() / kept
    return alpha * torch.sign(weight) * mask


class BinarizedWeight(torch.autograd.Function):
    """biprop's ``alpha * sign(W) * GetSubnet(|scores|, k)`` with alpha = sum(|W| * m) / k, fused on CPU
    (:func:`slth.supermask._kernels.binarized_weight`; sums in float64, so it agrees with the unfused
    reference to float32 rounding, not bit for bit). The gradient reaches the scores through the mask
    and through alpha; straight-through, with the sign from |s|.

    For a signed-constant weight (every entry +-c) alpha is c exactly, so the effective weight is
    edge-popup's ``W * m`` (the same kernel, bit for bit what the general formula gives), and the backward
    pass reads sign(w) and m from it (:func:`slth.supermask._kernels.constant_binarized_grad`).
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, scores: torch.Tensor, k: int, state: KernelState | None = None,
                ranking: np.ndarray | None = None, present: np.ndarray | None = None):
        kernels = _kernels()

        state = state or KernelState()
        w, s = state.view("weight", weight), state.view("scores", scores)
        out = state.pool.take("weight", weight.shape, w.dtype)
        flat_out = out.reshape(-1)
        c = state.magnitude(weight)
        threads = kernel_threads(w.shape[0])
        ctx.present = None
        if not c and present is not None and ranking is not None:  # signed-constant where present?
            c = state.present_magnitude(weight, present)
            ctx.present = present if c else None
        if c:  # alpha = sum(c * m) / k = c exactly (float64 sums of k copies of a float32 are exact)
            # (in a sparse source: when the mask keeps present weights only, which the caller checks)
            state.tracker.masked_weight(w, s if ranking is None else ranking, k, flat_out, threads)
            ctx.alpha, ctx.mask = c, None
        else:
            ctx.mask = state.pool.take("mask", s.shape, w.dtype)
            state.tracker.mask(s if ranking is None else ranking, k, ctx.mask)  # (ranking: as MaskedWeight's)
            ctx.alpha = kernels.binarized_weight(w, ctx.mask, k, flat_out)
        grad = state.pool.take("grad", weight.shape, w.dtype)
        ctx.fused, ctx.k = (w, s, flat_out, grad, torch.from_numpy(grad), threads), k
        result = torch.from_numpy(out)
        # the output too: the signed-constant backward reads it, and autograd then checks it is unchanged
        ctx.save_for_backward(weight, scores, result)
        return result

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        kernels = _kernels()

        weight, scores, _ = ctx.saved_tensors  # (also autograd's check that none changed in place since)
        fused, ctx.fused = ctx.fused, None  # the graph may outlive the step: let the pool have the arrays back
        mask, ctx.mask = ctx.mask, None
        if fused is None or not grad.is_cpu:  # a second backward pass through a retained graph
            with torch.enable_grad():
                s = scores.detach().requires_grad_(True)
                reference = binarized_weight(weight, GetSubnet.apply(s.abs(), ctx.k), ctx.k)
                return None, torch.autograd.grad(reference, s, grad)[0], None, None, None, None
        w, s, effective, out, out_tensor, threads = fused
        g = _flat(grad.to(weight.dtype))
        if ctx.present is not None:  # constant where present: the general gradient, its mask read from W * m
            kernels.effective_binarized_grad(g, w, s, effective, ctx.alpha, ctx.k, out.reshape(-1))
        elif mask is None:  # (its parallel form takes the thread count as its chunk count)
            run_kernel(kernels.constant_binarized_grad, kernels.constant_binarized_grad, threads, g, effective, s,
                       ctx.alpha, ctx.k, out.reshape(-1))
        else:
            kernels.binarized_grad(g, w, s, mask, ctx.alpha, ctx.k, out.reshape(-1))
        return None, out_tensor, None, None, None, None


def _identity(*tensors: torch.Tensor) -> tuple:
    """Which tensors, in which state: changes when one is replaced or changed in place."""
    return tuple((id(t), t.data_ptr(), t._version) for t in tensors)


class RoundedMaskedWeight(torch.autograd.Function):
    """Gem-Miner's ``weight * (StraightThroughRound(scores) * alive)`` fused on CPU, bit for bit: one pass
    each way instead of four. The forward pass also counts the weights that are on and leaves
    ``(identity of scores and alive, count)`` in ``state.last_count`` for the regulariser's switch."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, scores: torch.Tensor, alive: torch.Tensor, state: KernelState):
        kernels = _kernels()

        ctx.save_for_backward(weight, scores, alive)
        w, s, a = state.view("weight", weight), state.view("scores", scores), state.view("alive", alive)
        out = state.pool.take("weight", weight.shape, w.dtype)
        threads = kernel_threads(w.shape[0])
        on = run_kernel(kernels.rounded_masked_weight, kernels.rounded_masked_weight_parallel, threads, w, s, a,
                        out.reshape(-1))
        state.last_count = (_identity(scores, alive), int(on))
        grad = state.pool.take("grad", weight.shape, w.dtype)
        ctx.fused = (w, a, grad, torch.from_numpy(grad), threads)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        kernels = _kernels()

        weight, scores, alive = ctx.saved_tensors
        fused, ctx.fused = ctx.fused, None
        if fused is None or grad.dtype != weight.dtype or not grad.is_cpu:
            return None, grad * weight * alive, None, None
        w, a, out, out_tensor, threads = fused
        run_kernel(kernels.alive_straight_through_grad, kernels.alive_straight_through_grad_parallel, threads,
                   _flat(grad), w, a, out.reshape(-1))
        return None, out_tensor, None, None


class AliveSquareSum(torch.autograd.Function):
    """``scale * sum((scores * alive)^2)`` (Gem-Miner's regulariser), one pass each way on CPU: the value
    summed in float64, the gradient bit for bit autograd's of ``scale * (scores * alive).pow(2).sum()``."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, alive: torch.Tensor, scale: float, state: KernelState):
        kernels = _kernels()

        ctx.save_for_backward(scores, alive)
        ctx.scale, ctx.state = scale, state
        total = kernels.alive_square_sum(state.view("scores", scores), state.view("alive", alive))
        return torch.tensor(scale * total, dtype=scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        kernels = _kernels()

        scores, alive = ctx.saved_tensors
        state = ctx.state
        s = state.view("scores", scores)
        out = state.pool.take("l2-grad", scores.shape, s.dtype)
        scale = s.dtype.type(float(grad)) * s.dtype.type(ctx.scale)  # rounded as autograd's grad * lambda
        kernels.alive_square_grad(scale, s, state.view("alive", alive), out.reshape(-1))
        return torch.from_numpy(out), None, None, None


class StraightThroughBernoulli(torch.autograd.Function):
    """Forward: a Bernoulli mask drawn from ``probs`` (given, as a bool tensor). Backward: identity in p
    (Zhou et al. 2019). The reference path of :class:`SampledMaskedWeight`."""

    @staticmethod
    def forward(ctx, probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return mask.to(probs.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class SampledMaskedWeight(torch.autograd.Function):
    """A Bernoulli supermask's ``weight * m``, m ~ Bernoulli(p) with straight-through gradients in p,
    fused on CPU: ``draw(w, s, out_factor)`` (:meth:`slth.supermask.methods.Bernoulli._fused_draw`) fills
    ``out = w * m`` and ``factor = dout/dp * dp/ds`` (the halves of ``out_factor``) in one kernel call
    (:func:`slth.supermask._kernels.bernoulli_masked_weight`) and returns the shift and 1/T it drew at.
    The backward pass is one product, dL/ds = dL/dout * factor, written over the factor; a second pass
    through a retained graph recomputes the factor (the same kernel arithmetic, so the same values)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, scores: torch.Tensor, draw, state: KernelState):
        ctx.save_for_backward(weight, scores)  # (autograd's check that neither changed in place since)
        w, s = state.view("weight", weight), state.view("scores", scores)
        out_factor = state.pool.take("weight", (2,) + tuple(weight.shape), w.dtype)
        ctx.drawn = (w, s) + draw(w, s, out_factor.reshape(-1))
        ctx.factor = out_factor[1]  # held by the graph: the pool leaves the array alone until then
        return torch.from_numpy(out_factor[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight, _ = ctx.saved_tensors  # (raises if weight or scores changed in place since the forward)
        factor, ctx.factor = ctx.factor, None  # the graph may outlive the step: let the pool have the array back
        kernels = _kernels()
        if factor is None:  # a second backward pass: the first wrote its gradient over the factor
            w, s, shift, inv_t = ctx.drawn
            factor = np.empty(s.shape[0], dtype=s.dtype)
            kernels.bernoulli_factor(w, s, shift, inv_t, factor)
            return None, grad * torch.from_numpy(factor).view(grad.shape).to(grad.device), None, None
        if grad.dtype != weight.dtype or not grad.is_cpu:
            return None, grad * torch.from_numpy(factor).to(grad.device), None, None
        flat = factor.reshape(-1)
        run_kernel(kernels.product, kernels.product_parallel, kernel_threads(flat.shape[0]), _flat(grad), flat, flat)
        return None, torch.from_numpy(factor), None, None


class StraightThroughRound(torch.autograd.Function):
    """Forward: 1[s > 0.5]. Backward: identity (Gem-Miner's rounding of relaxed scores in [0, 1])."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor) -> torch.Tensor:
        return (scores > 0.5).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad


class SignedMaskedWeight(torch.autograd.Function):
    """The signed supermask's ``weight * sign(s) * topk(|s|, k)`` fused on CPU (the top-k masked weight of
    :class:`MaskedWeight`, then the negative scores' entries negated; a zero score counts as positive), with
    the plain straight-through gradient dL/ds = dL/dW_eff * W (no sign(s): the mask's levels are the signed
    scores' own). The same values as ``weight * levels`` (:class:`slth.supermask.methods.Signed`), tested bit
    for bit; scores must differ from NaN. Caller's guard: ``_numba_ok(weight, scores)`` and ``k < numel``."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, scores: torch.Tensor, k: int, state: KernelState):
        ctx.save_for_backward(weight)
        w, s = state.view("weight", weight), state.view("scores", scores)
        out = state.pool.take("weight", weight.shape, w.dtype)
        flat = out.reshape(-1)
        threads = kernel_threads(w.shape[0])
        state.tracker.masked_weight(w, s, k, flat, threads)
        _kernels().negate_where_negative(flat, s)
        # the backward pass's array, from the pool: a fresh one costs its page faults every step
        grad = state.pool.take("grad", weight.shape, w.dtype)
        ctx.fused = (w, grad, torch.from_numpy(grad), threads)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (weight,) = ctx.saved_tensors
        fused, ctx.fused = ctx.fused, None  # the graph may outlive the step: let the pool have the array back
        if fused is None or grad.dtype != weight.dtype or not grad.is_cpu:
            return None, grad * weight, None, None
        kernels = _kernels()
        w, out, out_tensor, threads = fused
        run_kernel(kernels.product, kernels.product_parallel, threads, _flat(grad), w, out.reshape(-1))
        return None, out_tensor, None, None


class CoatedMaskedWeight(torch.autograd.Function):
    """The multicoated supermask's ``weight * level`` fused on CPU: coat j keeps the top ``counts[j]`` |s|
    (ties to the first in index order; one :class:`ThresholdTracker` per coat), level = the number of coats
    keeping a weight; backward dL/ds = ((dL/dW_eff * W) * K) * sign(s), each of the K coats straight through
    |s|. The same values as the torch path of :class:`slth.supermask.methods.Multicoated`, tested bit for
    bit. Caller's guard: ``_numba_ok(weight, scores)``."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, scores: torch.Tensor, counts: tuple[int, ...],
                trackers: tuple[ThresholdTracker, ...], state: KernelState):
        kernels = _kernels()
        ctx.save_for_backward(weight, scores)
        w, s = state.view("weight", weight), state.view("scores", scores)
        out = state.pool.take("weight", weight.shape, w.dtype)
        flat = out.reshape(-1)
        coats = len(counts)
        found = [t.threshold_count(s, k, absolute=True) for k, t in zip(counts, trackers)]
        thresholds = np.array([thr for thr, _ in found], dtype=s.dtype)
        if all(at_or_above == k for (_, at_or_above), k in zip(found, counts)):  # no tie straddles a threshold
            if coats <= kernels.FEW_COATS:  # one vectorised pass, no counts (the thresholds padded with NaN)
                padded = np.full(kernels.FEW_COATS, np.nan, dtype=s.dtype)
                padded[:coats] = thresholds
                kernels.few_coated_weight(w, s, padded, flat)
            else:
                kept = np.empty(coats, dtype=np.int64)
                kernels.coated_weight(w, s, thresholds, kept, False, flat, kept)  # every tie counts
        else:  # ties at a threshold: keep only the first ones in index order
            kept = np.empty(coats, dtype=np.int64)
            above = np.empty(coats, dtype=np.int64)
            kernels.count_above(s, thresholds, above)
            kernels.coated_weight(w, s, thresholds, np.array(counts, dtype=np.int64) - above, True, flat, kept)
        ctx.scale = float(coats)
        grad = state.pool.take("grad", weight.shape, w.dtype)  # the backward pass's array, reused
        ctx.fused = (w, s, grad, torch.from_numpy(grad))
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight, scores = ctx.saved_tensors
        fused, ctx.fused = ctx.fused, None  # the graph may outlive the step: let the pool have the array back
        if fused is None or grad.dtype != weight.dtype or not grad.is_cpu:
            return None, ((grad * weight) * ctx.scale) * scores.sign(), None, None, None
        w, s, out, out_tensor = fused
        _kernels().scaled_abs_straight_through_grad(_flat(grad), w, s, ctx.scale, out.reshape(-1))
        return None, out_tensor, None, None, None
