"""Kept-weights storage of a pair's second random layer, for rebuilding tickets whose random network is too large to
hold densely (``Ticket.to_module(..., storage="kept")``).

A pair's second layer ``b`` (``d_out x hidden``, hidden = ``d_in * units + n_bias``) is dense in the random network,
but the ticket keeps only the weights its masks select (about a fifth at eps 1e-3). Target weight ``(i, j)`` reads
only its own block of ``units`` columns, ``b[i, j * units : (j + 1) * units]`` (the bias units are block ``j =
d_in``, ``n_bias <= units`` columns), so :class:`KeptLinear` stores per block its subset as one word (bit ``k`` =
column ``j * units + k`` is kept; ``uint32`` for ``units <= 32``, else an ``int64`` holding 64 bits) and the kept
values in order (float32, exactly the seeded random weights), with each major line's first value's offset. Memory:
4 (or 8) bytes per target weight plus 4 per kept weight, against 4 * units per target weight densely -- for
GPT-2-small at eps 1e-3 (n = 15, units = 30) about 25 bytes per target weight instead of 120.

The data path is still the pair's: ``x -> relu(a(x)) -> b``, ``b`` applied from its kept weights (never a collapsed
effective weight). Storage order:

* ``rows`` (every Linear-like pair): target weights in row-major order ``(i, j)``; the forward walks each output
  ``i``'s blocks in order: ``y[t, i] = sum_j sum_{k in mask(i, j)} v * h[t, j * units + k]``;
* ``columns`` (an embedding's pair, whose input is a one-hot token index): ``(j, i)`` order, so a token's column
  (its ``dim`` outputs) and a tied head's logit of a token (its column against the hidden state) are contiguous.

**Kernels** (numba, ``cache=True``): each output element is summed by one thread in a fixed order (float64, rounded
to float32 once), so the results are bit-identical on any number of numba threads. The sums' order differs from
torch's dense matmul: outputs agree with the dense rebuild to float32 rounding, not bit for bit.

**Inference only**: the kernels have no backward. A forward under autograd (grad enabled and an input or the first
layer requiring grad) returns a tensor whose ``backward`` raises ``RuntimeError`` naming ``storage="dense"``;
``weight`` (the dense ``b.weight`` of a dense pair) raises ``RuntimeError`` too: no dense tensor exists. The module
runs on the CPU in float32 (numba); other devices and dtypes are refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numba import njit, prange
from numba.cpython.unsafe.numbers import trailing_zeros
from torch import nn

from .._jit import ensure_cache

ensure_cache(__file__)  # before any cache=True decorator: a read-only install must not fail here

MAX_UNITS = 64  # one 64-bit word per block: signed inputs need n <= 32 (Pensia's rule chooses n <= 32)
INFERENCE_ONLY = ("a ticket rebuilt with storage='kept' holds only its kept weights and is inference-only (no "
                  "backward); rebuild it with to_module(storage='dense') to train or differentiate through it")


@njit(cache=True, parallel=True)
def rows_forward(masks, values, offsets, units, ht, out):  # pragma: no cover - numba
    """``out[i, t] = sum_j sum_{k in masks[i, j]} values[...] * ht[j * units + k, t]`` (row-major storage)."""
    d_out, blocks = masks.shape
    tokens = ht.shape[1]
    for i in prange(d_out):
        off = offsets[i]
        for t in range(tokens):
            out[i, t] = 0.0
        for j in range(blocks):
            m = np.int64(masks[i, j])
            base = j * units
            while m != 0:
                col = base + trailing_zeros(m)
                v = np.float64(values[off])
                off += 1
                for t in range(tokens):
                    out[i, t] += v * ht[col, t]
                m &= m - 1


@njit(cache=True, parallel=True)
def columns_forward(masks, values, offsets, units, ht, out):  # pragma: no cover - numba
    """:func:`rows_forward` for column-major storage (``masks`` (blocks, d_out)): ``out[t, i]``, one token per
    thread, each output's terms in block order."""
    blocks, d_out = masks.shape
    tokens = ht.shape[1]
    for t in prange(tokens):
        for i in range(d_out):
            out[t, i] = 0.0
        off = offsets[0]
        for j in range(blocks):
            base = j * units
            for i in range(d_out):
                m = np.int64(masks[j, i])
                while m != 0:
                    out[t, i] += np.float64(values[off]) * ht[base + trailing_zeros(m), t]
                    off += 1
                    m &= m - 1


@njit(cache=True, parallel=True)
def embedding_forward(masks, values, offsets, first, idx, out):  # pragma: no cover - numba
    """An embedding pair on one-hot tokens: ``out[t, i] = sum_{k in masks[idx[t], i]} v * first[idx[t], k]``, where
    ``first[j, k]`` = relu(a.weight[j, k]) is the first layer's output on token j's one-hot input."""
    dim = masks.shape[1]
    for t in prange(idx.shape[0]):
        j = idx[t]
        off = offsets[j]
        for i in range(dim):
            m = np.int64(masks[j, i])
            acc = 0.0
            while m != 0:
                acc += np.float64(values[off]) * np.float64(first[j, trailing_zeros(m)])
                off += 1
                m &= m - 1
            out[t, i] = acc


@njit(cache=True, parallel=True)
def tied_head_forward(masks, values, offsets, first, xt, out):  # pragma: no cover - numba
    """A tied head through an embedding pair read in reverse: ``out[j, t] = sum_i xt[i, t] * e[i, j]``, where
    ``e[i, j] = sum_{k in masks[j, i]} v * first[j, k]`` is the pair's output i on token j (summed on the fly,
    never stored); one token j per thread."""
    num, dim = masks.shape
    tokens = xt.shape[1]
    for j in prange(num):
        off = offsets[j]
        for t in range(tokens):
            out[j, t] = 0.0
        for i in range(dim):
            m = np.int64(masks[j, i])
            if m == 0:
                continue
            e = 0.0
            while m != 0:
                e += np.float64(values[off]) * np.float64(first[j, trailing_zeros(m)])
                off += 1
                m &= m - 1
            for t in range(tokens):
                out[j, t] += e * xt[i, t]


@njit(cache=True)
def _to_columns(counts, values, cursor, out):  # pragma: no cover - numba
    """Rows of kept values in row-major order (``counts`` (rows, blocks) per target weight) -> their places in the
    column-major ``out``: column j's next free place is ``cursor[j]`` (advanced)."""
    rows, blocks = counts.shape
    src = 0
    for i in range(rows):
        for j in range(blocks):
            c = counts[i, j]
            dst = cursor[j]
            for q in range(c):
                out[dst + q] = values[src + q]
            cursor[j] = dst + c
            src += c


def compile_kernels() -> None:
    """Compile (or load from numba's cache) the kernels on tiny inputs (for :func:`slth._jit.warm_up`)."""
    for dtype in (np.uint32, np.int64):
        masks = np.array([[3]], dtype=dtype)
        values, offsets = np.ones(2, np.float32), np.array([0, 2], np.int64)
        ht, first = np.ones((2, 1), np.float32), np.ones((1, 2), np.float32)
        rows_forward(masks, values, offsets, 2, ht, np.zeros((1, 1)))
        columns_forward(masks, values, offsets, 2, ht, np.zeros((1, 1)))
        embedding_forward(masks, values, offsets, first, np.zeros(1, np.int64), np.zeros((1, 1)))
        tied_head_forward(masks, values, offsets, first, np.ones((1, 1), np.float32), np.zeros((1, 1)))
    _to_columns(np.ones((1, 1), np.uint8), values, np.zeros(1, np.int64), np.zeros(2, np.float32))


def block_counts(mask: np.ndarray, units: int) -> np.ndarray:
    """Kept weights per target weight (uint8, (rows, blocks)) of a block of rows of a pair's ``b`` mask."""
    return _popcount(mask_words(mask, units))


def mask_words(mask: np.ndarray, units: int) -> np.ndarray:
    """A block of rows of a pair's ``b`` mask (rows, hidden) -> one word per target weight (rows, blocks): bit k of
    word (r, j) = ``mask[r, j * units + k]``; ``uint32`` for units <= 32, else ``int64`` (64 bits)."""
    rows, hidden = mask.shape
    blocks = -(-hidden // units)
    padded = np.zeros((rows, blocks * units), dtype=bool)
    padded[:, :hidden] = mask
    nbytes = 4 if units <= 32 else 8
    packed = np.packbits(padded.reshape(rows, blocks, units), axis=-1, bitorder="little")
    words = np.zeros((rows, blocks, nbytes), dtype=np.uint8)
    words[..., : packed.shape[-1]] = packed
    native = np.uint32 if nbytes == 4 else np.int64
    return words.view("<u4" if nbytes == 4 else "<i8").reshape(rows, blocks).astype(native, copy=False)


class _NoBackward(torch.autograd.Function):
    """The kernels' result under autograd: a leaf of the graph whose backward refuses, naming the dense rebuild."""

    @staticmethod
    def forward(ctx, fn, *inputs):
        return fn()

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(INFERENCE_ONLY)


def inference_only(fn, *inputs: torch.Tensor) -> torch.Tensor:
    """``fn()`` (a kernel call returning a tensor); under autograd with any of ``inputs`` requiring grad, its result
    takes part in the graph and refuses backward."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        return _NoBackward.apply(fn, *inputs)
    return fn()


def _cpu_float32(x: torch.Tensor, what: str) -> np.ndarray:
    if x.device.type != "cpu" or x.dtype != torch.float32:
        raise ValueError(f"{what}: storage='kept' runs on the CPU in float32 (numba), got a {x.dtype} tensor on "
                         f"{x.device}; rebuild with to_module(storage='dense') for other devices or dtypes")
    return x.detach().numpy()


@dataclass
class _Filling:
    """A :class:`KeptLinear` while its rows are added: the reserved kept counts (d_out, blocks), the subset words,
    the values, each major line's first value (plus the total), each line's next free value (column order) and the
    next row expected."""

    counts: np.ndarray
    words: np.ndarray
    values: np.ndarray
    offsets: np.ndarray
    cursor: np.ndarray
    next: int = 0


class KeptLinear(nn.Module):
    """A pair's second layer (``hidden -> d_out``, no bias) holding only its kept weights (module docstring).

    Buffers: ``masks`` (the blocks' subset words; int32/int64 tensors holding the uint32/64-bit words),
    ``values`` (kept weights, float32, in storage order), ``offsets`` (int64, the first value of each major line
    (row i, or column j with ``columns=True``), plus the total). Built empty; :meth:`add_rows` takes the masked
    rows of the random layer in order and :meth:`finish` seals it."""

    def __init__(self, d_out: int, hidden: int, units: int, columns: bool = False):
        super().__init__()
        if not 1 <= units <= MAX_UNITS:
            raise ValueError(f"storage='kept' holds a block of at most {MAX_UNITS} random weights per target weight "
                             f"in one word; this pair has {units} (n = {units // 2} on signed inputs): rebuild with "
                             "to_module(storage='dense')")
        self.d_out, self.hidden, self.units, self.columns = int(d_out), int(hidden), int(units), bool(columns)
        self.blocks = -(-self.hidden // self.units)
        self._dtype = np.uint32 if units <= 32 else np.int64
        shape = (self.blocks, self.d_out) if columns else (self.d_out, self.blocks)
        self.register_buffer("masks", torch.zeros(shape, dtype=torch.int32 if units <= 32 else torch.int64))
        self.register_buffer("values", torch.zeros(0))
        self.register_buffer("offsets", torch.zeros(shape[0] + 1, dtype=torch.int64))
        self._fill: _Filling | None = None  # while being filled
        self._sealed = False

    def reserve(self, counts: np.ndarray) -> None:
        """Allocate the layer for its kept weights: ``counts`` (d_out, blocks), kept weights per target weight (the
        mask's :func:`block_counts`, all rows). Then :meth:`add_rows` writes each block of rows in its place (the
        values are never held twice, whatever the storage order)."""
        counts = np.asarray(counts)
        if counts.shape != (self.d_out, self.blocks) or self._sealed:
            raise ValueError(f"reserve takes kept counts of shape {(self.d_out, self.blocks)} once, got {counts.shape}")
        if self.columns:
            offsets = np.zeros(self.blocks + 1, np.int64)
            np.cumsum(counts.sum(axis=0, dtype=np.int64), out=offsets[1:])
        else:
            offsets = np.zeros(self.d_out + 1, np.int64)
            np.cumsum(counts.sum(axis=1, dtype=np.int64), out=offsets[1:])
        self._fill = _Filling(counts, np.zeros((self.d_out, self.blocks), self._dtype),
                              np.empty(int(offsets[-1]), np.float32), offsets, offsets[:-1].copy())

    def add_rows(self, start: int, values: np.ndarray, mask: np.ndarray) -> None:
        """Rows ``start:start + len(values)`` of the random layer (values (rows, hidden) float32) and their mask
        (bool, same shape), in order from row 0, after :meth:`reserve`."""
        fill = self._fill
        if fill is None:
            raise RuntimeError("reserve() the layer before adding rows" if not self._sealed else
                               "this kept layer is sealed (finish() was called)")
        stop = start + len(values)
        if start != fill.next or values.shape != (len(values), self.hidden) or mask.shape != values.shape:
            raise ValueError(f"rows must come in order with {self.hidden} columns: expected row {fill.next}, got "
                             f"{start} with shape {values.shape} (mask {mask.shape})")
        words = mask_words(mask, self.units)
        counts = _popcount(words)
        if not np.array_equal(counts, fill.counts[start:stop]):
            raise ValueError(f"rows {start}:{stop}: their mask keeps other weights than the reserved counts")
        fill.words[start:stop] = words
        kept = np.ascontiguousarray(values[mask], np.float32)
        if self.columns:
            _to_columns(counts, kept, fill.cursor, fill.values)
        else:
            fill.values[fill.offsets[start] : fill.offsets[stop]] = kept
        fill.next = stop

    def finish(self) -> KeptLinear:
        """Seal the layer once every row was added: masks, values and offsets become its buffers."""
        fill = self._fill
        if self._sealed:
            return self
        if fill is None or fill.next != self.d_out:
            raise ValueError(f"{0 if fill is None else fill.next} of {self.d_out} rows were added")
        words = np.ascontiguousarray(fill.words.T) if self.columns else fill.words
        self.masks = torch.from_numpy(words.view(np.int32) if words.dtype == np.uint32 else words)
        self.values = torch.from_numpy(fill.values)
        self.offsets = torch.from_numpy(fill.offsets)
        self._fill, self._sealed = None, True
        return self

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(masks as uint32 / int64 words, values, offsets) as numpy arrays for the kernels."""
        if not self._sealed:
            raise RuntimeError("this kept layer was not finished: it holds no weights yet")
        if self.masks.device.type != "cpu":
            raise ValueError(f"storage='kept' runs on the CPU (numba); this layer is on {self.masks.device}")
        masks = self.masks.numpy()
        return (masks.view(np.uint32) if masks.dtype == np.int32 else masks), self.values.numpy(), \
            self.offsets.numpy()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h @ b.T`` over the kept weights: h (..., hidden) -> (..., d_out)."""
        if h.shape[-1] != self.hidden:
            raise ValueError(f"expected {self.hidden} features in the last dimension, got {h.shape[-1]}")

        def run() -> torch.Tensor:
            ht = np.ascontiguousarray(_cpu_float32(h, "input").reshape(-1, self.hidden).T)
            masks, values, offsets = self.arrays()
            if self.columns:
                out = np.empty((ht.shape[1], self.d_out))
                columns_forward(masks, values, offsets, self.units, ht, out)
            else:
                out = np.empty((self.d_out, ht.shape[1]))
                rows_forward(masks, values, offsets, self.units, ht, out)
                out = out.T
            return torch.from_numpy(out.astype(np.float32)).reshape(*h.shape[:-1], self.d_out)

        return inference_only(run, h)

    @property
    def weight(self):
        raise RuntimeError("a pair rebuilt with storage='kept' has no dense weight tensor: it holds only its kept "
                           f"weights ({self.values.numel():,} of {self.d_out * self.hidden:,}) as bit masks and "
                           "values; rebuild with to_module(storage='dense') for a dense b.weight")

    @property
    def kept(self) -> int:
        return int(self.values.numel())

    def extra_repr(self) -> str:
        order = "columns" if self.columns else "rows"
        return f"in={self.hidden}, out={self.d_out}, units={self.units}, kept={self.kept:,}, order={order}"


_BITS = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)  # set bits per byte


def _popcount(words: np.ndarray) -> np.ndarray:
    """Set bits per word (uint8)."""
    as_bytes = words.view(np.uint8).reshape(*words.shape, words.dtype.itemsize)
    return _BITS[as_bytes].sum(axis=-1, dtype=np.uint8)


def embedding_lookup(b: KeptLinear, first: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """An embedding pair (``b`` in column order) on tokens ``idx`` (1-D int64): (tokens, dim), float32."""
    def run() -> torch.Tensor:
        masks, values, offsets = b.arrays()
        out = np.empty((idx.numel(), b.d_out))
        embedding_forward(masks, values, offsets, _cpu_float32(first, "first layer"),
                          np.ascontiguousarray(idx.numpy(), np.int64), out)
        return torch.from_numpy(out.astype(np.float32))

    return inference_only(run, first)


def tied_head(b: KeptLinear, first: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A tied head through an embedding pair (``b`` in column order): x (..., dim) -> (..., num), float32."""
    def run() -> torch.Tensor:
        masks, values, offsets = b.arrays()
        xt = np.ascontiguousarray(_cpu_float32(x, "input").reshape(-1, b.d_out).T)
        out = np.empty((masks.shape[0], xt.shape[1]))
        tied_head_forward(masks, values, offsets, _cpu_float32(first, "first layer"), xt, out)
        return torch.from_numpy(np.ascontiguousarray(out.T).astype(np.float32)).reshape(*x.shape[:-1], -1)

    return inference_only(run, x, first)
