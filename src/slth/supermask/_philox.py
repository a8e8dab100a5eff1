"""Philox4x32-10 (Salmon, Moraes, Dror & Shaw, SC 2011): the counter-based generator of Random123, cuRAND
and TensorFlow, in numba.

A counter-based generator is a keyed bijection of a 128-bit counter: block ``c`` of a stream is
``philox(c, key)``, with no state carried from one block to the next. A numba loop can therefore draw
the random bits of element ``i`` in the pass that uses them, vectorised across elements -- which is what
makes Bernoulli supermask sampling cheap (:func:`slth.supermask._kernels.bernoulli_masked_weight`);
``torch.rand`` alone cost half a dense FC training step.

**The words of a draw.** :func:`stream_words` fills ``m`` words for key ``(k0, k1)`` and draw number
``d`` from the blocks at counters ``(b, d mod 2^32, d div 2^32, 0)``, ``b = 0, 1, ...``: with
``q = m div 4``, word ``j < 4q`` is word ``j div q`` of block ``j mod q`` (four contiguous quarters, one word
of each block, so a loop over blocks writes contiguous memory and vectorises), and the last ``m - 4q < 4``
words are words 0, 1, 2 of block ``q``.

**A Bernoulli mask** (:func:`slth.supermask._kernels.bernoulli_masked_weight`) of a layer with ``n``
weights, key = the layer's 63-bit sample seed (low word first), draw number ``d`` = masks it drew before:
weight ``i`` takes byte ``u_i`` = bits ``8 (i mod 4)`` to ``8 (i mod 4) + 7`` of word ``i div 4`` of the
``ceil(n / 4)`` words of the draw, and is kept if ``u_i < floor(256 p_i)``. Where ``u_i = floor(256 p_i)``
(one weight in 256) it takes ``r_i`` = the top 24 bits of word 0 of the block at counter
``(i, d mod 2^32, d div 2^32, 1)`` (:func:`tie_words`) and is kept if ``r_i < frac(256 p_i) 2^24``. So the
mask compares ``p_i`` with a uniform on a 2^-32 grid and ``P(m_i = 1) = ceil(2^32 p_i) / 2^32``, with one
Philox block per 16 weights.

Known-answer vectors of Random123's ``tests/kat_vectors`` are checked in ``tests/test_bernoulli_sampler.py``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .._jit import ensure_cache

ensure_cache(__file__)  # before any cache=True decorator: a read-only install must not fail here

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint32(0x9E3779B9)  # Weyl key increments (golden ratio, sqrt(3) - 1)
_W1 = np.uint32(0xBB67AE85)
_LOW = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)


@njit(cache=True, inline="always")
def _round(c0, c1, c2, c3, k0, k1):
    p0 = _M0 * np.uint64(c0)
    p1 = _M1 * np.uint64(c2)
    return (np.uint32(np.uint32(p1 >> _32) ^ c1 ^ k0), np.uint32(p1 & _LOW),
            np.uint32(np.uint32(p0 >> _32) ^ c3 ^ k1), np.uint32(p0 & _LOW))


@njit(cache=True, inline="always")  # inlined at numba level: the loops calling it vectorise across blocks
def philox4x32(c0, c1, c2, c3, k0, k1):
    """The four 32-bit words of Philox4x32 with 10 rounds at counter ``(c0..c3)`` and key ``(k0, k1)``
    (all ``np.uint32``)."""
    for _ in range(9):
        c0, c1, c2, c3 = _round(c0, c1, c2, c3, k0, k1)
        k0, k1 = np.uint32(k0 + _W0), np.uint32(k1 + _W1)
    return _round(c0, c1, c2, c3, k0, k1)


class PhiloxStream:
    """A layer's stream: its seed (below 2^64) and how many draws were taken from it.

    A plain object, not module state: the draw count is read and bumped on every training forward pass,
    and ``nn.Module`` attribute access costs microseconds each time."""

    __slots__ = ("seed", "key", "draws")

    def __init__(self, seed: int):
        self.key = key_words(seed)
        self.seed = int(seed) - (1 << 64 if seed >= 1 << 63 else 0)  # as an int64 for the kernels (same bits)
        self.draws = 0

    def next_draw(self) -> int:
        """The number of the next draw, counted as taken."""
        d = self.draws
        self.draws = d + 1
        return d

    def counter(self, draw: int) -> tuple[np.uint32, np.uint32, np.uint32, np.uint32]:
        """(k0, k1, d0, d1) of draw number ``draw``: the key words and the draw's two counter words."""
        return self.key[0], self.key[1], np.uint32(draw & 0xFFFFFFFF), np.uint32(draw >> 32)

    @staticmethod
    def bytes(n: int, counter: tuple) -> np.ndarray:
        """The bytes ``u_0 .. u_{n-1}`` of a draw (``counter`` from :meth:`counter`; module docstring), as uint8,
        computed by shifts (independent of the machine's byte order)."""
        words = np.empty((n + 3) // 4, dtype=np.uint32)
        stream_words(*counter, words)
        shifts = np.array([0, 8, 16, 24], dtype=np.uint32)
        return ((words[:, None] >> shifts) & np.uint32(255)).astype(np.uint8).reshape(-1)[:n]


def key_words(seed: int) -> tuple[np.uint32, np.uint32]:
    """A stream's key from a seed below 2^64: (low word, high word)."""
    seed = int(seed)
    if not 0 <= seed < 1 << 64:
        raise ValueError(f"a Philox seed must lie in [0, 2^64), got {seed}")
    return np.uint32(seed & 0xFFFFFFFF), np.uint32(seed >> 32)


@njit(cache=True)
def stream_words(k0, k1, d0, d1, out):
    """``out[j]`` = word j of the ``m = len(out)`` words of a draw, laid out as the module docstring says
    (``d0, d1``: the draw number's low and high word)."""
    n = out.shape[0]
    q = n // 4
    zero = np.uint32(0)
    for b in range(q):
        x0, x1, x2, x3 = philox4x32(np.uint32(b), d0, d1, zero, k0, k1)
        out[b] = x0
        out[q + b] = x1
        out[2 * q + b] = x2
        out[3 * q + b] = x3
    if n > 4 * q:
        x0, x1, x2, x3 = philox4x32(np.uint32(q), d0, d1, zero, k0, k1)
        out[4 * q] = x0
        if n > 4 * q + 1:
            out[4 * q + 1] = x1
        if n > 4 * q + 2:
            out[4 * q + 2] = x2


@njit(cache=True)
def tie_words(k0, k1, d0, d1, index, out):
    """``out[j]`` = word 0 of the block at counter ``(index[j], d0, d1, 1)`` (the tie-breaking draws)."""
    one = np.uint32(1)
    for j in range(index.shape[0]):
        x0, _, _, _ = philox4x32(np.uint32(index[j]), d0, d1, one, k0, k1)
        out[j] = x0
