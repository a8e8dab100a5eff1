"""Numba kernels and noise of the relaxed-gate supermasks (:class:`slth.supermask.methods.GaussianGates`,
:class:`slth.supermask.methods.HardConcreteGates`).

**The noise.** Draw number ``d`` of a layer with ``n`` weights takes the ``ceil(n / 2)`` words of the layer's
Philox4x32-10 stream at draw ``d`` (:func:`slth.supermask._philox.stream_words`, key = the layer's sample
seed); weight ``i`` takes the 16-bit half ``h_i`` = bits ``16 (i mod 2)`` to ``16 (i mod 2) + 15`` of word
``i div 2``, and its noise is a quantile of the gate's noise distribution at ``(h_i + 1/2) / 2^16``: the
standard normal's (Gaussian gates: ``eps = sigma * Q_N(.)``) or the standard logistic's, ``log(q / (1 - q))``
(hard-concrete gates). So the noise is the distribution quantised to 2^16 equally likely levels (the
normal's reach +-4.17, the logistic's +-11.8): one Philox block per 8 weights and a table look-up, where an
exact normal draw (Box-Muller: a log, a square root and a cosine per pair) cost more than a dense FC step.
Each weight's noise depends on (seed, draw, i) alone, so it is the same on any number of threads, and the
draw count travels in the layer's ``state_dict`` (resume is exact). The tables are computed once per process
in float64 by Python's ``statistics.NormalDist`` and ``math.log``.

**The kernels** compute a layer's forward step in one pass per element: the gate ``z_i``, the output
``w_i z_i``, the score gradient's factor ``w_i dz_i/ds_i`` (the backward pass is one product), the L0
penalty's gradient ``dP(z_i > 0)/ds_i`` and ``P(z_i > 0)``; then one serial pass sums the latter (float64
total over float-dtype chunks of 64: the penalty's value) and counts the open test-time gates (a sum in the
element pass stopped it vectorising, twentyfold slower). Exponentials go through
:func:`slth.supermask._kernels.sigmoid` / ``_exp32`` (branch-free, so the loops vectorise); the
``*_parallel`` kernels split the element pass into 64-aligned contiguous chunks on numba's threads (the same
operations on every element) and keep the serial sums: the same bits on any number of threads.
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

LEVELS = 1 << 16  # noise levels: a 16-bit half word per weight
BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1  # hard concrete (Louizos et al. 2018, arXiv 1712.01312, l0_layers.py)
HC_SHIFT = BETA * math.log(-GAMMA / ZETA)  # P(z > 0) = sigmoid(log_alpha - HC_SHIFT)
HC_OPEN = math.log(-GAMMA / ZETA)  # the test-time gate is open (> 0) iff log_alpha > HC_OPEN
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

_TABLES: dict[tuple[str, str], np.ndarray] = {}


def noise_table(kind: str, dtype=np.float64) -> np.ndarray:
    """The 2^16 noise levels of ``kind`` ("normal" or "logistic"), as ``dtype``: the quantile at (j + 1/2) / 2^16."""
    key = (kind, np.dtype(dtype).name)
    table = _TABLES.get(key)
    if table is None:
        q = [(j + 0.5) / LEVELS for j in range(LEVELS)]
        if kind == "normal":
            inv = NormalDist().inv_cdf
            values = [inv(x) for x in q]
        elif kind == "logistic":
            values = [math.log(x / (1.0 - x)) for x in q]
        else:
            raise ValueError(f"unknown noise kind {kind!r}")
        table = _TABLES[key] = np.array(values, dtype=np.float64).astype(dtype)
        table.setflags(write=False)
    return table


def draw_words(k0, k1, draw: int, n: int, words: np.ndarray | None = None) -> np.ndarray:
    """The ``ceil(n / 2)`` Philox words of draw ``draw`` (key words ``k0, k1``), as the module docstring says."""
    m = (n + 1) // 2
    if words is None or words.shape[0] < m:
        words = np.empty(m, dtype=np.uint32)
    stream_words(k0, k1, np.uint32(draw & 0xFFFFFFFF), np.uint32(draw >> 32), words[:m])
    return words[:m]


@njit(cache=True)
def draw_into(k0, k1, draw, words):
    """:func:`draw_words` into ``words`` (all ``ceil(n / 2)`` of them), the key words and the draw number as
    integers: one call from Python where :func:`draw_words` made four numpy scalars first (microseconds a
    layer and step)."""
    stream_words(np.uint32(k0), np.uint32(k1), np.uint32(draw & 0xFFFFFFFF), np.uint32(draw >> 32), words)


def noise_levels(words: np.ndarray, n: int) -> np.ndarray:
    """The 16-bit levels ``h_0 .. h_{n-1}`` of a draw's words (by shifts: independent of the byte order)."""
    halves = (words[:, None] >> np.array([0, 16], dtype=np.uint32)) & np.uint32(0xFFFF)
    return halves.reshape(-1)[:n].astype(np.int64)


_CHUNK = 64


@njit(cache=True, inline="always")
def _level(words, i):
    return (words[i >> 1] >> np.uint32(16 * (i & 1))) & np.uint32(0xFFFF)


_ERF = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)  # Abramowitz & Stegun 7.1.26
_ERF_P = 0.3275911


def _phi_of(real):
    a1, a2, a3, a4, a5 = (real(v) for v in _ERF)
    p, half, one, root = real(_ERF_P), real(0.5), real(1.0), real(0.7071067811865476)
    exp = _exp32 if real is np.float32 else math.exp

    def phi(x):
        z = abs(x) * root
        t = one / (one + p * z)
        tail = half * (t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5))))) * exp(-z * z)  # P(N > |x|)
        return tail if x < real(0.0) else one - tail

    return phi


def phi(x):
    """The standard normal CDF, ``0.5 erfc(-x / sqrt 2)``, by Abramowitz & Stegun 7.1.26 (absolute error below
    7.5e-8), in ``x``'s float type (numba only)."""
    raise NotImplementedError("phi is a numba function")


def gauss_density(x):
    """exp(-x^2 / 2) in ``x``'s float type (numba only; float32 through ``_exp32``)."""
    raise NotImplementedError("gauss_density is a numba function")


@overload(phi, jit_options={"cache": True, "error_model": "numpy"})
def _phi_impl(x):
    if x == types.float32:
        return _phi_of(np.float32)
    if x == types.float64:
        return _phi_of(np.float64)
    return None


@overload(gauss_density, jit_options={"cache": True, "error_model": "numpy"})
def _gauss_density_impl(x):
    if x == types.float32:
        return lambda x: _exp32(np.float32(-0.5) * x * x)
    if x == types.float64:
        return lambda x: math.exp(-0.5 * x * x)
    return None


@njit(cache=True, error_model="numpy")
def phi_array(x, out):
    """out = Phi(x) elementwise: the kernels' normal CDF, for tests."""
    for i in range(x.shape[0]):
        out[i] = phi(x[i])


@njit(cache=True)
def tail_total(p):
    """The sum of ``p`` (fewer than 64 values) in its float type, in the order the vectorised loop of
    :func:`_sums` took on a machine with 64-byte vectors (AVX-512) when it read its chunks through a shifted
    index: four accumulators of ``64 / itemsize`` lanes (while that many values remain; lane 0 of the first
    starting at 0, the other lanes at -0), added lane-wise (first + second, + third, + fourth) and halved
    (lane j + lane j + h); then one accumulator of 8 lanes (lane 0 starting at the sum so far) over the
    remaining multiples of 8, halved; then the rest one by one. Spelled out (strict float order): read
    through a slice, numba's loop takes another order for float64 tails. Scratch of 64 values, allocated."""
    real = p.dtype.type
    lanes = 64 // p.itemsize
    acc = np.empty(_CHUNK, p.dtype)
    n = p.shape[0]
    t = real(0.0)
    wide = 4 * lanes
    m = n // wide * wide
    if m:
        for j in range(wide):
            acc[j] = real(-0.0)
        acc[0] = t
        for r in range(0, m, wide):
            block = p[r:r + wide]
            for j in range(wide):
                acc[j] = acc[j] + block[j]
        for j in range(lanes):
            acc[j] = ((acc[j] + acc[lanes + j]) + acc[2 * lanes + j]) + acc[3 * lanes + j]
        h = lanes // 2
        while h:
            for j in range(h):
                acc[j] = acc[j] + acc[j + h]
            h //= 2
        t = acc[0]
    e = m + (n - m) // 8 * 8
    if e > m:
        for j in range(8):
            acc[j] = real(-0.0)
        acc[0] = t
        for r in range(m, e, 8):
            block = p[r:r + 8]
            for j in range(8):
                acc[j] = acc[j] + block[j]
        for h in (4, 2, 1):
            for j in range(h):
                acc[j] = acc[j] + acc[j + h]
        t = acc[0]
    for i in range(e, n):
        t += p[i]
    return t


@njit(cache=True, fastmath={"reassoc"})
def _sums(prob, scores, open_at):
    """(sum of ``prob`` in float64 over float-dtype chunks of 64, #{scores > open_at}): one serial loop, so the
    same bits whatever the number of threads of the element pass before it. The whole chunks are read
    through slices (vectorised loads: 0.13 -> 0.03 ms on a 300 x 784 layer, float32, where a shifted index
    made numba gather them one by one), the last partial chunk by :func:`tail_total`: the same order, so
    the same bits, as the shifted-index loop before."""
    n = prob.shape[0]
    real = prob.dtype.type
    total = 0.0
    whole = n - n % _CHUNK
    for start in range(0, whole, _CHUNK):
        chunk = prob[start:start + _CHUNK]
        t = real(0.0)
        for i in range(chunk.shape[0]):
            t += chunk[i]
        total += t
    if whole < n:
        total += tail_total(prob[whole:])
    threshold = real(open_at)
    count = 0
    for i in range(n):
        count += scores[i] > threshold
    return total, count


def _sliced(element_pass):
    """``element_pass(weight, scores, words, *params, out, factor, pgrad, prob)`` over elements ``c0:c1``
    (``c0`` even) as slices, its loops from 0: loops from ``c0`` did not vectorise (numba cannot prove a
    shifted index non-negative, and its wrap-around check kept them scalar: the parallel kernels ran five
    times slower than the serial one). The same operations on every element: the same bits however the
    elements are split. (Smaller blocks, for the cache, made the pass slower where its arrays came from
    memory: 1.0 against 0.77 ms on a 300 x 784 layer. One compiled function per pass: a function argument
    would keep numba from caching the kernels.)"""

    @njit(cache=True)
    def sliced(weight, scores, words, params, out, factor, pgrad, prob, c0, c1):
        element_pass(weight[c0:c1], scores[c0:c1], words[c0 >> 1:(c1 + 1) >> 1], *params,
                     out[c0:c1], factor[c0:c1], pgrad[c0:c1], prob[c0:c1])

    return sliced


@njit(cache=True, error_model="numpy")
def _gauss_pass(weight, scores, words, table, sigma, lam, out, factor, pgrad, prob):
    real = scores.dtype.type
    n = scores.shape[0]
    s, inv_s = real(sigma), real(1.0 / sigma)
    scale = real(lam * _INV_SQRT_2PI / sigma)
    zero, one = real(0.0), real(1.0)
    for i in range(n):  # the noise, gathered from the table (a loop the vectoriser leaves scalar)
        out[i] = table[_level(words, i)]
    for i in range(n):
        mu = scores[i]
        w = weight[i]
        x = mu + s * out[i]
        z = min(max(x, zero), one)
        out[i] = w * z
        factor[i] = w if (x > zero) & (x < one) else w * zero
    for i in range(n):  # a loop of its own, so that both vectorise
        r = scores[i] * inv_s
        pgrad[i] = scale * gauss_density(r)
        prob[i] = phi(r)


_gauss_sliced = _sliced(_gauss_pass)


@njit(cache=True)
def gauss_gates(weight, scores, words, table, sigma, lam, out, factor, pgrad, prob):
    """Gaussian gates' forward step; for every weight i (mu_i = scores[i], eps_i = sigma * table[h_i]):
    ``out[i]`` = w_i z_i with z_i = clamp(mu_i + eps_i, 0, 1); ``factor[i]`` = w_i dz_i/dmu_i = w_i on
    0 < mu_i + eps_i < 1, else a zero of w_i's sign; ``pgrad[i]`` = lam d Phi(mu_i / sigma) / dmu_i;
    ``prob[i]`` = Phi(mu_i / sigma) = P(z_i > 0). Returns (sum_i prob_i, #{mu_i > 0}): the expected open
    count and the open test-time gates."""
    _gauss_sliced(weight, scores, words, (table, sigma, lam), out, factor, pgrad, prob, 0, scores.shape[0])
    return _sums(prob, scores, 0.0)


@njit(cache=True, parallel=True)
def gauss_gates_parallel(weight, scores, words, table, sigma, lam, out, factor, pgrad, prob, chunks):
    """:func:`gauss_gates`, its element pass over ``chunks`` contiguous chunks on numba's threads."""
    for c in prange(chunks):
        c0, c1 = _chunk(scores.shape[0], chunks, c)
        _gauss_sliced(weight, scores, words, (table, sigma, lam), out, factor, pgrad, prob, c0, c1)
    return _sums(prob, scores, 0.0)


@njit(cache=True, error_model="numpy")
def _hc_pass(weight, scores, words, table, lam, out, factor, pgrad, prob):
    real = scores.dtype.type
    n = scores.shape[0]
    inv_beta, gamma, span = real(1.0 / BETA), real(GAMMA), real(ZETA - GAMMA)
    shift, scale = real(HC_SHIFT), real(lam)
    slope = span * inv_beta
    zero, one = real(0.0), real(1.0)
    for i in range(n):  # the noise, gathered from the table (a loop the vectoriser leaves scalar)
        out[i] = table[_level(words, i)]
    for i in range(n):
        a = scores[i]
        w = weight[i]
        g = sigmoid((out[i] + a) * inv_beta)
        x = g * span + gamma
        z = min(max(x, zero), one)
        out[i] = w * z
        factor[i] = w * (slope * (g * (one - g))) if (x > zero) & (x < one) else w * zero
    for i in range(n):  # a loop of its own, so that both vectorise
        p = sigmoid(scores[i] - shift)
        pgrad[i] = scale * (p * (one - p))
        prob[i] = p


_hc_sliced = _sliced(_hc_pass)


@njit(cache=True)
def hard_concrete_gates(weight, scores, words, table, lam, out, factor, pgrad, prob):
    """Hard-concrete gates' forward step; for every weight i (log alpha_i = scores[i], L_i = table[h_i]):
    ``out[i]`` = w_i z_i with z_i = clamp(g_i (zeta - gamma) + gamma, 0, 1), g_i = sigmoid((L_i + log alpha_i)
    / beta); ``factor[i]`` = w_i dz_i/dlog alpha_i; ``prob[i]`` = p_i = P(z_i > 0) = sigmoid(log alpha_i - beta
    log(-gamma / zeta)), ``pgrad[i]`` = lam dp_i/dlog alpha_i. Returns (sum_i p_i, #{log alpha_i >
    log(-gamma / zeta)}): the expected open count and the open test-time gates."""
    _hc_sliced(weight, scores, words, (table, lam), out, factor, pgrad, prob, 0, scores.shape[0])
    return _sums(prob, scores, HC_OPEN)


@njit(cache=True, parallel=True)
def hard_concrete_gates_parallel(weight, scores, words, table, lam, out, factor, pgrad, prob, chunks):
    """:func:`hard_concrete_gates`, its element pass over ``chunks`` contiguous chunks on numba's threads."""
    for c in prange(chunks):
        c0, c1 = _chunk(scores.shape[0], chunks, c)
        _hc_sliced(weight, scores, words, (table, lam), out, factor, pgrad, prob, c0, c1)
    return _sums(prob, scores, HC_OPEN)


@njit(cache=True)
def product_plus(grad, factor, scale, pgrad, out):
    """out = grad * factor + scale * pgrad elementwise: a gate layer's score gradient, the weight path's and
    the L0 penalty's in one pass."""
    real = factor.dtype.type
    c = real(scale)
    for i in range(grad.shape[0]):
        out[i] = grad[i] * factor[i] + c * pgrad[i]


@njit(cache=True, parallel=True)
def product_plus_parallel(grad, factor, scale, pgrad, out, chunks):
    """:func:`product_plus` over ``chunks`` contiguous chunks on numba's threads."""
    for c in prange(chunks):
        c0, c1 = _chunk(grad.shape[0], chunks, c)
        product_plus(grad[c0:c1], factor[c0:c1], scale, pgrad[c0:c1], out[c0:c1])
