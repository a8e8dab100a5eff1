"""The construction graph: what each op of a target does to scales, to the certified bound and to the ticket.

A parsed target is a :class:`Graph` of typed, frozen nodes (:class:`LayerNode`, :class:`ReluNode`,
:class:`AddNode`, pools, :class:`FlattenNode`, ...). Node ``i`` reads the values ``inputs`` (-1 = the
network input). Every node class says, in one place,

* ``nonneg(ins)`` -- is its output >= 0 whenever its inputs are (so a following layer needs no negative
  units, docs/construction.md);
* ``scale(ins)`` -- the cumulative scale of its output in the ticket given those of its inputs (layers
  divide their weights by a planned scale, docs/theory.md §9.3; see :func:`plan_scales`);
* ``bound(ins, ctx)`` -- interval and error propagation for the certified bound (``(lo, hi, d)``: the
  target's activation lies in [lo, hi] and the ticket's is within ``d`` of it, elementwise);
* ``module(layouts)`` -- the ticket's module for it.

``to_json`` / :meth:`Graph.from_json` give the ``config["ops"]`` stored in ticket files: for the ops of
format version 1 exactly the dicts of that format (chains without ``args``), so tickets and digests are
unchanged. The scale planner returns a :class:`ScalePlan`; :meth:`Graph.with_plan` writes the planned
join factors into new nodes (nothing is edited in place).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .network import (
    ACTIVATIONS,
    Activation,
    Add,
    Attention,
    Cat,
    ConstPair,
    EmbeddingPair,
    Expand,
    GetItem,
    GraphNet,
    InputShift,
    LayerLayout,
    Matmul,
    Mean,
    Mul,
    MulConst,
    Normalize,
    Permute,
    QKScores,
    RandomPair,
    RealisedKernels,
    Reshape,
    Scale,
    Softmax,
    Split,
    Unsqueeze,
    VOMix,
    additive_mask,
    decode_index,
    resolve_sizes,
)

# Largest |target| (after rescaling) a block is asked to reach. n products of U[0,1]·U[-1,1] reach
# about ±n/8 on average, so 1 is comfortably inside for the n we use; rare misses are redrawn.
REACH = 1.0


def _jsonable(v):
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return v


def _frozen(v):
    if isinstance(v, list):
        return tuple(_frozen(x) for x in v)
    return v


@dataclass(frozen=True)
class BoundContext:
    """What the bound needs besides the intervals: the target's layer specs, the ticket's layouts and the
    kernels the pruned pairs realise (:func:`slth.construction.bound.realised_kernels`)."""

    specs: list
    layouts: list[LayerLayout]
    real: list[RealisedKernels]


State = tuple  # (lo, hi, d): float64 tensors of one shape


@dataclass(frozen=True)
class Node:
    """One op. Subclasses add their parameters as fields; ``kind`` is the ``"op"`` of its JSON."""

    inputs: tuple[int, ...]
    kind: ClassVar[str] = ""
    layer: ClassVar[bool] = False  # holds a target layer (a RandomPair in the ticket)

    def __post_init__(self):
        for f in dataclasses.fields(self):  # JSON lists -> tuples: nodes are values
            object.__setattr__(self, f.name, _frozen(getattr(self, f.name)))

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "inputs"}

    def to_json(self, chain: bool) -> dict:
        out = {"op": self.kind, **{k: _jsonable(v) for k, v in self.params().items()}}
        if not chain:
            out["args"] = [int(a) for a in self.inputs]
        return out

    # -- what the op does ------------------------------------------------------------------------
    def nonneg(self, ins: list[bool]) -> bool:
        return ins[0]

    def scale(self, ins: list[float]) -> float:
        return ins[0]

    def planned(self, ins: list[float]) -> dict[str, Any]:
        """Fields the scale planner sets, from the scales of the inputs (e.g. a join's factors)."""
        return {}

    def bound(self, ins: list[State], ctx: BoundContext) -> State:
        raise NotImplementedError  # pragma: no cover - every kind defines it

    def module(self, layouts: list[LayerLayout]) -> nn.Module:
        raise NotImplementedError  # pragma: no cover - every kind defines it


def _each(ins: list[State], fn) -> State:
    return tuple(fn(t) for t in ins[0])


@dataclass(frozen=True)
class LayerNode(Node):
    """Target Linear/Conv2d number ``index`` (BatchNorm folded in): a :class:`RandomPair` in the ticket."""

    index: int = 0
    kind: ClassVar[str] = "layer"
    layer: ClassVar[bool] = True

    def nonneg(self, ins):
        return False

    def layer_planned(self, prod: float, s: float) -> dict[str, Any]:
        """Fields the scale planner sets from the scale ``prod`` at the layer's input and its own scale ``s``."""
        return {}

    def layer_scale(self, prod: float, s: float) -> float:
        """The cumulative scale of the layer's output: its weights were divided by s, its bias by prod * s."""
        return prod * s

    def bound(self, ins, ctx):
        return layer_bound(ins[0], ctx.specs[self.index], ctx.layouts[self.index], ctx.real[self.index])

    def module(self, layouts):
        return RandomPair(layouts[self.index])


@dataclass(frozen=True)
class ReluNode(Node):
    kind: ClassVar[str] = "relu"

    def nonneg(self, ins):
        return True

    def bound(self, ins, ctx):
        lo, hi, d = ins[0]
        return lo.clamp(min=0), hi.clamp(min=0), d  # 1-Lipschitz

    def module(self, layouts):
        return nn.ReLU()


@dataclass(frozen=True)
class FlattenNode(Node):
    start_dim: int = 1
    end_dim: int = -1
    kind: ClassVar[str] = "flatten"

    def bound(self, ins, ctx):
        return _each(ins, lambda t: t.flatten(self.start_dim, self.end_dim))

    def module(self, layouts):
        return nn.Flatten(self.start_dim, self.end_dim)


@dataclass(frozen=True)
class MaxPoolNode(Node):
    """Max pooling: monotone and 1-Lipschitz per window, so lo, hi and d pool by max."""

    kernel_size: tuple = ()
    stride: tuple = ()
    padding: tuple = ()
    dilation: tuple = ()
    ceil_mode: bool = False
    kind: ClassVar[str] = "maxpool2d"

    def bound(self, ins, ctx):
        return _each(ins, lambda t: F.max_pool2d(t, self.kernel_size, self.stride, self.padding, self.dilation,
                                                 ceil_mode=self.ceil_mode))

    def module(self, layouts):
        return nn.MaxPool2d(self.kernel_size, self.stride, self.padding, self.dilation, ceil_mode=self.ceil_mode)


@dataclass(frozen=True)
class AvgPoolNode(Node):
    """Average pooling: a positive linear map, so lo, hi and d average."""

    kernel_size: tuple = ()
    stride: tuple = ()
    padding: tuple = ()
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None
    kind: ClassVar[str] = "avgpool2d"

    def bound(self, ins, ctx):
        return _each(ins, lambda t: F.avg_pool2d(t, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                                 self.count_include_pad, self.divisor_override))

    def module(self, layouts):
        return nn.AvgPool2d(self.kernel_size, self.stride, self.padding, ceil_mode=self.ceil_mode,
                            count_include_pad=self.count_include_pad, divisor_override=self.divisor_override)


@dataclass(frozen=True)
class AdaptiveAvgPoolNode(Node):
    output_size: tuple = ()
    kind: ClassVar[str] = "adaptive_avgpool2d"

    def bound(self, ins, ctx):
        return _each(ins, lambda t: F.adaptive_avg_pool2d(t, self.output_size))

    def module(self, layouts):
        return nn.AdaptiveAvgPool2d(self.output_size)


@dataclass(frozen=True)
class AdaptiveMaxPoolNode(Node):
    output_size: tuple = ()
    kind: ClassVar[str] = "adaptive_maxpool2d"

    def bound(self, ins, ctx):
        return _each(ins, lambda t: F.adaptive_max_pool2d(t, self.output_size))

    def module(self, layouts):
        return nn.AdaptiveMaxPool2d(self.output_size)


@dataclass(frozen=True)
class AddNode(Node):
    """A residual join. In the ticket each branch is multiplied by its ``factor`` (planned: it brings the
    branches, rescaled differently, to the same scale; exact by positive homogeneity); in the target's
    units both networks add plainly, so lo, hi and d add."""

    factors: tuple = ()
    kind: ClassVar[str] = "add"

    def nonneg(self, ins):
        return all(ins)

    def scale(self, ins):
        return max(ins)

    def planned(self, ins):
        top = max(ins)
        return {"factors": tuple(float(v / top) for v in ins)}

    def bound(self, ins, ctx):
        return tuple(sum(p[j] for p in ins) for j in range(3))

    def module(self, layouts):
        return Add(self.factors)


@dataclass(frozen=True)
class IdentityNode(Node):
    kind: ClassVar[str] = "identity"

    def bound(self, ins, ctx):
        return ins[0]

    def module(self, layouts):
        return nn.Identity()


V1_KINDS = frozenset(cls.kind for cls in (LayerNode, ReluNode, FlattenNode, MaxPoolNode, AvgPoolNode,
                                         AdaptiveAvgPoolNode, AdaptiveMaxPoolNode, AddNode, IdentityNode))


@dataclass(frozen=True)
class ShiftNode(Node):
    """``pad(x) - offset`` in front of a first layer, for inputs known to lie in [offset, hi] with offset < 0:
    the layer then sees inputs >= 0 and needs no negative units; its bias absorbs the shift (target.py).
    ``pad``: the conv's zero padding, applied before the shift (padded pixels are 0 in the input's units)."""

    offset: float = 0.0
    pad: tuple = ()
    kind: ClassVar[str] = "shift"

    def nonneg(self, ins):
        return True

    def bound(self, ins, ctx):
        lo, hi, d = ins[0]
        if self.pad and any(self.pad):
            ph, pw = self.pad
            lo, hi = (F.pad(t, (pw, pw, ph, ph)) for t in (lo, hi))
            d = F.pad(d, (pw, pw, ph, ph))
        return lo - self.offset, hi - self.offset, d

    def module(self, layouts):
        return InputShift(self.offset, self.pad)


@dataclass(frozen=True)
class EmbeddingNode(LayerNode):
    """Target ``nn.Embedding`` number ``index`` (its spec's weight is E^T, (dim, num)): the linear map E^T on
    the one-hot of the index, a nonnegative input, so a pair without negative units (:class:`EmbeddingPair`).
    For a point box (lo = hi = the indices) the bound is exact per token: |realised column - E[idx]|."""

    kind: ClassVar[str] = "embedding"

    def bound(self, ins, ctx):
        lo, hi, _ = ins[0]
        w = torch.from_numpy(ctx.specs[self.index].weight).T  # (num, dim) = E
        err = (ctx.real[self.index].pos.T - w).abs()
        if torch.equal(lo, hi):
            idx = lo.long()
            return w[idx], w[idx], err[idx]
        shape = (*lo.shape, w.shape[1])
        return (w.min(0).values.expand(shape), w.max(0).values.expand(shape), err.max(0).values.expand(shape))

    def module(self, layouts):
        return EmbeddingPair(layouts[self.index])


@dataclass(frozen=True)
class ActivationNode(Node):
    """A parameter-free elementwise op (GELU, SiLU, tanh, sigmoid) between layers, kept as is in the ticket.

    The pairs around it replace only the linear maps (a pair realises W x for signed x, as relu(x) - relu(-x)
    units), so the ticket computes f(ticket input) where the target computes f(target input): with f
    L-Lipschitz an incoming error d leaves as L d, and the interval maps through f (monotone, or with its
    one minimum). f is not positively homogeneous, so the planned rescaling is undone first: ``factor`` =
    the cumulative scale at its input, and its output has scale 1."""

    fn: str = "gelu"
    factor: float = 1.0
    kind: ClassVar[str] = "activation"

    def nonneg(self, ins):
        return self.fn == "sigmoid"

    def scale(self, ins):
        return 1.0

    def planned(self, ins):
        return {"factor": float(ins[0])}

    def bound(self, ins, ctx):
        lo, hi, d = ins[0]
        f, lipschitz, minimum = ACTIVATIONS[self.fn]
        f_lo, f_hi = f(lo), f(hi)
        out_lo, out_hi = torch.minimum(f_lo, f_hi), torch.maximum(f_lo, f_hi)
        if minimum is not None:  # decreasing left of the argmin, increasing right of it
            at, value = minimum
            out_lo = torch.where((lo < at) & (hi > at), torch.full_like(lo, value), out_lo)
        return out_lo, out_hi, lipschitz * d

    def module(self, layouts):
        return Activation(self.fn, self.factor)


@dataclass(frozen=True)
class LayerNormNode(Node):
    """LayerNorm over the last dimension without its affine (gamma, beta are folded into every Linear that
    reads it: W diag(gamma), b + W beta -- exact). The normalisation z = (x - mean) / sqrt(var + eps) is kept
    in the ticket; it is scale-invariant only up to eps, so the rescaling is undone first (``factor``).

    Bound: |z_i| <= sqrt(D - 1) for D features (z exactly, where the target's input is a point: lo = hi); its
    Jacobian at y is (P - z z^T / D) / sqrt(var(y) + eps) with P the centring projection, of L2 norm
    <= 1 / sqrt(var(y) + eps). On the segment from the target's input x to the ticket's x^ every y = c + e with c
    the interval's centre and |e| <= r + d (r its radius), and std is a seminorm with std(e) <= |e|_2 / sqrt(D), so
    std(y) >= m = max(std(c) - |r + d|_2 / sqrt(D), 0) and |dz|_inf <= |dz|_2 <= |d|_2 / sqrt(m^2 + eps) per token
    (m = 0 gives 1 / sqrt(eps) ~ 316 for eps = 1e-5, the worst case over wide boxes)."""

    normalized_shape: tuple = ()
    eps: float = 1e-5
    factor: float = 1.0
    kind: ClassVar[str] = "layernorm"

    def scale(self, ins):
        return 1.0

    def planned(self, ins):
        return {"factor": float(ins[0])}

    centre: ClassVar[bool] = True  # subtract the mean (LayerNorm), or not (RMSNorm)

    def bound(self, ins, ctx):
        lo, hi, d = ins[0]
        size = int(np.prod(self.normalized_shape))
        reach = float(np.sqrt(max(size - 1, 0) if self.centre else size))
        dims = tuple(range(-len(self.normalized_shape), 0))
        c, r = (lo + hi) / 2, (hi - lo) / 2
        centred = c - c.mean(dims, keepdim=True) if self.centre else c
        spread_c = centred.pow(2).mean(dims, keepdim=True).sqrt()  # std(c) (LayerNorm) or rms(c) (RMSNorm)
        slack = (r + d).pow(2).sum(dims, keepdim=True).sqrt() / np.sqrt(size)
        floor = (spread_c - slack).clamp(min=0)
        err = (d.pow(2).sum(dims, keepdim=True).sqrt() / (floor.pow(2) + self.eps).sqrt()).expand_as(d)
        z = centred / (centred.pow(2).mean(dims, keepdim=True) + self.eps).sqrt()
        point = (r == 0).all(dim=dims[0], keepdim=True) if len(dims) == 1 else (r == 0).flatten(dims[0]).all(
            -1).reshape(*r.shape[:dims[0]], *([1] * len(dims)))
        out_lo = torch.where(point, z, torch.full_like(lo, -reach))
        out_hi = torch.where(point, z, torch.full_like(hi, reach))
        return out_lo, out_hi, err

    def module(self, layouts):
        return Normalize(self.normalized_shape, self.eps, self.factor)

    def nonneg(self, ins):
        # x - mean(x) is signed whatever x is; RMSNorm's x / rms(x) keeps x's signs
        return False if self.centre else ins[0]


@dataclass(frozen=True)
class RMSNormNode(LayerNormNode):
    """RMSNorm over the last dimension without its weight (folded into every Linear that reads it, as LayerNorm's
    affine is): z = x / sqrt(mean(x^2) + eps), kept in the ticket, the rescaling undone first (``factor``).

    Bound: |z|_2^2 = D mean(x^2) / (mean(x^2) + eps) <= D, so |z_i| <= sqrt(D); the Jacobian (I - z z^T / D) / rms
    has L2 norm <= 1 / rms (I - z z^T / D is symmetric with eigenvalues in [0, 1]), and rms is a norm / sqrt(D),
    so along the segment from x to x^ rms >= m = max(rms(c) - |r + d|_2 / sqrt(D), 0), as for LayerNorm:
    |dz|_inf <= |dx|_2 / sqrt(m^2 + eps) per token."""

    kind: ClassVar[str] = "rmsnorm"
    centre: ClassVar[bool] = False

    def module(self, layouts):
        return Normalize(self.normalized_shape, self.eps, self.factor, center=False)


# -- attention: constants and parameter-free tensor ops (docs/construction.md, "Attention") ----------------
@dataclass(frozen=True)
class ConstNode(LayerNode):
    """A constant tensor of the target (a free ``nn.Parameter`` -- positional embedding, class token -- or
    anything computed from parameters alone, e.g. ``pos_emb(arange(T))``): layer ``index`` is a pair with no
    inputs (``d_in = 0``) whose ``n`` bias units approximate the flattened constant, each entry within eps
    (:class:`ConstPair`). Exact bound: |realised - C| per entry."""

    shape: tuple = ()
    kind: ClassVar[str] = "const"

    def bound(self, ins, ctx):
        c = torch.from_numpy(ctx.specs[self.index].bias).reshape(self.shape)
        return c, c, (ctx.real[self.index].bias - torch.from_numpy(ctx.specs[self.index].bias)).abs().reshape(
            self.shape)

    def module(self, layouts):
        return ConstPair(layouts[self.index], self.shape)


def _same(ins: list[State], fn) -> State:
    """A parameter-free map that only moves entries (reshape, permute, index, split): lo, hi and d move alike."""
    return tuple(fn(t, j) for j, t in enumerate(ins[0]))


@dataclass(frozen=True)
class ReshapeNode(Node):
    """``x.reshape(sizes)``; inputs[1:] are the values whose sizes ``spec`` names (a traced ``x.size(d)``)."""

    spec: tuple = ()
    kind: ClassVar[str] = "reshape"

    def bound(self, ins, ctx):
        sizes = resolve_sizes(self.spec, [s[0] for s in ins[1:]])
        return _same(ins, lambda t, j: t.reshape(sizes))

    def module(self, layouts):
        return Reshape(self.spec)


@dataclass(frozen=True)
class ExpandNode(ReshapeNode):
    kind: ClassVar[str] = "expand"

    def bound(self, ins, ctx):
        sizes = resolve_sizes(self.spec, [s[0] for s in ins[1:]])
        return _same(ins, lambda t, j: t.expand(sizes))

    def module(self, layouts):
        return Expand(self.spec)


@dataclass(frozen=True)
class PermuteNode(Node):
    """``x.permute(dims)``, or ``x.transpose(*dims)`` with ``transpose``."""

    dims: tuple = ()
    transpose: bool = False
    kind: ClassVar[str] = "permute"

    def bound(self, ins, ctx):
        return _same(ins, lambda t, j: t.transpose(*self.dims) if self.transpose else t.permute(self.dims))

    def module(self, layouts):
        return Permute(self.dims, self.transpose)


@dataclass(frozen=True)
class UnsqueezeNode(Node):
    """``x.unsqueeze(dim)``, or with ``squeeze`` ``x.squeeze(dim)``: a Conv1d is built as a Conv2d with kernel
    (1, k) on (N, C, 1, L) between the two."""

    dim: int = 2
    squeeze: bool = False
    kind: ClassVar[str] = "unsqueeze"

    def bound(self, ins, ctx):
        return _same(ins, lambda t, j: t.squeeze(self.dim) if self.squeeze else t.unsqueeze(self.dim))

    def module(self, layouts):
        return Unsqueeze(self.dim, self.squeeze)


@dataclass(frozen=True)
class GetItemNode(Node):
    """``x[index]`` with ints, slices (stored ``["slice", start, stop, step]``), None and ``"..."``."""

    index: tuple = ()
    kind: ClassVar[str] = "getitem"

    def bound(self, ins, ctx):
        index = decode_index(self.index)
        return _same(ins, lambda t, j: t[index])

    def module(self, layouts):
        return GetItem(self.index)


@dataclass(frozen=True)
class SplitNode(Node):
    """Part ``which`` of ``torch.split(x, size, dim)`` or (``chunks`` > 0) ``torch.chunk(x, chunks, dim)``."""

    size: Any = 0
    chunks: int = 0
    dim: int = -1
    which: int = 0
    kind: ClassVar[str] = "split"

    def bound(self, ins, ctx):
        m = Split(self.size, self.chunks, self.dim, self.which)
        return _same(ins, lambda t, j: m(t))

    def module(self, layouts):
        return Split(self.size, self.chunks, self.dim, self.which)


@dataclass(frozen=True)
class CatNode(Node):
    """``torch.cat(inputs, dim)``. Like a residual join, inputs of different planned scales are brought to the
    largest by fixed ``factors``; in the target's units lo, hi and d concatenate."""

    dim: int = 0
    factors: tuple = ()
    kind: ClassVar[str] = "cat"

    def nonneg(self, ins):
        return all(ins)

    def scale(self, ins):
        return max(ins)

    def planned(self, ins):
        top = max(ins)
        return {"factors": tuple(float(v / top) for v in ins)}

    def bound(self, ins, ctx):
        return tuple(torch.cat([p[j] for p in ins], self.dim) for j in range(3))

    def module(self, layouts):
        return Cat(self.dim, self.factors or (1.0,) * len(self.inputs))


def _mag(lo, hi):
    return torch.maximum(lo.abs(), hi.abs())


def bilinear_bound(a: State, b: State, scale: float = 1.0) -> State:
    """``C = scale * A @ B`` for two activations: intervals by centre/radius (C = ca cb ± (|ca| rb + ra |cb| +
    ra rb)), errors |dC| <= |A| |dB| + |dA| |B| + |dA| |dB| with |A| = max(|lo|, |hi|) (all matrix products of
    nonnegative matrices; |scale| multiplies everything)."""
    (alo, ahi, ad), (blo, bhi, bd) = a, b
    ca, ra, cb, rb = (alo + ahi) / 2, (ahi - alo) / 2, (blo + bhi) / 2, (bhi - blo) / 2
    cc = ca @ cb
    cr = ca.abs() @ rb + ra @ cb.abs() + ra @ rb
    d = _mag(alo, ahi) @ bd + ad @ _mag(blo, bhi) + ad @ bd
    s = abs(float(scale))
    return (cc - cr) * scale if scale >= 0 else (cc + cr) * scale, (cc + cr) * scale if scale >= 0 else \
        (cc - cr) * scale, d * s


def softmax_bound(state: State) -> tuple[State, torch.Tensor]:
    """Softmax over the last dim; entries with lo = -inf are masked (p = 0 in both networks).

    Interval: p_i in [e^{lo_i} / (e^{lo_i} + sum_{j!=i} e^{hi_j}), e^{hi_i} / (e^{hi_i} + sum_{j!=i} e^{lo_j})].
    Error, with delta = max_j |s^_j - s_j| over the row: (a) the Jacobian diag(p) - p p^T has row i of absolute
    sum 2 p_i (1 - p_i) <= 1/2, so |p^_i - p_i| <= delta / 2 (mean-value theorem); (b) p^_i / p_i =
    e^{D_i} / sum_j p_j e^{D_j} lies in [e^{-2 delta}, e^{2 delta}], so |p^_i - p_i| <= p_i (e^{2 delta} - 1).
    Each entry takes the smaller; also returns the row's l1 bound min(sum_i, e^{2 delta} - 1, 2)."""
    lo, hi, d = state
    masked = torch.isneginf(lo)
    top = hi.masked_fill(masked, -torch.inf).max(-1, keepdim=True).values
    e_lo, e_hi = torch.exp(lo - top), torch.exp(hi - top)  # 0 where masked
    s_lo, s_hi = e_lo.sum(-1, keepdim=True), e_hi.sum(-1, keepdim=True)
    p_lo = e_lo / (e_lo + (s_hi - e_hi).clamp(min=0))
    p_hi = e_hi / (e_hi + (s_lo - e_lo).clamp(min=0))
    p_lo = torch.nan_to_num(p_lo, nan=0.0).clamp(0, 1).masked_fill(masked, 0.0)
    p_hi = torch.nan_to_num(p_hi, nan=1.0).clamp(0, 1).masked_fill(masked, 0.0)
    delta = d.masked_fill(masked, 0.0).max(-1, keepdim=True).values
    dp = torch.minimum(delta.expand_as(d) / 2, p_hi * torch.expm1(2 * delta)).masked_fill(masked, 0.0)
    l1 = torch.minimum(torch.minimum(dp.sum(-1, keepdim=True), torch.expm1(2 * delta)), torch.full_like(delta, 2.0))
    return (p_lo, p_hi, dp), l1


@dataclass(frozen=True)
class MatmulNode(Node):
    """``a @ b`` of two activations: bilinear, no parameters, kept as is. Scales multiply (exact)."""

    kind: ClassVar[str] = "matmul"

    def nonneg(self, ins):
        return all(ins)

    def scale(self, ins):
        return ins[0] * ins[1]

    def bound(self, ins, ctx):
        return bilinear_bound(ins[0], ins[1])

    def module(self, layouts):
        return Matmul()


@dataclass(frozen=True)
class SoftmaxNode(Node):
    """Softmax over the last dimension (:func:`softmax_bound`); the planned scale is undone first."""

    dim: int = -1
    factor: float = 1.0
    kind: ClassVar[str] = "softmax"

    def nonneg(self, ins):
        return True

    def scale(self, ins):
        return 1.0

    def planned(self, ins):
        return {"factor": float(ins[0])}

    def bound(self, ins, ctx):
        return softmax_bound(ins[0])[0]

    def module(self, layouts):
        return Softmax(self.dim, self.factor)


@dataclass(frozen=True)
class AttentionNode(Node):
    """``scaled_dot_product_attention(q, k, v)`` over (..., L, E) inputs: softmax(q k^T * scale + M) v with M
    the constant additive ``mask`` (rows of floats, None = -inf) and/or the causal mask. q and k are brought
    back to the target's units (``factors``); v keeps its planned scale.

    Bound: scores by :func:`bilinear_bound` (+ M), probabilities by :func:`softmax_bound`; then, as p and p^
    are probability vectors over the allowed keys, o^ - o = sum_j p^_j (v^_j - v_j) + sum_j (p^_j - p_j)(v_j - m)
    for any m, so |o^ - o| <= max_j dv_j + |p^ - p|_1 * (max_j v_hi - min_j v_lo) / 2, and o lies in
    [min_j v_lo, max_j v_hi] (j over the allowed keys); the bilinear bound on p @ v is used where smaller."""

    causal: bool = False
    mask: tuple = ()
    sm_scale: float | None = None  # None: 1 / sqrt(E)
    factors: tuple = (1.0, 1.0)
    kind: ClassVar[str] = "attention"

    def nonneg(self, ins):
        return ins[2]

    def scale(self, ins):
        return ins[2]

    def planned(self, ins):
        return {"factors": (float(ins[0]), float(ins[1]))}

    def bound(self, ins, ctx):
        q, k, v = ins
        e = q[0].shape[-1]
        c = self.sm_scale if self.sm_scale is not None else 1.0 / float(np.sqrt(e))
        lo, hi, d = bilinear_bound(q, tuple(t.transpose(-2, -1) for t in k), c)
        mask = additive_mask(self.mask, self.causal, lo.shape[-2], k[0].shape[-2], torch.float64)
        if mask is not None:
            lo, hi = lo + mask, hi + mask
            d = d.masked_fill(torch.isneginf(mask), 0.0)
        return mix_bound((lo, hi, d), v)

    def module(self, layouts):
        return Attention(self.causal, self.mask, self.sm_scale, self.factors)


def _over_keys(allowed: torch.Tensor, t: torch.Tensor, fill: float, op) -> torch.Tensor:
    """(..., Lk, F) -> (..., Lq, F): ``op`` (a reduction over dim -2) over the allowed keys of each query."""
    t = t.unsqueeze(-3).expand(*t.shape[:-2], allowed.shape[0], *t.shape[-2:])
    return op(t.masked_fill(~allowed[..., None], fill), -2)


def _max_keys(allowed, t):
    return _over_keys(allowed, t, 0.0, lambda u, dim: u.max(dim).values)


def mix_bound(scores: State, v: State) -> State:
    """``softmax(scores) @ v`` (scores with the mask added, -inf = masked; the same mask for every batch and
    head): probabilities by :func:`softmax_bound`, then |o^ - o| <= max_j dv_j + |p^ - p|_1 (max_j v_hi -
    min_j v_lo) / 2 and o in [min_j v_lo, max_j v_hi] (j over the allowed keys), or the bilinear bound on
    p @ v where smaller (:class:`AttentionNode`)."""
    lo = scores[0]
    p, l1 = softmax_bound(scores)
    allowed = ~torch.isneginf(lo[(0,) * (lo.dim() - 2)])  # (Lq, Lk), the same for every batch and head
    vlo, vhi, vd = v
    out_lo = _over_keys(allowed, vlo, torch.inf, lambda t, dim: t.min(dim).values)
    out_hi = _over_keys(allowed, vhi, -torch.inf, lambda t, dim: t.max(dim).values)
    err = _max_keys(allowed, vd) + l1 * (out_hi - out_lo) / 2
    blo, bhi, bd = bilinear_bound(p, v)
    return torch.maximum(out_lo, blo), torch.minimum(out_hi, bhi), torch.minimum(err, bd)


def _linear_state(x: State, w: torch.Tensor) -> State:
    """``x @ w`` for a fixed matrix w in the target and the ticket alike: interval by centre/radius, error d |w|."""
    lo, hi, d = x
    c, r = (lo + hi) / 2, (hi - lo) / 2
    zc, zr = c @ w, r @ w.abs()
    return zc - zr, zc + zr, d @ w.abs()


@dataclass(frozen=True)
class QKNode(LayerNode):
    """One head's scores in the product construction (``attention="product"``, Otsuka et al.): layer ``index``
    holds the merged map M_h = W_q^h W_k^h^T / sqrt(e) as the weight M_h^T and the key-side bias term
    c_h = W_k^h b_q^h / sqrt(e) as its bias (a LayerNorm affine folded in); the ticket computes
    x M^ x^T + 1 (c^ x^T) (:class:`QKScores`). The query-only terms x_s W_q b_k and b_q . b_k of the target's
    scores are constant over the keys, so the softmax cancels them: both networks' scores are compared
    without them. ``factor``: planned, s_qk * S^2 (S the scale of x).

    Bound, with x^ = x + delta (|delta| <= d) and M^ = M + E: x^ M^ x^^T - x M x^T = x^ E x^^T + (x^ M x^^T -
    x M x^T); the first is <= |x^| |E| |x^|^T with |x^| <= max(|lo|, |hi|) + d, the second is the
    :func:`bilinear_bound` of (x M, x^T); the bias term c^ . x^ - c . x is <= |c^ - c| |x^| + |c| d."""

    factor: float = 1.0
    kind: ClassVar[str] = "qk_scores"

    def layer_planned(self, prod: float, s: float) -> dict[str, Any]:
        return {"factor": float(s * prod * prod)}

    def layer_scale(self, prod: float, s: float) -> float:
        return 1.0

    def bound(self, ins, ctx):
        x = ins[0]
        spec, real = ctx.specs[self.index], ctx.real[self.index]
        m = torch.from_numpy(spec.weight).T  # (d, d): M
        e = real.pos.T - m
        xt = tuple(t.transpose(-2, -1) for t in x)
        lo, hi, d = bilinear_bound(_linear_state(x, m), xt)
        mag = _mag(x[0], x[1]) + x[2]
        d = d + mag @ e.abs() @ mag.transpose(-2, -1)
        if spec.bias is not None:
            c = torch.from_numpy(spec.bias)
            tlo, thi, td = _linear_state(x, c[:, None])  # (..., L, 1): the key-side term of every key
            td = td + mag @ (real.bias - c).abs()[:, None]
            lo, hi, d = lo + tlo.transpose(-2, -1), hi + thi.transpose(-2, -1), d + td.transpose(-2, -1)
        return lo, hi, d

    def module(self, layouts):
        return QKScores(layouts[self.index], self.factor)


@dataclass(frozen=True)
class VONode(LayerNode):
    """The rest of one product-constructed attention (``attention="product"``): inputs (x, scores of head 0, ...,
    head H-1); p = softmax(scores + mask) per head (causal flag and/or constant ``mask``, applied exactly), and
    layer ``index`` holds the merged value-output maps N_h = W_v^h W_o^h as one weight (d, H d) (columns
    h d .. h d + d - 1 are N_h^T) with bias b_o + b_v W_o^T (a constant value passes through attention: rows of p
    sum to 1). The ticket computes sum_h p_h x N^_h + b^ (:class:`VOMix`).

    Bound per head: v_h = x N_h (interval and error d |N_h|), o_h = p_h v_h by :func:`mix_bound`, and the
    pruning error sum_t p^_t x^_t (N^_h - N_h), at most max_t |x^_t| |N^_h - N_h| over the allowed keys; heads
    and the bias error add."""

    heads: int = 1
    causal: bool = False
    mask: tuple = ()
    kind: ClassVar[str] = "vo_mix"

    def bound(self, ins, ctx):
        x, heads = ins[0], ins[1:]
        spec, real = ctx.specs[self.index], ctx.real[self.index]
        lo, hi, d = (torch.stack([h[j] for h in heads], dim=-3) for j in range(3))
        mask = additive_mask(self.mask, self.causal, lo.shape[-2], lo.shape[-1], torch.float64)
        if mask is not None:
            lo, hi = lo + mask, hi + mask
            d = d.masked_fill(torch.isneginf(mask), 0.0)
        allowed = ~torch.isneginf(lo[(0,) * (lo.dim() - 2)])
        dm = spec.d_out
        w = torch.from_numpy(spec.weight)  # (d, H d)
        mag = _mag(x[0], x[1]) + x[2]
        out = None
        for h in range(self.heads):
            n_h = w[:, h * dm:(h + 1) * dm].T
            e_h = real.pos[:, h * dm:(h + 1) * dm].T - n_h
            o = mix_bound((lo[..., h, :, :], hi[..., h, :, :], d[..., h, :, :]), _linear_state(x, n_h))
            o = (o[0], o[1], o[2] + _max_keys(allowed, mag @ e_h.abs()))
            out = o if out is None else tuple(a + b for a, b in zip(out, o))
        if spec.bias is not None:
            b = torch.from_numpy(spec.bias)
            out = (out[0] + b, out[1] + b, out[2] + (real.bias - b).abs())
        return out

    def module(self, layouts):
        return VOMix(layouts[self.index], self.heads, self.causal, self.mask)


@dataclass(frozen=True)
class MeanNode(Node):
    """``x.mean(dim, keepdim)``: an average, so lo, hi and d average."""

    dim: Any = -1
    keepdim: bool = False
    kind: ClassVar[str] = "mean"

    def bound(self, ins, ctx):
        return _same(ins, lambda t, j: t.mean(self.dim, keepdim=self.keepdim))

    def module(self, layouts):
        return Mean(self.dim, self.keepdim)


@dataclass(frozen=True)
class MulConstNode(Node):
    """``x * c`` for a fixed number c: kept as is (the planned scale passes through)."""

    c: float = 1.0
    kind: ClassVar[str] = "mulconst"

    def nonneg(self, ins):
        return ins[0] and self.c >= 0

    def bound(self, ins, ctx):
        lo, hi, d = ins[0]
        a, b = lo * self.c, hi * self.c
        return torch.minimum(a, b), torch.maximum(a, b), d * abs(self.c)

    def module(self, layouts):
        return MulConst(self.c)

@dataclass(frozen=True)
class MulNode(Node):
    """``a * b`` elementwise (broadcasting) of two values: a gated MLP's act(gate) * up, a rotary embedding's
    x * cos (the table a constant). Only in the graph a module-replacement ticket's bound reads
    (:func:`slth.construction.target.parse_exported`), not in tickets (not in :data:`KINDS`). Scales multiply
    (exact). Bound: the interval spans the four corner products; with |a^| <= |a| + d_a,
    |a^ b^ - a b| = |a^ (b^ - b) + (a^ - a) b| <= |a| d_b + d_a |b| + d_a d_b (|a| = max(|lo|, |hi|))."""

    kind: ClassVar[str] = "mul"

    def nonneg(self, ins):
        return all(ins)

    def scale(self, ins):
        return ins[0] * ins[1]

    def bound(self, ins, ctx):
        (alo, ahi, ad), (blo, bhi, bd) = ins
        corners = torch.stack(torch.broadcast_tensors(alo * blo, alo * bhi, ahi * blo, ahi * bhi))
        d = _mag(alo, ahi) * bd + ad * _mag(blo, bhi) + ad * bd
        return corners.min(0).values, corners.max(0).values, d

    def module(self, layouts):
        return Mul()


KINDS: dict[str, type[Node]] = {cls.kind: cls for cls in (
    LayerNode, ReluNode, FlattenNode, MaxPoolNode, AvgPoolNode, AdaptiveAvgPoolNode, AdaptiveMaxPoolNode, AddNode,
    IdentityNode, ShiftNode, EmbeddingNode, ActivationNode, LayerNormNode, RMSNormNode, ConstNode, ReshapeNode,
    ExpandNode, PermuteNode, UnsqueezeNode, GetItemNode, SplitNode, CatNode, MatmulNode, SoftmaxNode, AttentionNode,
    MeanNode, MulConstNode, QKNode, VONode)}
PRODUCT_KINDS = frozenset((QKNode.kind, VONode.kind))
# ticket format version 3: kinds a version-2 reader does not know
V3_KINDS = PRODUCT_KINDS | {RMSNormNode.kind, UnsqueezeNode.kind}


@dataclass(frozen=True)
class ScalePlan:
    """Per-layer weight scales s_l >= 1, the cumulative scale at each layer's output (its bias scale),
    the planned node fields (position -> e.g. a join's ``factors``, an activation's ``factor``) and the
    scale of the network's output."""

    layer_scales: tuple[float, ...]
    bias_scales: tuple[float, ...]
    planned: dict[int, dict[str, Any]] = field(default_factory=dict)  # node position -> fields to set
    output_scale: float = 1.0


@dataclass(frozen=True)
class Graph:
    """The target as typed nodes; ``chain``: every node reads the previous one (an ``nn.Sequential``)."""

    nodes: tuple[Node, ...]
    chain: bool

    def to_json(self) -> list[dict]:
        return [node.to_json(self.chain) for node in self.nodes]

    @classmethod
    def from_json(cls, ops: list[dict]) -> Graph:
        chain = all("args" not in op for op in ops)
        nodes = []
        for i, op in enumerate(ops):
            kind = op["op"]
            if kind not in KINDS:
                raise ValueError(f"unknown op {kind!r} at position {i}")
            params = {k: _frozen(v) for k, v in op.items() if k not in ("op", "args")}
            inputs = (i - 1,) if chain else tuple(int(a) for a in op["args"])
            nodes.append(KINDS[kind](inputs=inputs, **params))
        return cls(tuple(nodes), chain)

    def layer_positions(self) -> list[int]:
        """Position of each layer node, in layer order (its module name is ``str(position)``)."""
        return [pos for pos, node in enumerate(self.nodes) if node.layer]

    def with_plan(self, plan: ScalePlan) -> Graph:
        nodes = tuple(dataclasses.replace(node, **plan.planned[i]) if plan.planned.get(i) else node
                      for i, node in enumerate(self.nodes))
        return Graph(nodes, self.chain)

    def format_version(self) -> int:
        """1 when every op is one ticket files of format version 1 can hold, 3 with product-attention, RMSNorm or
        unsqueeze (Conv1d) ops, else 2."""
        if any(node.kind in V3_KINDS for node in self.nodes):
            return 3
        return 1 if all(node.kind in V1_KINDS for node in self.nodes) else 2

    def module(self, layouts: list[LayerLayout], output_scale: float) -> nn.Sequential:
        """The ticket's skeleton (zero weights); parameter names are ``"<position>.a.weight"`` etc."""
        modules = [node.module(layouts) for node in self.nodes]
        if self.chain:
            if output_scale != 1.0:
                modules.append(Scale(output_scale))
            return nn.Sequential(*modules)
        args = [list(node.inputs) for node in self.nodes]
        if output_scale != 1.0:
            modules.append(Scale(output_scale))
            args.append([len(self.nodes) - 1])
        return GraphNet(modules, args)

    def propagate_bound(self, state_in: State, ctx: BoundContext) -> State:
        state = {-1: state_in}
        for i, node in enumerate(self.nodes):
            state[i] = node.bound([state[a] for a in node.inputs], ctx)
        return state[len(self.nodes) - 1]


def plan_scales(graph: Graph, specs: list, layer_scales: list[float] | None = None) -> ScalePlan:
    """Scales so that every layer's rescaled weights fit in [-REACH, REACH] (docs/theory.md §9.3).

    Dividing a layer by s_l >= 1 divides everything downstream by s_l (ReLU, pooling and flatten are
    positively homogeneous); the ticket's output is multiplied back by the cumulative scale (a fixed
    :class:`Scale`, not a weight). A layer's bias is divided by the cumulative scale at its output, and
    s_l also covers |bias| / (scale at its input). Where a residual join adds branches of cumulative scales
    S_a, S_b it multiplies each by S_i / max(S_a, S_b) (:meth:`AddNode.planned`), which is exact and
    costs no weight; an op that is not positively homogeneous (GELU, LayerNorm, ...) first multiplies back by
    the scale at its input and restarts at 1. ``layer_scales``: replay the plan with these scales (the bound
    does, from a ticket)."""

    at = {-1: 1.0}
    scales = [1.0] * len(specs)
    bias_scales = [1.0] * len(specs)
    planned = {}
    for i, node in enumerate(graph.nodes):
        ins = [at[a] for a in node.inputs]
        if node.layer:
            spec, prod = specs[node.index], (ins[0] if ins else 1.0)  # a constant (ConstNode) reads nothing
            if layer_scales is not None:
                s = float(layer_scales[node.index])
            else:
                biggest = float(np.abs(spec.weight).max()) if spec.weight.size else 0.0
                if spec.bias is not None and spec.bias.size:
                    biggest = max(biggest, float(np.abs(spec.bias).max()) / prod)
                s = max(1.0, biggest / REACH)
            scales[node.index] = s
            bias_scales[node.index] = prod * s
            at[i] = node.layer_scale(prod, s)
            fields = node.layer_planned(prod, s)
            if fields:
                planned[i] = fields
            continue
        fields = node.planned(ins)
        if fields:
            planned[i] = fields
        at[i] = node.scale(ins)
    return ScalePlan(tuple(scales), tuple(bias_scales), planned, float(at[len(graph.nodes) - 1]))


# -- the layer's bound ------------------------------------------------------------------------------
def _lin(kernel: torch.Tensor, x: torch.Tensor, layout: LayerLayout) -> torch.Tensor:
    if layout.conv:
        return F.conv2d(x, kernel, stride=layout.stride, padding=layout.padding, dilation=layout.dilation)
    return x @ kernel.T


def layer_bound(state: State, spec, lay: LayerLayout, r: RealisedKernels) -> State:
    """One pruned pair against its target layer (derivation: docs/construction.md, "certified bound").

    With target kernel W, bias b and the realised kernels P (on relu(x)), Q (on relu(-x), ≈ -W), b^:
    z^ - z = L_{P-W}(relu(h^)) + L_{Q+W}(relu(-h^)) + L_W(h^ - h) + (b^ - b), so with |h^ - h| <= d and
    h in [lo, hi], |z^ - z| <= |L_E(c)| + L_|E|(r) per term (c, r: centre, radius of the relu interval)
    + L_|W|(d) + |b^ - b|. Without a negative group (inputs >= 0 in both networks) P acts on h^ itself."""
    h_lo, h_hi, d = state
    w = torch.from_numpy(spec.weight)
    bias = torch.zeros(spec.d_out, dtype=torch.float64) if spec.bias is None else torch.from_numpy(spec.bias)
    shape = (-1,) + (1,) * len(lay.kernel)

    def term(e, x_lo, x_hi):
        c, rad = (x_lo + x_hi) / 2, (x_hi - x_lo) / 2
        return _lin(e, c, lay).abs() + _lin(e.abs(), rad, lay)

    if r.neg is None:  # inputs >= 0 in both networks: P is applied to h^ itself
        err = term(r.pos - w, (h_lo - d).clamp(min=0), h_hi + d)
    else:
        err = term(r.pos - w, (h_lo - d).clamp(min=0), (h_hi + d).clamp(min=0))
        err = err + term(r.neg + w, (-h_hi - d).clamp(min=0), (-h_lo + d).clamp(min=0))
    err = err + _lin(w.abs(), d, lay)
    if r.bias is not None:
        err = err + (r.bias - bias).abs().reshape(shape)
    elif spec.bias is not None:  # pragma: no cover - layouts follow the target
        err = err + bias.abs().reshape(shape)
    c, rad = (h_lo + h_hi) / 2, (h_hi - h_lo) / 2
    zc, zr = _lin(w, c, lay) + bias.reshape(shape), _lin(w.abs(), rad, lay)
    return zc - zr, zc + zr, err
