"""The random network a ticket prunes: its layout, its seeded weights and its PyTorch modules.

Each target ``Linear(d_in -> d_out)`` becomes two random layers with a ReLU between them, as in
Pensia et al. (2020), Sec. 2.3-2.4:

* ``a`` -- :class:`BlockLinear`, the first random layer *in its block-diagonal form*: input j feeds
  its own ``units`` hidden units through scalars ``a.weight[j, m]``; hidden unit ``j * units + m``
  computes ``relu(a.weight[j, m] * x_j)``. This is the dense first layer ``M1`` of the theorem with every
  off-block entry already pruned (they can never be used). When the input can be negative, ``units =
  2n``: the first ``n`` scalars are positive (they carry ``relu(x_j)``) and the last ``n`` negative (they
  carry ``relu(-x_j)``); for nonnegative inputs ``units = n`` and all are positive. Magnitudes are
  i.i.d. U[0, 1]; the deterministic signs give each group the law of U[-1,1] conditioned on its sign.
  With a target bias, ``a.bias`` adds ``n`` constant units ``relu(beta_m) = beta_m``, beta ~ U[0, 1]:
  the bias is then approximated like a weight on a constant input of 1.
* ``b`` -- ``nn.Linear(d_in * units + n_bias, d_out, bias=False)``, dense, entries i.i.d. U[-1, 1].

Hence the products ``b.weight[k, unit] * |a.weight[j, m]|`` follow U[-1,1]·U[0,1] (``"product-relu"``),
and target weight ``W[k, j]`` is a SubsetSum over the ``n`` products of one block.

All random tensors come from ``numpy.random.Generator(PCG64(SeedSequence([seed, layer, tensor])))``:
the same seed gives bit-identical weights on every platform. A *redraw* (a block whose draw could not
reach its target, see ``construct``) replaces the block ``b.weight[k, col:col + n]`` by values from
``SeedSequence([seed, layer, 3, round, k, col])``; redraws are recorded in the ticket and replayed here.

A target ``Conv2d(c_in -> c_out, kernel kh x kw)`` becomes the same pair with channels for inputs (da
Cunha, Natale & Viennot 2022): ``a`` is :class:`BlockConv2d` -- a 1x1 convolution with ``groups=c_in``
(channel ``j * units + m`` is ``a.weight[j, m] * x_j``, pixel-wise), stored as the same ``(c_in, units)``
scalars -- and ``b`` is ``nn.Conv2d(c_in * units + n_bias -> c_out)`` with the target's kernel size,
stride, padding and dilation, entries U[-1, 1]. Target weight ``K[o, j, p, q]`` is the SubsetSum over
``b.weight[o, (j, g, m), p, q] * |a.weight[j, g*n + m]|``. A conv bias (e.g. a folded BatchNorm) uses the
``n`` constant bias channels through the single tap ``bias_tap`` only, which is inside the image for every
output pixel (see :func:`bias_tap`), so zero padding never cuts it off.

``b.weight`` rows (output units / channels) are drawn in order from one stream, so any block of rows
can be drawn alone (:func:`b_rows`, by advancing the generator) with the same bits as the whole tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .kept import KeptLinear

A_WEIGHT, A_BIAS, B_WEIGHT, REDRAW = 0, 1, 2, 3


@dataclass(frozen=True)
class LayerLayout:
    d_in: int
    d_out: int
    n: int  # random values per SubsetSum instance
    signed_input: bool  # two sign groups per input
    bias: bool
    relu_after: bool
    # Conv2d geometry; kernel == () for a Linear
    kernel: tuple = ()
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)

    def __post_init__(self):
        for name in ("kernel", "stride", "padding", "dilation"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))

    @property
    def conv(self) -> bool:
        return bool(self.kernel)

    @property
    def taps(self) -> int:
        """Kernel entries per (output, input) pair: kh * kw for a conv, 1 for a Linear."""
        return self.kernel[0] * self.kernel[1] if self.kernel else 1

    @property
    def row_size(self) -> int:
        """Random values in one row (output unit / channel) of ``b.weight``."""
        return self.hidden * self.taps

    @property
    def b_shape(self) -> tuple[int, ...]:
        return (self.d_out, self.hidden, *self.kernel)

    @property
    def groups(self) -> int:
        return 2 if self.signed_input else 1

    @property
    def units(self) -> int:
        return self.groups * self.n

    @property
    def n_bias(self) -> int:
        return self.n if self.bias else 0

    @property
    def hidden(self) -> int:
        return self.d_in * self.units + self.n_bias

    @property
    def random_params(self) -> int:
        """Block-structured count: a's block-diagonal entries (+ bias units) and b dense."""
        return self.d_in * self.units + self.n_bias + self.d_out * self.row_size

    @property
    def dense_theorem_params(self) -> int:
        """Count with the first random layer fully dense before pruning (Pensia et al.'s M1)."""
        return self.hidden * self.d_in + self.n_bias + self.d_out * self.row_size

    def to_json(self) -> dict:
        keys = ["d_in", "d_out", "n", "signed_input", "bias", "relu_after"]
        if self.conv:  # MLP layouts stay exactly as before
            keys += ["kernel", "stride", "padding", "dilation"]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, getattr(self, k)) for k in keys)}


def bias_tap(layout: LayerLayout) -> int:
    """Flat index (p * kw + q) of the kernel tap that carries a conv bias: the tap nearest the centre.

    Tap p of an output row y reads input row ``y * stride - padding + p * dilation``; it is inside the
    image for *every* y (whatever the image size) iff ``padding <= p * dilation`` and
    ``padding <= (kh - 1 - p) * dilation``. ``p = (kh - 1) // 2`` satisfies both iff
    ``padding <= ((kh - 1) // 2) * dilation`` (e.g. any "same" or unpadded conv); the target parser
    refuses a biased conv where this fails.
    """
    if not layout.conv:
        return 0
    (kh, kw), (ph, pw), (dh, dw) = layout.kernel, layout.padding, layout.dilation
    p, q = (kh - 1) // 2, (kw - 1) // 2
    if ph > p * dh or pw > q * dw:
        raise ValueError(f"no kernel tap is inside the image for every output pixel (kernel {layout.kernel}, "
                         f"padding {layout.padding}, dilation {layout.dilation})")
    return p * kw + q


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in key])))


def a_tensors(seed: int, index: int, layout: LayerLayout) -> dict[str, np.ndarray]:
    """The first random layer's seeded tensors (float32): ``a.weight`` and, with a bias, ``a.bias``."""
    mag = _rng(seed, index, A_WEIGHT).random((layout.d_in, layout.units)).astype(np.float32)
    if layout.signed_input:
        mag[:, layout.n :] *= -1
    out = {"a.weight": mag}
    if layout.bias:
        out["a.bias"] = _rng(seed, index, A_BIAS).random(layout.n_bias).astype(np.float32)
    return out


def b_rows(seed: int, index: int, layout: LayerLayout, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of ``b.weight`` before redraws, bit-identical to slicing the whole tensor.

    Each float64 uniform consumes exactly one 64-bit PCG64 output, so row ``start`` begins
    ``start * row_size`` outputs into the stream.
    """
    gen = np.random.PCG64(np.random.SeedSequence([int(seed), int(index), B_WEIGHT]))
    gen.advance(int(start) * layout.row_size)
    rows = np.random.Generator(gen).uniform(-1.0, 1.0, (int(stop) - int(start), layout.hidden, *layout.kernel))
    return rows.astype(np.float32)


def layer_tensors(seed: int, index: int, layout: LayerLayout) -> dict[str, np.ndarray]:
    """The seeded random tensors (float32) of layer ``index`` before any redraw."""
    out = a_tensors(seed, index, layout)
    out["b.weight"] = b_rows(seed, index, layout, 0, layout.d_out)
    return out


def redraw_values(seed: int, index: int, round_: int, row: int, col: int, n: int) -> np.ndarray:
    return _rng(seed, index, REDRAW, round_, row, col).uniform(-1.0, 1.0, n).astype(np.float32)


def redraw_block(layout: LayerLayout, col: int) -> tuple[int, int]:
    """A redraw record's ``col`` -> (first hidden unit, kernel tap): ``col = tap * hidden + unit``
    (for a Linear, tap = 0 and col is the hidden unit, as before)."""
    return col % layout.hidden, col // layout.hidden


def apply_redraws(seed: int, index: int, layout: LayerLayout, b_weight: np.ndarray, redraws: np.ndarray,
                  row_offset: int = 0) -> None:
    """Replay recorded redraws (rows ``(layer, round, row, col)``) of layer ``index`` in order;
    ``b_weight`` may be a block of rows starting at ``row_offset``."""
    b3 = b_weight.reshape(b_weight.shape[0], layout.hidden, layout.taps)
    for layer, round_, row, col in redraws:
        if layer == index and row_offset <= row < row_offset + b3.shape[0]:
            unit, tap = redraw_block(layout, int(col))
            b3[row - row_offset, unit : unit + layout.n, tap] = redraw_values(seed, index, round_, row, col, layout.n)


@dataclass(frozen=True)
class RealisedKernels:
    """The kernels one pruned random pair realises, in the target's units (float64 tensors): ``pos`` acts on
    relu(x) (≈ W), ``neg`` on relu(-x) (≈ -W; None without a negative group, inputs >= 0), ``bias`` (None without
    bias units). :func:`slth.construction.bound.realised_kernels` computes them; the certified bound reads them."""

    pos: torch.Tensor
    neg: torch.Tensor | None
    bias: torch.Tensor | None


class BlockLinear(nn.Module):
    """First random layer in block-diagonal form: hidden unit (j, m) = weight[j, m] * x_j (+ bias units)."""

    def __init__(self, d_in: int, units: int, n_bias: int = 0):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(d_in, units))
        self.bias = nn.Parameter(torch.zeros(n_bias)) if n_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = (x.unsqueeze(-1) * self.weight).flatten(-2)
        if self.bias is not None:
            h = torch.cat([h, self.bias.expand(*x.shape[:-1], -1)], dim=-1)
        return h

    def extra_repr(self) -> str:
        d_in, units = self.weight.shape
        n_bias = 0 if self.bias is None else self.bias.numel()
        return f"d_in={d_in}, units_per_input={units}, bias_units={n_bias}"


class BlockConv2d(nn.Module):
    """First random layer of a conv pair: a 1x1 convolution with ``groups=c_in``, stored as (c_in, units)
    scalars. Channel (j, m) = weight[j, m] * x_j pixel-wise; bias channels are constant images."""

    def __init__(self, d_in: int, units: int, n_bias: int = 0):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(d_in, units))
        self.bias = nn.Parameter(torch.zeros(n_bias)) if n_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d_in, units = self.weight.shape
        h = nn.functional.conv2d(x, self.weight.reshape(d_in * units, 1, 1, 1), groups=d_in)
        if self.bias is not None:
            n, _, height, width = h.shape
            h = torch.cat([h, self.bias.view(1, -1, 1, 1).expand(n, -1, height, width)], dim=1)
        return h

    def extra_repr(self) -> str:
        d_in, units = self.weight.shape
        n_bias = 0 if self.bias is None else self.bias.numel()
        return f"channels={d_in}, units_per_channel={units}, bias_channels={n_bias}"


STORAGES = ("dense", "kept")


class RandomPair(nn.Module):
    """``b(relu(a(x)))``: the two random layers that stand for one target Linear or Conv2d.

    ``storage="kept"`` (a Linear layout): ``b`` is a :class:`~slth.construction.kept.KeptLinear` holding only the
    weights the ticket keeps (inference only); ``columns``: its storage order (an embedding's pair)."""

    def __init__(self, layout: LayerLayout, storage: str = "dense", columns: bool = False):
        super().__init__()
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        if storage == "kept":
            if layout.conv:
                raise ValueError("storage='kept' is for Linear-like pairs; a conv pair stays dense")
            self.a = BlockLinear(layout.d_in, layout.units, layout.n_bias)
            self.b = KeptLinear(layout.d_out, layout.hidden, layout.units, columns)
        elif layout.conv:
            self.a = BlockConv2d(layout.d_in, layout.units, layout.n_bias)
            self.b = nn.Conv2d(layout.hidden, layout.d_out, layout.kernel, layout.stride, layout.padding,
                               layout.dilation, bias=False)
        else:
            self.a = BlockLinear(layout.d_in, layout.units, layout.n_bias)
            self.b = nn.Linear(layout.hidden, layout.d_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


class EmbeddingPair(RandomPair):
    """A pair standing for an ``nn.Embedding(num, dim)``: the embedding is the linear map E^T applied to the
    one-hot of the index (a nonnegative input), so the pair computes ``b(relu(a(one_hot(idx))))``."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return super().forward(nn.functional.one_hot(idx.long(), self.a.weight.shape[0]).to(self.a.weight.dtype))


ACTIVATIONS = {  # name -> (function, sup |f'|, (argmin, lower bound of min f) for the non-monotone ones)
    "gelu": (nn.functional.gelu, 1.129, (-0.75179, -0.16998)),
    "gelu_tanh": (lambda x: nn.functional.gelu(x, approximate="tanh"), 1.13, (-0.75246, -0.17005)),
    "silu": (nn.functional.silu, 1.1, (-1.27846, -0.27847)),
    "tanh": (torch.tanh, 1.0, None),
    "sigmoid": (torch.sigmoid, 0.25, None),
}


class Activation(nn.Module):
    """A parameter-free elementwise op of the target, kept as it is in the ticket: ``f(factor * x)``, the
    fixed ``factor`` (a buffer) undoing the planned rescaling first (f is not positively homogeneous)."""

    def __init__(self, fn: str, factor: float = 1.0):
        super().__init__()
        self.fn = fn
        self.register_buffer("factor", torch.tensor(float(factor)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.fn][0](x * self.factor)

    def extra_repr(self) -> str:
        return f"{self.fn}, factor={float(self.factor):g}"


class Normalize(nn.Module):
    """LayerNorm (``center=True``) or RMSNorm without its affine (folded into the Linear layers that read it):
    ``layer_norm(factor * x)`` / ``rms_norm(factor * x)``."""

    def __init__(self, normalized_shape, eps: float, factor: float = 1.0, center: bool = True):
        super().__init__()
        self.normalized_shape = tuple(int(v) for v in normalized_shape)
        self.eps = float(eps)
        self.center = bool(center)
        self.register_buffer("factor", torch.tensor(float(factor)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.center:
            return nn.functional.layer_norm(x * self.factor, self.normalized_shape, None, None, self.eps)
        return nn.functional.rms_norm(x * self.factor, self.normalized_shape, None, self.eps)

    def extra_repr(self) -> str:
        kind = "" if self.center else "rms, "
        return f"{kind}{self.normalized_shape}, eps={self.eps:g}, factor={float(self.factor):g}"


class Scale(nn.Module):
    """Fixed output factor (a buffer, not a weight): undoes the per-layer rescaling of the targets."""

    def __init__(self, factor: float):
        super().__init__()
        self.register_buffer("factor", torch.tensor(float(factor)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class InputShift(nn.Module):
    """Fixed input offset (a buffer, not a weight) in front of a first layer built for a known input box
    [lo, hi] with lo < 0: ``pad(x) - lo >= 0``. ``pad`` = the conv's zero padding, done here in the input's
    own units (so padded pixels are 0 as in the target and become -lo after the shift); the conv itself then
    runs unpadded. The target layer's bias carries the shift: W (x - lo) + (b + W lo) = W x + b."""

    def __init__(self, offset: float, pad=()):
        super().__init__()
        self.register_buffer("offset", torch.tensor(float(offset)))
        self.pad = tuple(int(p) for p in pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad and any(self.pad):
            ph, pw = self.pad
            x = nn.functional.pad(x, (pw, pw, ph, ph))
        return x - self.offset

    def extra_repr(self) -> str:
        return f"offset={float(self.offset)}, pad={self.pad}"


class Add(nn.Module):
    """The join of a residual block: ``sum(factor_i * x_i)``. The factors (buffers, not weights; 1 unless
    the branches were rescaled differently) bring both branches to the same scale (see ``plan_scales``)."""

    def __init__(self, factors):
        super().__init__()
        self.register_buffer("factors", torch.tensor([float(f) for f in factors]))
        self._unit = all(float(f) == 1.0 for f in factors)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self._unit:
            out = xs[0]
            for x in xs[1:]:
                out = out + x
            return out
        out = xs[0] * self.factors[0]
        for i, x in enumerate(xs[1:], 1):
            out = out + x * self.factors[i]
        return out


class GraphNet(nn.Sequential):
    """A Sequential whose op i reads the outputs of ``args[i]`` (-1 = the network input) instead of op i-1.

    Modules are registered as "0", "1", ... exactly as in ``nn.Sequential``, so parameter names have the
    same form as for chain targets; a residual block is its main-path ops, its skip-path ops and an
    :class:`Add` that reads both.
    """

    def __init__(self, modules, args: list[list[int]]):
        super().__init__(*modules)
        self.args = [list(a) for a in args]
        last = {}
        for i, a in enumerate(self.args):
            for j in a:
                last[j] = i
        self._free_after = [[j for j in set(a) if last[j] == i and j >= 0] for i, a in enumerate(self.args)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs: dict[int, torch.Tensor] = {}
        for i, (module, args) in enumerate(zip(self, self.args)):
            ins = [x if a < 0 else outs[a] for a in args]
            outs[i] = module(*ins)
            for j in self._free_after[i]:  # drop what no later op reads: memory stays that of a chain
                del outs[j]
        return outs[len(self.args) - 1]


# -- parameter-free tensor ops of attention (docs/construction.md, "Attention") ----------------------------
def resolve_sizes(spec, refs) -> list[int]:
    """Sizes for reshape/expand: each entry an int (-1 allowed) or ``(k, dim, mul, div)`` = the size of dim
    ``dim`` of the ``k``-th reference tensor, times ``mul``, floor-divided by ``div`` (a traced ``x.size(d)``)."""
    out = []
    for entry in spec:
        if isinstance(entry, (tuple, list)):
            k, dim, mul, div = entry
            out.append(int(refs[k].shape[dim]) * int(mul) // int(div))
        else:
            out.append(int(entry))
    return out


class Reshape(nn.Module):
    """``x.reshape(sizes)``; sizes may name dimensions of other inputs (:func:`resolve_sizes`)."""

    def __init__(self, spec):
        super().__init__()
        self.spec = spec

    def forward(self, x: torch.Tensor, *refs: torch.Tensor) -> torch.Tensor:
        return x.reshape(resolve_sizes(self.spec, refs))


class Expand(Reshape):
    def forward(self, x: torch.Tensor, *refs: torch.Tensor) -> torch.Tensor:
        return x.expand(resolve_sizes(self.spec, refs))


class Permute(nn.Module):
    """``x.permute(dims)`` (a transpose is a permutation of two dims; negative dims allowed)."""

    def __init__(self, dims, transpose: bool = False):
        super().__init__()
        self.dims, self.transpose = tuple(int(d) for d in dims), transpose

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(*self.dims) if self.transpose else x.permute(self.dims)


class Unsqueeze(nn.Module):
    """``x.unsqueeze(dim)`` or (``squeeze``) ``x.squeeze(dim)``."""

    def __init__(self, dim: int, squeeze: bool = False):
        super().__init__()
        self.dim, self.squeeze = int(dim), bool(squeeze)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.squeeze(self.dim) if self.squeeze else x.unsqueeze(self.dim)


def decode_index(index):
    """A stored index (list of ints, None, ``["slice", start, stop, step]``, ``"..."``) -> a torch index."""
    out = []
    for item in index:
        if isinstance(item, (tuple, list)):
            out.append(slice(*item[1:]))
        elif item == "...":
            out.append(Ellipsis)
        else:
            out.append(item)
    return tuple(out)


class GetItem(nn.Module):
    def __init__(self, index):
        super().__init__()
        self.index = decode_index(index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[self.index]


class Split(nn.Module):
    """Part ``which`` of ``torch.split(x, size, dim)`` (``chunks`` = 0) or ``torch.chunk(x, chunks, dim)``."""

    def __init__(self, size, chunks: int, dim: int, which: int):
        super().__init__()
        self.size, self.chunks, self.dim, self.which = size, int(chunks), int(dim), int(which)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.chunks:
            return torch.chunk(x, self.chunks, self.dim)[self.which]
        size = list(self.size) if isinstance(self.size, (tuple, list)) else int(self.size)
        return torch.split(x, size, self.dim)[self.which]


class Cat(nn.Module):
    """``torch.cat`` of the inputs along ``dim``, each multiplied by its fixed factor (the planned scales of the
    inputs may differ, as at a residual join)."""

    def __init__(self, dim: int, factors):
        super().__init__()
        self.dim = int(dim)
        self.register_buffer("factors", torch.tensor([float(f) for f in factors]))

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat([x * self.factors[i] if float(self.factors[i]) != 1.0 else x for i, x in enumerate(xs)],
                         self.dim)


class Matmul(nn.Module):
    """``a @ b`` of two activations (bilinear, no parameters)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b


class Softmax(nn.Module):
    """``softmax(factor * x)`` over ``dim``: softmax is not homogeneous, so the planned scale is undone first."""

    def __init__(self, dim: int = -1, factor: float = 1.0):
        super().__init__()
        self.dim = int(dim)
        self.register_buffer("factor", torch.tensor(float(factor)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x * self.factor, self.dim)


def additive_mask(mask, causal: bool, length_q: int, length_k: int, dtype=torch.float32, device=None):
    """The additive attention mask (0 or a finite value where attended, -inf where not) as a tensor, or None.
    ``mask``: stored rows of floats with None for -inf; ``causal``: key j > query i is masked."""
    out = None
    if mask:
        out = torch.tensor([[float("-inf") if v is None else float(v) for v in row] for row in mask], dtype=dtype,
                           device=device)
    if causal:
        tri = torch.ones(length_q, length_k, dtype=torch.bool, device=device).tril()
        causal_mask = torch.zeros(length_q, length_k, dtype=dtype, device=device).masked_fill(~tri, float("-inf"))
        out = causal_mask if out is None else out + causal_mask
    return out


class Attention(nn.Module):
    """``softmax(fq q (fk k)^T * scale + mask) v``, q, k, v (..., L, E): scaled dot-product attention with its
    softmax over the keys; ``factors`` = (fq, fk) undo the planned scales of q and k (softmax is not homogeneous);
    v keeps its scale (the output is linear in v)."""

    def __init__(self, causal: bool = False, mask=(), scale: float | None = None, factors=(1.0, 1.0)):
        super().__init__()
        self.causal, self.mask, self.scale = bool(causal), mask, scale
        self.register_buffer("factors", torch.tensor([float(f) for f in factors]))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k = q * self.factors[0], k * self.factors[1]
        mask = additive_mask(self.mask, self.causal, q.shape[-2], k.shape[-2], q.dtype, q.device)
        return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)

    def extra_repr(self) -> str:
        return f"causal={self.causal}, mask={'yes' if self.mask else 'no'}, scale={self.scale}"


class Mean(nn.Module):
    def __init__(self, dim, keepdim: bool = False):
        super().__init__()
        self.dim = tuple(dim) if isinstance(dim, (tuple, list)) else int(dim)
        self.keepdim = bool(keepdim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(self.dim, keepdim=self.keepdim)


class MulConst(nn.Module):
    """``x * c`` for a fixed number c (a traced ``x * 0.5`` or ``x / 8``), kept as is."""

    def __init__(self, c: float):
        super().__init__()
        self.register_buffer("c", torch.tensor(float(c)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.c


class Mul(nn.Module):
    """``a * b`` of two values, elementwise (bilinear, no parameters)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * b


class ConstPair(RandomPair):
    """A pair standing for a constant tensor of the target (a free ``nn.Parameter`` such as a positional
    embedding or a class token, or anything computed from parameters alone): a pair with no inputs and only
    its ``n`` bias units, so ``b(relu(a.bias))`` approximates the flattened constant like a bias."""

    def __init__(self, layout: LayerLayout, shape):
        super().__init__(layout)
        self.shape = tuple(int(s) for s in shape)

    def forward(self) -> torch.Tensor:
        empty = torch.zeros(1, 0, dtype=self.a.bias.dtype, device=self.a.bias.device)
        return super().forward(empty).reshape(self.shape)


# -- product attention (Otsuka et al., arXiv:2511.04217; docs/construction.md, "Attention") ----------------
class QKScores(nn.Module):
    """One head of a random attention layer pruned for the merged query-key map M_h (``attention="product"``).

    ``a`` is the query *selector* (:class:`BlockLinear`: hidden unit (j, m) = u_{jm} x_j, u ~ U[0, 1], plus n
    bias units beta_m ~ U[0, 1]), ``b.weight`` (d x (d + 1) n, U[-1, 1]) the key map: k = x @ b.weight. No ReLU:
    score(s, t) = factor * a(x_s) . k_t = factor * (x_s M^ x_t^T + c^ . x_t), where M^[j, l] = sum_m u_{jm}
    b[l, (j, m)] is SubsetSum instance (j, l) (the pair layout with target weight M^T) and c^ the key-side
    bias term. ``factor`` (a buffer) = s_qk * S^2 undoes the layer's scale and that of its input."""

    def __init__(self, layout: LayerLayout, factor: float = 1.0):
        super().__init__()
        self.a = BlockLinear(layout.d_in, layout.units, layout.n_bias)
        self.b = nn.Linear(layout.hidden, layout.d_out, bias=False)
        self.register_buffer("factor", torch.tensor(float(factor)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k = self.a(x), x @ self.b.weight
        return (q @ k.transpose(-2, -1)) * self.factor


class VOMix(nn.Module):
    """The value/output side of a random attention layer pruned for N_h = W_v^h W_o^h (``attention="product"``),
    and the attention itself: p = softmax(stack(scores) + mask) per head; value selector ``a`` (BlockLinear over
    the heads' copies of x: hidden unit (h, j, m) = u_{hjm} x_j, plus n bias units), attention mixes the values
    of each head's units, ``b`` (d x (H d n + n), U[-1, 1]) is the output map. The bias units are constant, so
    attention (rows of p sum to 1) passes them through unchanged: they are appended after the mixing."""

    def __init__(self, layout: LayerLayout, heads: int, causal: bool = False, mask=()):
        super().__init__()
        self.heads, self.causal, self.mask = int(heads), bool(causal), mask
        self.a = BlockLinear(layout.d_in, layout.units, layout.n_bias)
        self.b = nn.Linear(layout.hidden, layout.d_out, bias=False)

    def forward(self, x: torch.Tensor, *scores: torch.Tensor) -> torch.Tensor:
        s = torch.stack(scores, dim=-3)  # (..., H, Lq, Lk)
        mask = additive_mask(self.mask, self.causal, s.shape[-2], s.shape[-1], s.dtype, s.device)
        p = torch.softmax(s if mask is None else s + mask, dim=-1)
        d_in, units = self.a.weight.shape
        w = self.a.weight.view(self.heads, d_in // self.heads, units)
        hv = (x[..., None, :, None] * w).flatten(-2).transpose(-3, -2)  # (..., H, L, d n)
        mixed = (p @ hv).transpose(-3, -2).flatten(-2)  # (..., L, H d n)
        if self.a.bias is not None:
            mixed = torch.cat([mixed, self.a.bias.expand(*mixed.shape[:-1], -1)], dim=-1)
        return self.b(mixed)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, causal={self.causal}, mask={'yes' if self.mask else 'no'}"
