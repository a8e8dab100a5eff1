"""Numba kernels of a supermask step on CPU: the exact top-k threshold, the fused masked weights, and the
Bernoulli draw.

A supermask step ranks every score of a layer (235,200 first-layer scores for FC 784-300-100-10) and
builds ``W * m``; against a dense step of a small MLP that is most of the extra work. Two observations
make it cheap:

* **The threshold moves little between steps, and steadily.**  The k-th largest value lies in a band
  ``[lo, hi]`` around the predicted threshold (:class:`slth.supermask.core.ThresholdTracker`) whenever
  ``#(v > hi) < k <= #(v > hi) + #(lo <= v <= hi)``; then it is the ``(k - #(v > hi))``-th largest of the
  (few) values in the band.  One pass counts and collects, a
  selection over the band finishes.  When the band misses (the first step, a large update) the
  selection runs over every value.  The result is the exact k-th largest value either
  way; the band only decides how much is selected over.
* **One pass per tensor and direction.**  ``W * 1[|s| >= t]`` forward and ``g * W * sign(s)`` backward
  are single loops writing one output, where the tensor ops need an allocation and a pass per
  elementwise op.

Every function takes flat (1-D, contiguous) arrays of one float dtype (float32 or float64). The
top-k and edge-popup kernels return exactly what the torch/numpy reference computes (same operations in
the same order, same rounding); biprop's two kernels sum in float64 and agree with the reference to
float32 rounding.

**Threads.** Where torch runs on several threads its matrix products do, and single-threaded kernels would
become the step's bottleneck; the ``*_parallel`` kernels split the serial loops into contiguous chunks on
numba's threads, with the same results on any number of threads
(:func:`slth.supermask.core.kernel_threads` decides how many, :func:`slth.supermask.core.run_kernel`
calls them). Sums the compiler reassociates (biprop's gradient's, the Bernoulli draw's) stay one serial
loop: split, they would sum in another order; the Bernoulli draw stays serial as a whole.
"""

from __future__ import annotations

import math
import threading

import numba
import numpy as np
from llvmlite import ir as llvmlite_ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from .._jit import ensure_cache

ensure_cache(__file__)  # before any cache=True decorator: a read-only install must not fail here

from ._philox import stream_words, tie_words  # noqa: E402 - after ensure_cache: _philox's kernels are cache=True too

_BLOCK = 64

PARALLEL = threading.Lock()
"""Held around every call of a ``*_parallel`` kernel: numba's fallback threading layer (workqueue, where
neither TBB nor OpenMP is available) aborts the process when two threads launch parallel kernels at once."""


def usable_threads(threads: int) -> int:
    """``threads`` capped at the size of numba's thread pool."""
    return max(1, min(threads, numba.config.NUMBA_NUM_THREADS))


def set_threads(threads: int) -> None:
    """Run this thread's next parallel kernels on ``threads`` of numba's threads (at most its pool)."""
    numba.set_num_threads(usable_threads(threads))


@njit(cache=True, inline="always")
def _magnitude(v, absolute):
    return abs(v) if absolute else v


@njit(cache=True)
def band_count(values, absolute, lo, hi, band):
    """How many of ``values`` (of ``|values|`` if ``absolute``) exceed ``hi``, and the ones in ``[lo, hi]``
    copied to ``band`` (length >= len(values)) in index order.  Returns ``(above, in_band, has_nan)``.

    Blocks of 64 values are counted branch-free (integer sums of comparisons, which vectorise); only a
    block that holds a band value is scanned again to copy it, again without a branch per value.  A
    branch on ``v > hi`` or ``v >= lo`` would be mispredicted for about half of the values (a loop 5-10
    times slower; LLVM splits even ``(v >= lo) & (v <= hi)`` into two branches).  The
    selection within the band is left to numpy's ``partition`` (introselect): numba's own
    ``np.partition`` is about 20 times slower.
    """
    n = values.shape[0]
    above = 0
    below = 0
    nb = 0
    for start in range(0, n, _BLOCK):
        block = values[start : start + _BLOCK]  # a view: range(len) below, see _banded_pass
        a = 0  # (two sums, the band's count the rest of the block: a tenth faster than three)
        b = 0
        for j in range(block.shape[0]):
            v = _magnitude(block[j], absolute)
            a += np.int32(v > hi)
            b += np.int32(v < lo)
        above += a
        below += b
        if a + b < block.shape[0]:  # a band value (or a NaN): copy the block's band values, unconditional
            # store, conditional advance (no branch)
            for j in range(block.shape[0]):
                v = _magnitude(block[j], absolute)
                band[nb] = v
                nb += np.int64(v >= lo) & np.int64(v <= hi)
    # a NaN is neither above, in the band, nor below (every comparison with it is false)
    return above, nb, above + nb + below < n


@njit(cache=True)
def masked_weight(weight, scores, threshold, k, out):
    """out = weight * 1[|scores| >= threshold] with exactly k kept: surplus ties at the threshold are
    dropped from the end, so the first ones in index order stay.  Returns the kept count (k).

    The product with the 0/1 value (not a select) is branch-free and gives torch's ``weight * mask``
    bit for bit, signed zeros included.
    """
    n = weight.shape[0]
    kept = 0
    for i in range(n):
        keep = abs(scores[i]) >= threshold
        out[i] = weight[i] * np.float32(keep)
        kept += np.int64(keep)
    i = n - 1
    while kept > k and i >= 0:  # (kept > k only through ties when threshold is the k-th largest)
        if abs(scores[i]) == threshold:
            out[i] = weight[i] * np.float32(0.0)
            kept -= 1
        i -= 1
    return kept


@njit(cache=True, inline="always")
def _banded_pass(weight, scores, lo, hi, band_idx, out, c0, c1):
    """The one pass of :func:`masked_weight_banded` over ``[c0, c1)`` (``c0`` a multiple of the block):
    ``out = weight * 1[|s| > hi]`` there, and the indices of the scores in ``[lo, hi]``, in index order, to
    ``band_idx[c0:]``. Returns (#above hi, #below lo, #in the band)."""
    above = 0
    below = 0
    nb = 0
    for start in range(c0, c1, _BLOCK):
        # views of the block, looped over range(len): with range(start, stop) numba's index may be negative
        # as far as LLVM knows, and the loop did not vectorise (3x slower on the FC first layer)
        stop = min(c1, start + _BLOCK)
        s = scores[start:stop]
        w = weight[start:stop]
        o = out[start:stop]
        a = 0
        b = 0
        for j in range(s.shape[0]):
            v = abs(s[j])
            sure = v > hi
            o[j] = w[j] * np.float32(sure)
            a += np.int64(sure)
            b += np.int64(v < lo)
        above += a
        below += b
        if s.shape[0] - a - b:  # the block holds band values (or a NaN): record their indices
            for j in range(s.shape[0]):
                v = abs(s[j])
                band_idx[c0 + nb] = start + j
                nb += np.int64(v >= lo) & np.int64(v <= hi)
    return above, below, nb


@njit(cache=True, inline="always")
def _banded_finish(weight, scores, k, above, below, nb, band_idx, out):
    """After the pass: the threshold selected among the band values and the band entries of ``out``
    revisited; the return value of :func:`masked_weight_banded`."""
    n = weight.shape[0]
    if above + nb + below < n:
        return 2, 0.0, nb
    if not (above < k <= above + nb):
        return 1, 0.0, nb
    vals = np.empty(nb, scores.dtype)
    for j in range(nb):
        vals[j] = abs(scores[band_idx[j]])
    pos = nb - (k - above)  # ascending position of the k-th largest within the band (few values)
    threshold = np.partition(vals, pos)[pos]
    kept = above
    for j in range(nb):
        i = band_idx[j]
        keep = vals[j] >= threshold
        out[i] = weight[i] * np.float32(keep)
        kept += np.int64(keep)
    j = nb - 1
    while kept > k and j >= 0:
        if vals[j] == threshold:
            i = band_idx[j]
            out[i] = weight[i] * np.float32(0.0)
            kept -= 1
        j -= 1
    return 0, threshold, nb


@njit(cache=True)
def masked_weight_banded(weight, scores, k, lo, hi, band_idx, out):
    """:func:`masked_weight` with the threshold found in the same pass, when it lies in ``[lo, hi]``.

    One pass over ``|scores|`` writes ``out = weight * 1[|s| > hi]`` (the certainly kept weights), counts
    the scores above ``hi`` and below ``lo`` and records the indices of the scores in ``[lo, hi]`` (in
    index order, in ``band_idx``).  If the k-th largest |score| is in the band it is selected among the
    band values and only the band entries of ``out`` are revisited (ties at the threshold: the first
    ones in index order are kept).  Returns ``(status, threshold, in_band)``: status 0 done, 1 the band
    missed (``out`` is then incomplete: fall back to a full selection), 2 a NaN score.
    """
    above, below, nb = _banded_pass(weight, scores, lo, hi, band_idx, out, 0, weight.shape[0])
    return _banded_finish(weight, scores, k, above, below, nb, band_idx, out)


@njit(cache=True, inline="always")
def _chunk(n, chunks, c):
    """``[c0, c1)``, chunk ``c`` of a parallel kernel over ``n`` elements split ``chunks`` ways: contiguous, in
    order, each a whole number of blocks but the last."""
    per = ((n + chunks - 1) // chunks + _BLOCK - 1) // _BLOCK * _BLOCK
    c0 = min(n, c * per)
    return c0, min(n, c0 + per)


@njit(cache=True, parallel=True)
def masked_weight_banded_parallel(weight, scores, k, lo, hi, band_idx, out, chunks):
    """:func:`masked_weight_banded` with its pass split into ``chunks`` contiguous chunks run on numba's
    threads (each chunk's band indices go to its own stretch of ``band_idx``, then are moved together in
    chunk order, so in index order): the same operations on every element, the same results."""
    counts = np.zeros((chunks, 3), np.int64)
    for c in prange(chunks):
        c0, c1 = _chunk(weight.shape[0], chunks, c)
        a, b, m = _banded_pass(weight, scores, lo, hi, band_idx, out, c0, c1)
        counts[c, 0] = a
        counts[c, 1] = b
        counts[c, 2] = m
    above = 0
    below = 0
    nb = 0
    for c in range(chunks):
        c0 = _chunk(weight.shape[0], chunks, c)[0]
        for j in range(counts[c, 2]):  # (nb <= c0: a chunk never overwrites what is still to move)
            band_idx[nb + j] = band_idx[c0 + j]
        above += counts[c, 0]
        below += counts[c, 1]
        nb += counts[c, 2]
    return _banded_finish(weight, scores, k, above, below, nb, band_idx, out)


@njit(cache=True)
def abs_straight_through_grad(grad, weight, scores, out):
    """out = grad * weight * sign(scores): the score gradient of ``weight * GetSubnet(|scores|)``
    (straight-through mask, the sign from ``abs``), in torch's order, (grad * weight) * sign, and
    branch-free (the sign of a score is a coin flip to the branch predictor).  Scores are never NaN here:
    the forward pass refuses them."""
    for i in range(grad.shape[0]):
        s = scores[i]
        sign = np.float32(s > 0) - np.float32(s < 0)
        out[i] = (grad[i] * weight[i]) * sign


@njit(cache=True, parallel=True)
def abs_straight_through_grad_parallel(grad, weight, scores, out, chunks):
    """:func:`abs_straight_through_grad` over ``chunks`` contiguous chunks on numba's threads."""
    for c in prange(chunks):
        c0, c1 = _chunk(grad.shape[0], chunks, c)
        abs_straight_through_grad(grad[c0:c1], weight[c0:c1], scores[c0:c1], out[c0:c1])


@njit(cache=True, inline="always")
def _sign(x):
    return np.float64(x > 0) - np.float64(x < 0)


# reassociation lets LLVM vectorise the float64 sums (several partial sums); without it the scalar loop
# turns each sign into a mispredicted branch (8x slower)
_SUM_FLAGS = {"reassoc"}


@njit(cache=True, fastmath=_SUM_FLAGS)
def binarized_weight(weight, mask, k, out):
    """biprop's effective weight: out = alpha * sign(weight) * mask with alpha = sum(|weight| * mask) / k.
    Arithmetic in float64 (one rounding to the output dtype).  Returns alpha."""
    total = 0.0
    for i in range(weight.shape[0]):
        total += abs(np.float64(weight[i])) * mask[i]
    alpha = total / k
    for i in range(weight.shape[0]):
        out[i] = alpha * _sign(weight[i]) * mask[i]
    return alpha


@njit(cache=True, fastmath=_SUM_FLAGS)
def binarized_grad(grad, weight, scores, mask, alpha, k, out):
    """Score gradient of :func:`binarized_weight` with a straight-through top-k mask of |scores|:
    dL/dm_j = g_j alpha sign(w_j) + |w_j| (sum_i g_i sign(w_i) m_i) / k (the second term through alpha),
    times sign(s_j) from the abs.  Arithmetic in float64, branch-free."""
    total = 0.0
    for i in range(grad.shape[0]):
        total += np.float64(grad[i]) * _sign(weight[i]) * mask[i]
    d_alpha = total / k
    for i in range(grad.shape[0]):
        w = np.float64(weight[i])
        out[i] = (grad[i] * alpha * _sign(w) + d_alpha * abs(w)) * _sign(scores[i])


def constant_binarized_grad(grad, effective, scores, alpha, k, out, chunks=1):
    """:func:`binarized_grad` for a weight of entries +-alpha (a signed-constant weight; then biprop's
    alpha is exactly that magnitude and its effective weight is edge-popup's ``W * m``), read from the
    forward pass's ``effective`` weight instead of the weight and the mask: ``effective[i]`` is
    +-alpha where kept and a zero carrying the weight's sign where pruned, so sign(w) is its sign bit and
    m is ``effective != 0``.  The same arithmetic as :func:`binarized_grad`.

    Two kernels: the float64 sum (one serial loop whatever ``chunks``), then each element, over
    ``chunks`` contiguous chunks on numba's threads when ``chunks > 1``. The term through alpha,
    d_alpha * alpha, is computed as (sum * alpha) / k: what the single fused kernel this replaces computed
    (its compiler reassociated (sum / k) * alpha so), so the results are those of the earlier kernel, bit
    for bit."""
    shift = (_constant_binarized_total(grad, effective) * alpha) / k
    if chunks > 1:
        _constant_binarized_apply_parallel(grad, effective, scores, alpha, shift, out, chunks)
    else:
        _constant_binarized_apply(grad, effective, scores, alpha, shift, out)


@njit(cache=True, fastmath=_SUM_FLAGS)
def _constant_binarized_total(grad, effective):
    """sum_i g_i sign(w_i) m_i in float64 (reassociated: vectorised partial sums)."""
    total = 0.0
    for i in range(grad.shape[0]):
        e = np.float64(effective[i])
        total += np.float64(grad[i]) * np.copysign(1.0, e) * np.float64(e != 0)
    return total


@njit(cache=True)
def _constant_binarized_apply(grad, effective, scores, alpha, shift, out):
    """out_i = (g_i alpha sign(w_i) + shift) sign(s_i), in float64, each element alone."""
    for i in range(grad.shape[0]):
        sign_w = np.copysign(1.0, np.float64(effective[i]))
        out[i] = (grad[i] * alpha * sign_w + shift) * _sign(scores[i])


@njit(cache=True, parallel=True)
def _constant_binarized_apply_parallel(grad, effective, scores, alpha, shift, out, chunks):
    for c in prange(chunks):
        c0, c1 = _chunk(grad.shape[0], chunks, c)
        _constant_binarized_apply(grad[c0:c1], effective[c0:c1], scores[c0:c1], alpha, shift, out[c0:c1])


@njit(cache=True, fastmath=_SUM_FLAGS)
def effective_binarized_grad(grad, weight, scores, effective, alpha, k, out):
    """:func:`binarized_grad` where every kept weight is nonzero, with the mask read from the forward pass's
    ``effective`` weight (m_i = effective_i != 0) instead of a mask array: biprop over a sparse source whose
    present weights are +-alpha (its absent ones 0), where the forward pass wrote ``W * m`` and no mask. The
    same arithmetic as :func:`binarized_grad`, term for term (the same bits: tests/test_supermask_source.py)."""
    total = 0.0
    for i in range(grad.shape[0]):
        total += np.float64(grad[i]) * _sign(weight[i]) * np.float64(effective[i] != 0)
    d_alpha = total / k
    for i in range(grad.shape[0]):
        w = np.float64(weight[i])
        out[i] = (grad[i] * alpha * _sign(w) + d_alpha * abs(w)) * _sign(scores[i])


@njit(cache=True)
def present_constant_magnitude(weight, present):
    """c if every weight where ``present`` is nonzero is +-c (c positive and finite) and every other weight is
    +0 (a signed-constant weight in a sparse source: absent weights are zeroed), else 0."""
    n = weight.shape[0]
    c = 0.0
    for i in range(n):
        if present[i] != 0:
            c = abs(np.float64(weight[i]))
            break
    if not (c > 0 and c < np.inf):
        return 0.0
    real = weight.dtype.type
    cc, zero, one = real(c), real(0.0), real(1.0)
    same = True
    for i in range(n):
        w = weight[i]
        same &= (abs(w) == cc) if present[i] != 0 else ((w == zero) & (np.copysign(one, w) > zero))
    return c if same else 0.0


@njit(cache=True)
def constant_magnitude(weight):
    """|weight[0]| if every |weight| equals it and it is positive and finite (a signed-constant weight),
    else 0."""
    n = weight.shape[0]
    if n == 0:
        return 0.0
    c = abs(weight[0])
    if not (c > 0 and c < np.inf):
        return 0.0
    same = True
    for i in range(n):
        same &= abs(weight[i]) == c
    return c if same else 0.0


@njit(cache=True)
def rounded_masked_weight(weight, scores, alive, out):
    """Gem-Miner's effective weight: out = weight * (1[scores > 0.5] * alive), in torch's order (bit for
    bit ``weight * (StraightThroughRound(s) * alive)``).  Returns how many weights are on."""
    on = 0
    for i in range(weight.shape[0]):
        m = np.float32(scores[i] > 0.5) * np.float32(alive[i])
        out[i] = weight[i] * m
        on += np.int64(m)
    return on


@njit(cache=True)
def alive_straight_through_grad(grad, weight, alive, out):
    """Its score gradient: out = (grad * weight) * alive (the rounding passes the gradient straight
    through), in torch's order."""
    for i in range(grad.shape[0]):
        out[i] = (grad[i] * weight[i]) * np.float32(alive[i])


@njit(cache=True, parallel=True)
def rounded_masked_weight_parallel(weight, scores, alive, out, chunks):
    """:func:`rounded_masked_weight` over ``chunks`` contiguous chunks on numba's threads (the count is an
    integer sum: the same on any number of threads)."""
    on = np.zeros(chunks, np.int64)
    for c in prange(chunks):
        c0, c1 = _chunk(weight.shape[0], chunks, c)
        on[c] = rounded_masked_weight(weight[c0:c1], scores[c0:c1], alive[c0:c1], out[c0:c1])
    return on.sum()


@njit(cache=True, parallel=True)
def alive_straight_through_grad_parallel(grad, weight, alive, out, chunks):
    """:func:`alive_straight_through_grad` over ``chunks`` contiguous chunks on numba's threads."""
    for c in prange(chunks):
        c0, c1 = _chunk(grad.shape[0], chunks, c)
        alive_straight_through_grad(grad[c0:c1], weight[c0:c1], alive[c0:c1], out[c0:c1])


@njit(cache=True, fastmath=_SUM_FLAGS)
def alive_square_sum(scores, alive):
    """sum((scores * alive)^2) in float64."""
    total = 0.0
    for i in range(scores.shape[0]):
        v = np.float64(scores[i]) * np.float64(alive[i])
        total += v * v
    return total


@njit(cache=True)
def alive_square_grad(scale, scores, alive, out):
    """Gradient of sum((scores * alive)^2) times ``scale`` (the upstream gradient times lambda, in the
    scores' dtype): out = (scale * (2 * x)) * alive with x = scores * alive -- autograd's order and
    dtype for ``lambda * (s * alive).pow(2).sum()``, so bit for bit its result."""
    two = scale * 0 + 2  # 2 in scale's dtype
    for i in range(scores.shape[0]):
        a = np.float32(alive[i])
        out[i] = (scale * (two * (scores[i] * a))) * a


# ---------------------------------------------------------------------------------------------------
# Bernoulli supermasks: p = sigmoid((s + b) / T), m ~ Bernoulli(p), drawn from Philox in the same call
#
# The loops must vectorise (8 float32 lanes with AVX2): the per-element helpers below are separate
# functions that LLVM inlines (numba-level ``inline="always"`` stopped the vectoriser), and
# ``error_model="numpy"`` drops the division-by-zero checks that would add a branch per element.
# ---------------------------------------------------------------------------------------------------


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose bit pattern is the int32 ``bits`` (an LLVM bitcast; vectorises)."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvmlite_ir.FloatType())

    return types.float32(types.int32), codegen


_F = np.float32


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _exp32(x):
    """exp(x) in float32 to 1-2 ulp over the normal range (Cody-Waite reduction by ln 2 and the
    Cephes ``expf`` polynomial), branch-free so that loops calling it vectorise; the argument is clamped
    to [-87, 88] (results below 1.6e-38 are not needed here) and NaN propagates."""
    x = x if not x < _F(-87.0) else _F(-87.0)  # written so that NaN fails both tests and stays NaN
    x = x if not x > _F(88.0) else _F(88.0)
    n = np.rint(x * _F(1.44269504088896341))
    r = x - n * _F(0.693359375) - n * _F(-2.12194440e-4)
    p = _F(1.9875691500e-4)
    p = p * r + _F(1.3981999507e-3)
    p = p * r + _F(8.3334519073e-3)
    p = p * r + _F(4.1665795894e-2)
    p = p * r + _F(1.6666665459e-1)
    p = p * r + _F(5.0000001201e-1)
    y = p * (r * r) + r + _F(1.0)
    return y * _float32_from_bits(np.int32((np.int32(n) + np.int32(127)) << np.int32(23)))


def sigmoid(z):
    """1 / (1 + exp(-z)) in ``z``'s float type (numba only; float32 through :func:`_exp32`)."""
    raise NotImplementedError("sigmoid is a numba function")


@overload(sigmoid, jit_options={"cache": True, "error_model": "numpy"})
def _sigmoid_impl(z):
    if z == types.float32:
        return lambda z: _F(1.0) / (_F(1.0) + _exp32(-z))
    if z == types.float64:
        return lambda z: 1.0 / (1.0 + math.exp(-z))
    return None


@njit(cache=True, error_model="numpy")
def sigmoid_array(z, out):
    """out = sigmoid(z) elementwise: the kernels' sigmoid, for tests."""
    for i in range(z.shape[0]):
        out[i] = sigmoid(z[i])


@njit(cache=True, error_model="numpy")
def _probability(scores, i, shift, inv_t):
    """p_i = sigmoid((s_i + b) * (1/T)) -- how every Bernoulli kernel computes it, so all agree."""
    return sigmoid((scores[i] + shift) * inv_t)


_CHUNK = 64  # values summed in the scores' dtype before adding to a float64 total


@njit(cache=True, fastmath=_SUM_FLAGS, error_model="numpy")
def probability_sums(scores, shift, inv_t):
    """(sum p, sum p (1 - p)) over a layer, p as :func:`_probability` with ``shift`` and ``inv_t`` rounded
    to the scores' dtype: the expected kept count and its derivative times T, for the Newton solve of the
    shift.  Summed in the dtype over chunks of 64 values (the float32 lanes vectorise) and in float64
    across chunks."""
    n = scores.shape[0]
    one = scores.dtype.type(1.0)
    b, it = scores.dtype.type(shift), scores.dtype.type(inv_t)
    total = 0.0
    slope = 0.0
    for start in range(0, n, _CHUNK):
        t = scores.dtype.type(0.0)
        v = scores.dtype.type(0.0)
        for i in range(start, min(n, start + _CHUNK)):
            p = _probability(scores, i, b, it)
            t += p
            v += p * (one - p)
        total += t
        slope += v
    return total, slope


@njit(cache=True, error_model="numpy")
def _sample(weight, scores, i, shift, inv_t, u, out_factor, n):
    """Element i of :func:`bernoulli_masked_weight`'s first pass: out_i, factor_i, and ``u[i]`` = 1 if the
    byte ties (``u_i = floor(256 p_i)``; out_i then holds frac(256 p_i) until the tie is decided), else 0.
    Returns (p_i, p_i (1 - p_i))."""
    real = scores.dtype.type
    p = _probability(scores, i, shift, inv_t)
    w = weight[i]
    a = p * real(256.0)
    whole = np.floor(a)
    b = real(u[i])
    out_factor[i] = w if b < whole else (w * real(0.0) if b > whole else a - whole)  # exact: same binade
    u[i] = np.uint8(b == whole)
    q = p * (real(1.0) - p)
    out_factor[n + i] = w * q * inv_t
    return p, q


@njit(cache=True, error_model="numpy")
def _ties(u, n, index):
    """Where ``u[:n]`` is nonzero, into ``index``; returns how many. Eight bytes at a time: ties are one
    byte in 256."""
    eight = u[: (u.shape[0] // 8) * 8].view(np.uint64)
    count = 0
    for j in range(eight.shape[0]):
        if eight[j]:
            for i in range(8 * j, min(n, 8 * j + 8)):
                if u[i]:
                    index[count] = i
                    count += 1
    for i in range(8 * eight.shape[0], n):
        if u[i]:
            index[count] = i
            count += 1
    return count


@njit(cache=True, fastmath=_SUM_FLAGS, error_model="numpy")
def bernoulli_masked_weight(weight, scores, shift, inv_t, center, seed, draw, words, index, out_factor):
    """A Bernoulli supermask's forward step; for every weight i:

    * p_i = sigmoid((s_i + b) / T), as :func:`_probability`;
    * m_i = 1[U_i < p_i] with U_i = (u_i + r_i 2^-24) / 256 uniform on a 2^-32 grid, u_i byte i of the
      layer's Philox stream (key ``seed``) for draw number ``draw`` and r_i drawn only where u_i = floor(256 p_i) (one
      weight in 256; :mod:`slth.supermask._philox` defines both), so P(m_i = 1) = ceil(2^32 p_i) / 2^32;
    * ``out_factor[i]`` = w_i m_i (a pruned weight gives a zero of w_i's sign, as ``w * 0.0`` does);
    * ``out_factor[n + i]`` = w_i p_i (1 - p_i) / T, the score gradient's factor (straight-through in p:
      dL/ds_i = dL/dout_i * factor_i).

    Scratch space: ``words`` of at least ceil(n / 4) uint32, ``index`` of n int64. Three loops: the
    words (:func:`slth.supermask._philox.stream_words`, vectorised, one Philox block per 16 weights), the
    elements (vectorised; each tie flagged in its own random byte), then the ties (one weight in 256,
    each with its own Philox block). Output and factor share one array, and the flags the bytes: the
    vectoriser checks at run time that the arrays a loop writes do not overlap the others, and with one
    array more it gave up.

    Returns (sum (p_i - center), sum p_i (1 - p_i)), summed in the scores' dtype so that the loop
    vectorises at full width (float64 totals halve it; chunked totals stop the vectoriser). With
    ``center`` the target density the terms of the first sum average about zero, its partial sums stay
    small and so do their rounding errors; :func:`probability_sums` is the exact check.
    """
    n = scores.shape[0]
    real = scores.dtype.type
    b, it, c = real(shift), real(inv_t), real(center)  # (Python floats in: each numpy scalar costs a step time)
    k0, k1 = np.uint32(seed & 0xFFFFFFFF), np.uint32((seed >> 32) & 0xFFFFFFFF)
    d0, d1 = np.uint32(draw & 0xFFFFFFFF), np.uint32((draw >> 32) & 0xFFFFFFFF)
    stream_words(k0, k1, d0, d1, words[: (n + 3) // 4])
    u = words.view(np.uint8)  # byte i = bits 8 (i mod 4) .. 8 (i mod 4) + 7 of word i div 4 (little-endian)
    t = real(0.0)
    v = real(0.0)
    for i in range(n):
        p, q = _sample(weight, scores, i, b, it, u, out_factor, n)
        t += p - c
        v += q
    ties = _ties(u, n, index)
    r = words if ties <= words.shape[0] else np.empty(ties, dtype=np.uint32)  # (the words are used up)
    tie_words(k0, k1, d0, d1, index[:ties], r)
    for j in range(ties):  # few instructions a tie, so that the cache misses of many overlap
        i = index[j]
        w = weight[i]
        out_factor[i] = w if real(np.int32(r[j] >> np.uint32(8))) < out_factor[i] * real(16777216.0) else w * real(0.0)
    return t, v


@njit(cache=True, error_model="numpy")
def bernoulli_factor(weight, scores, shift, inv_t, out):
    """out_i = w_i p_i (1 - p_i) / T: the factor :func:`bernoulli_masked_weight` writes, alone."""
    real = scores.dtype.type
    b, it = real(shift), real(inv_t)
    for i in range(scores.shape[0]):
        p = _probability(scores, i, b, it)
        out[i] = weight[i] * (p * (real(1.0) - p)) * it


@njit(cache=True)
def product(a, b, out):
    """out = a * b elementwise (the Bernoulli score gradient: upstream gradient times the factor)."""
    for i in range(a.shape[0]):
        out[i] = a[i] * b[i]


@njit(cache=True, parallel=True)
def product_parallel(a, b, out, chunks):
    """:func:`product` over ``chunks`` contiguous chunks on numba's threads."""
    for c in prange(chunks):
        c0, c1 = _chunk(a.shape[0], chunks, c)
        product(a[c0:c1], b[c0:c1], out[c0:c1])


@njit(cache=True)
def negate_where_negative(out, scores):
    """out[i] = -out[i] where scores[i] < 0: a top-k masked weight (:func:`masked_weight`) becomes the signed
    supermask's ``weight * sign(scores) * mask`` (a zero score counts as positive), bit for bit what the
    product with the -1 / 0 / +1 levels gives (up to the sign of a pruned weight's zero)."""
    for i in range(out.shape[0]):
        if scores[i] < 0:
            out[i] = -out[i]


FEW_COATS = 4  # up to this many coats, few_coated_weight's single pass


@njit(cache=True)
def few_coated_weight(weight, scores, thresholds, out):
    """:func:`coated_weight` without ``limit`` (every tie counts) and without the counts, for at most
    ``FEW_COATS`` coats: ``thresholds`` holds ``FEW_COATS`` values, the unused ones NaN (no value is at or above
    NaN). One pass of four comparisons per weight, which vectorises: 0.03 against 0.11 ms on a 300 x 784
    layer. The caller knows the coats' counts from the thresholds' selection (ThresholdTracker.threshold_count).
    The same output, bit for bit: ``weight * level`` with the level a small integer (exact in any float)."""
    real = weight.dtype.type
    one, zero = real(1.0), real(0.0)
    t0, t1, t2, t3 = thresholds[0], thresholds[1], thresholds[2], thresholds[3]
    for i in range(weight.shape[0]):
        a = abs(scores[i])
        level = (((one if a >= t0 else zero) + (one if a >= t1 else zero)) + (one if a >= t2 else zero)) + (
            one if a >= t3 else zero)
        out[i] = weight[i] * level


@njit(cache=True)
def coated_weight(weight, scores, thresholds, takes, limit, out, kept):
    """The multicoated weight out = weight * level, level = the number of coats j with |s| above
    ``thresholds[j]`` (ascending: the outermost coat's first) or equal to it and, where ``limit``, among the
    first ``takes[j]`` such ties in index order (without ``limit`` every tie counts: the branch-free pass that
    serves unless ties straddle a threshold). ``kept[j]`` receives each coat's count. A coat's ties nest in
    the coat before (its budget is no larger), so the first coat that does not take a weight ends its count."""
    n = weight.shape[0]
    coats = thresholds.shape[0]
    for j in range(coats):
        kept[j] = 0
    if not limit:  # block by block, a loop per coat: integer sums of comparisons, which vectorise
        levels = np.empty(_BLOCK, dtype=np.int64)
        for start in range(0, n, _BLOCK):
            w, s, o = weight[start : start + _BLOCK], scores[start : start + _BLOCK], out[start : start + _BLOCK]
            m = w.shape[0]  # views looped over range(len): see _banded_pass
            for i in range(m):
                levels[i] = 0
            for j in range(coats):
                t = thresholds[j]
                c = 0
                for i in range(m):
                    on = np.int64(abs(s[i]) >= t)
                    levels[i] += on
                    c += on
                kept[j] += c
            for i in range(m):
                o[i] = w[i] * np.float32(levels[i])
        return
    left = takes.copy()
    for i in range(n):
        a = abs(scores[i])
        level = 0
        for j in range(coats):
            t = thresholds[j]
            if a > t:
                level += 1
            elif a == t and left[j] > 0:
                left[j] -= 1
                level += 1
            else:
                break
            kept[j] += 1
        out[i] = weight[i] * np.float32(level)


@njit(cache=True)
def count_above(scores, thresholds, out):
    """out[j] = #(|scores| > thresholds[j])."""
    for j in range(thresholds.shape[0]):
        out[j] = 0
    for i in range(scores.shape[0]):
        a = abs(scores[i])
        for j in range(thresholds.shape[0]):
            if a > thresholds[j]:
                out[j] += 1
            else:
                break


@njit(cache=True)
def scaled_abs_straight_through_grad(grad, weight, scores, scale, out):
    """out = ((grad * weight) * scale) * sign(scores): the multicoated score gradient, each of ``scale``
    coats passing the gradient straight through |s|, in the order the torch reference multiplies."""
    for i in range(grad.shape[0]):
        s = scores[i]
        sign = np.float32(s > 0) - np.float32(s < 0)
        out[i] = ((grad[i] * weight[i]) * scale) * sign
