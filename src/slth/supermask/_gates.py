"""Numba kernels and noise of the relaxed-gate supermasks (:class:`slth.supermask.methods.GaussianGates`,
:class:`slth.supermask.methods.HardConcreteGates`).

**The noise.** Draw number ``d`` of a layer with ``n`` weights takes the ``ceil(n / 4)`` words of the layer's
Philox4x32-10 stream at draw ``d`` (:func:`slth.supermask._philox.stream_words`, key = the layer's sample
seed); weight ``i`` takes the byte ``h_i`` = bits ``8 (i mod 4)`` to ``8 (i mod 4) + 7`` of word ``i div 4``
(the stream's bytes, :meth:`slth.supermask._philox.PhiloxStream.bytes`: the Bernoulli masks' layout), and its
noise is level ``h_i`` of the gate's noise distribution cut into 2^8 slices of equal probability, each level the
mean of its slice: ``E[X | Q(h / 256) < X < Q((h + 1) / 256)]`` for the standard normal (Gaussian gates: ``eps
= sigma * level``) and for the standard logistic ``log(u / (1 - u))``, ``u`` ~ U(0, 1) (hard-concrete gates).
Slice means keep the distribution's mean exact (0) and its variance to 0.9993 of the normal's (0.9974 of the
logistic's); the levels reach +-2.97 (normal) and +-6.54 (logistic), the means of the outermost slices.

Why 2^8 levels, one Philox block per 16 weights and a 1 KiB table: the noise was most of a gate step's cost over
edge-popup's. At 2^16 levels (the quantile at ``(h + 1/2) / 2^16``, until 2026-12-07) the table took 256 KiB, and
in a training step its random look-ups filled L1 from L2 at the cache's bandwidth (0.13 ms alone on FC's first
layer, more in a step) and the Philox words took 0.10 ms: FC's step ratio to dense was 1.46 where a 1 KiB
table and half the words gave 1.37 (interleaved, same process). Each weight's noise depends on (seed, draw, i)
alone, so it is the same on any number of threads, and the draw count travels in the layer's ``state_dict``
(resume is exact). The tables are computed once per process in float64 by Python's ``statistics.NormalDist``
and ``math.log`` / ``math.log1p``.

**The kernels.** A layer's forward step is one kernel: the noise gathered from the table, then one pass per
element computing the gate ``z_i``, the output ``w_i z_i`` and what the backward pass needs (Gaussian gates:
whether ``z_i`` is strictly inside (0, 1), one byte; hard-concrete gates: the factor ``w_i dz_i/ds_i``), and a
count of the open test-time gates. The backward pass is one kernel too: the upstream gradient times that factor
plus, while the L0 penalty acts, its gradient ``dP(z_i > 0)/ds_i``, computed there from the scores instead of
kept from the forward pass (an array less to write and read: in a training step the memory traffic cost as much
as the arithmetic). The penalty's value is not computed (:class:`slth.supermask.methods._Gates`: slth's variant
reports lambda times the open count). Exponentials go through :func:`slth.supermask._kernels.sigmoid` /
``_exp32`` (branch-free, so the loops vectorise); the ``*_parallel`` kernels split the element passes into
64-aligned contiguous chunks on numba's threads (the same operations on every element) and keep the count
serial: the same bits on any number of threads.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .._jit import ensure_cache

ensure_cache(__file__)  # before any cache=True decorator: a read-only install must not fail here

from ._kernels import _chunk, _exp32, sigmoid  # noqa: E402 - after ensure_cache
from ._philox import stream_words  # noqa: E402

LEVELS = 1 << 8  # noise levels: a byte per weight
BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1  # hard concrete (Louizos et al. 2018, arXiv 1712.01312, l0_layers.py)
HC_SHIFT = BETA * math.log(-GAMMA / ZETA)  # P(z > 0) = sigmoid(log_alpha - HC_SHIFT)
HC_OPEN = math.log(-GAMMA / ZETA)  # the test-time gate is open (> 0) iff log_alpha > HC_OPEN
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

_TABLES: dict[tuple[str, str], np.ndarray] = {}


def _slice_means(kind: str) -> list[float]:
    """The mean of each of the ``LEVELS`` equally likely slices of the standard normal or logistic, in float64:
    normal ``LEVELS (phi(a_j) - phi(a_(j+1)))`` with ``a_j = Q(j / LEVELS)``; logistic ``LEVELS (F(u_(j+1)) -
    F(u_j))`` with ``u_j = j / LEVELS`` and ``F(u) = u log u + (1 - u) log(1 - u)``, the antiderivative of
    ``log(u / (1 - u))``. The lower half is computed and negated for the upper (both are symmetric)."""
    half = LEVELS // 2
    if kind == "normal":
        dist = NormalDist()
        edges = [-math.inf] + [dist.inv_cdf(j / LEVELS) for j in range(1, half + 1)]  # a_0 .. a_half (= 0)
        density = [0.0 if math.isinf(a) else dist.pdf(a) for a in edges]
        low = [LEVELS * (density[j] - density[j + 1]) for j in range(half)]
    elif kind == "logistic":
        def antiderivative(u: float) -> float:
            return (u * math.log(u) if u > 0 else 0.0) + (1.0 - u) * math.log1p(-u)

        low = [LEVELS * (antiderivative((j + 1) / LEVELS) - antiderivative(j / LEVELS)) for j in range(half)]
    else:
        raise ValueError(f"unknown noise kind {kind!r}")
    return low + [-v for v in reversed(low)]


def noise_table(kind: str, dtype=np.float64) -> np.ndarray:
    """The 2^8 noise levels of ``kind`` ("normal" or "logistic"), as ``dtype``: level j is the mean of the j-th
    of 2^8 equally likely slices of the distribution (the module docstring)."""
    key = (kind, np.dtype(dtype).name)
    table = _TABLES.get(key)
    if table is None:
        table = _TABLES[key] = np.array(_slice_means(kind), dtype=np.float64).astype(dtype)
        table.setflags(write=False)
    return table


def word_count(n: int) -> int:
    """The Philox words a draw of ``n`` weights takes: a byte per weight."""
    return (n + 3) // 4


def draw_words(k0, k1, draw: int, n: int, words: np.ndarray | None = None) -> np.ndarray:
    """The ``ceil(n / 4)`` Philox words of draw ``draw`` (key words ``k0, k1``), as the module docstring says."""
    m = word_count(n)
    if words is None or words.shape[0] < m:
        words = np.empty(m, dtype=np.uint32)
    stream_words(k0, k1, np.uint32(draw & 0xFFFFFFFF), np.uint32(draw >> 32), words[:m])
    return words[:m]


@njit(cache=True)
def draw_into(k0, k1, draw, words):
    """:func:`draw_words` into ``words`` (all ``ceil(n / 4)`` of them), the key words and the draw number as
    integers: one call from Python where :func:`draw_words` made four numpy scalars first (microseconds a
    layer and step)."""
    stream_words(np.uint32(k0), np.uint32(k1), np.uint32(draw & 0xFFFFFFFF), np.uint32(draw >> 32), words)


def noise_levels(words: np.ndarray, n: int) -> np.ndarray:
    """The levels ``h_0 .. h_{n-1}`` (bytes) of a draw's words (by shifts: independent of the byte order)."""
    shifts = np.array([0, 8, 16, 24], dtype=np.uint32)
    return ((words[:, None] >> shifts) & np.uint32(0xFF)).reshape(-1)[:n].astype(np.int64)




@njit(cache=True, inline="always")
def _level(words, i):
    return (words[i >> 2] >> np.uint32(8 * (i & 3))) & np.uint32(0xFF)


def gauss_density(x):
    """exp(-x^2 / 2) in ``x``'s float type (numba only; float32 through ``_exp32``)."""
    raise NotImplementedError("gauss_density is a numba function")


@overload(gauss_density, jit_options={"cache": True, "error_model": "numpy"})
def _gauss_density_impl(x):
    if x == types.float32:
        return lambda x: _exp32(np.float32(-0.5) * x * x)
    if x == types.float64:
        return lambda x: math.exp(-0.5 * x * x)
    return None


@njit(cache=True)
def open_count(scores, open_at):
    """#{scores > open_at} (``open_at`` rounded to the scores' dtype): the open test-time gates. An integer
    count in its own serial loop: the same number however the element passes were split."""
    threshold = scores.dtype.type(open_at)
    count = 0
    for i in range(scores.shape[0]):
        count += scores[i] > threshold
    return count


# Each pass below runs over whole arrays; the ``*_parallel`` kernels hand it contiguous 64-aligned slices
# (:func:`slth.supermask._kernels._chunk`), its loops from 0: loops from a shifted start did not vectorise
# (numba cannot prove a shifted index non-negative, and its wrap-around check kept them scalar: the
# parallel kernels ran five times slower than the serial one). The same operations on every element: the
# same bits however the elements are split. (Smaller blocks, for the cache, made the pass slower where its
# arrays came from memory: 1.0 against 0.77 ms on a 300 x 784 layer.)

# ---------------------------------------------------------------- Gaussian gates
@njit(cache=True, error_model="numpy")
def _gauss_pass(weight, scores, words, table, sigma, out, inside):
    real = scores.dtype.type
    n = scores.shape[0]
    s = real(sigma)
    zero, one = real(0.0), real(1.0)
    for i in range(n):  # the noise, gathered from the table (a loop the vectoriser leaves scalar)
        out[i] = table[_level(words, i)]
    for i in range(n):
        x = scores[i] + s * out[i]
        out[i] = weight[i] * min(max(x, zero), one)
        inside[i] = (x > zero) & (x < one)


@njit(cache=True)
def gauss_gates(weight, scores, words, table, sigma, out, inside):
    """Gaussian gates' forward step; for every weight i (mu_i = scores[i], eps_i = sigma * table[h_i],
    x_i = mu_i + eps_i): ``out[i]`` = w_i z_i with z_i = clamp(x_i, 0, 1), ``inside[i]`` = (0 < x_i < 1),
    where dz_i/dmu_i = 1 (the backward pass's :func:`gauss_grad`). Returns #{mu_i > 0}, the open test-time
    gates."""
    _gauss_pass(weight, scores, words, table, sigma, out, inside)
    return open_count(scores, 0.0)


@njit(cache=True, parallel=True)
def gauss_gates_parallel(weight, scores, words, table, sigma, out, inside, chunks):
    """:func:`gauss_gates`, its element pass over ``chunks`` contiguous chunks on numba's threads."""
    for c in prange(chunks):
        c0, c1 = _chunk(scores.shape[0], chunks, c)
        _gauss_pass(weight[c0:c1], scores[c0:c1], words[c0 >> 2:(c1 + 3) >> 2], table, sigma, out[c0:c1],
                    inside[c0:c1])
    return open_count(scores, 0.0)


@njit(cache=True, error_model="numpy")
def gauss_grad(grad, weight, inside, scores, sigma, lam, c, out):
    """A Gaussian gate layer's score gradient: ``out[i]`` = grad_i w_i dz_i/dmu_i (w_i where ``inside[i]``, else
    a zero of w_i's sign) plus, unless ``c`` is 0, ``c`` times the L0 penalty's gradient lam d Phi(mu_i /
    sigma) / dmu_i = lam phi(mu_i / sigma) / sigma (``c``: the gradient reaching the penalty). Computed here,
    from the scores, instead of being kept from the forward pass: an array less to write and read."""
    real = scores.dtype.type
    zero = real(0.0)
    if c == 0.0:
        for i in range(grad.shape[0]):
            w = weight[i]
            out[i] = grad[i] * (w if inside[i] else w * zero)
        return
    inv_s = real(1.0 / sigma)
    scale = real(lam * _INV_SQRT_2PI / sigma)
    cc = real(c)
    for i in range(grad.shape[0]):
        w = weight[i]
        out[i] = grad[i] * (w if inside[i] else w * zero) + cc * (scale * gauss_density(scores[i] * inv_s))


@njit(cache=True, parallel=True)
def gauss_grad_parallel(grad, weight, inside, scores, sigma, lam, c, out, chunks):
    """:func:`gauss_grad` over ``chunks`` contiguous chunks on numba's threads."""
    for k in prange(chunks):
        c0, c1 = _chunk(grad.shape[0], chunks, k)
        gauss_grad(grad[c0:c1], weight[c0:c1], inside[c0:c1], scores[c0:c1], sigma, lam, c, out[c0:c1])


# ---------------------------------------------------------------- hard-concrete gates
@njit(cache=True, error_model="numpy")
def _hc_pass(weight, scores, words, table, out, factor):
    real = scores.dtype.type
    n = scores.shape[0]
    inv_beta, gamma, span = real(1.0 / BETA), real(GAMMA), real(ZETA - GAMMA)
    slope = span * inv_beta
    zero, one = real(0.0), real(1.0)
    for i in range(n):  # the noise, gathered from the table (a loop the vectoriser leaves scalar)
        out[i] = table[_level(words, i)]
    for i in range(n):
        w = weight[i]
        g = sigmoid((out[i] + scores[i]) * inv_beta)
        x = g * span + gamma
        out[i] = w * min(max(x, zero), one)
        factor[i] = w * (slope * (g * (one - g))) if (x > zero) & (x < one) else w * zero


@njit(cache=True)
def hard_concrete_gates(weight, scores, words, table, out, factor):
    """Hard-concrete gates' forward step; for every weight i (log alpha_i = scores[i], L_i = table[h_i]):
    ``out[i]`` = w_i z_i with z_i = clamp(g_i (zeta - gamma) + gamma, 0, 1), g_i = sigmoid((L_i + log alpha_i)
    / beta); ``factor[i]`` = w_i dz_i/dlog alpha_i. Returns #{log alpha_i > log(-gamma / zeta)}, the open
    test-time gates."""
    _hc_pass(weight, scores, words, table, out, factor)
    return open_count(scores, HC_OPEN)


@njit(cache=True, parallel=True)
def hard_concrete_gates_parallel(weight, scores, words, table, out, factor, chunks):
    """:func:`hard_concrete_gates`, its element pass over ``chunks`` contiguous chunks on numba's threads."""
    for c in prange(chunks):
        c0, c1 = _chunk(scores.shape[0], chunks, c)
        _hc_pass(weight[c0:c1], scores[c0:c1], words[c0 >> 2:(c1 + 3) >> 2], table, out[c0:c1], factor[c0:c1])
    return open_count(scores, HC_OPEN)


@njit(cache=True, error_model="numpy")
def hard_concrete_grad(grad, factor, scores, lam, c, out):
    """A hard-concrete gate layer's score gradient: ``out[i]`` = grad_i ``factor[i]`` plus, unless ``c`` is 0,
    ``c`` times the L0 penalty's gradient lam p_i (1 - p_i), p_i = P(z_i > 0) = sigmoid(log alpha_i - beta
    log(-gamma / zeta)) (``c``: the gradient reaching the penalty), computed here from the scores."""
    if c == 0.0:
        for i in range(grad.shape[0]):
            out[i] = grad[i] * factor[i]
        return
    real = scores.dtype.type
    shift, scale, one = real(HC_SHIFT), real(lam), real(1.0)
    cc = real(c)
    for i in range(grad.shape[0]):
        p = sigmoid(scores[i] - shift)
        out[i] = grad[i] * factor[i] + cc * (scale * (p * (one - p)))


@njit(cache=True, parallel=True)
def hard_concrete_grad_parallel(grad, factor, scores, lam, c, out, chunks):
    """:func:`hard_concrete_grad` over ``chunks`` contiguous chunks on numba's threads."""
    for k in prange(chunks):
        c0, c1 = _chunk(grad.shape[0], chunks, k)
        hard_concrete_grad(grad[c0:c1], factor[c0:c1], scores[c0:c1], lam, c, out[c0:c1])
