"""Construction by module replacement: every weight-holding leaf of the model becomes its pruned random pair.

``construct`` reads a model with torch.fx into a construction graph when it can. A model torch.fx cannot trace
(every Hugging Face transformer, say) is built here instead: each weight-holding leaf module is read as the
same layer specs the traced construction uses (:class:`~slth.construction.target.LinearSpec`) and its random
pair's masks come from the same chunked SubsetSum jobs; the target is only read. ``Ticket.to_module(model=fresh)``
then replaces each such leaf of a fresh instance of the class, in place, by a module holding its pair. The pair
stays in the data path (x -> b(relu(a(x)))), so the ticket is still the user's class: its own ``forward``,
``generate()`` and caches run unchanged over the pruned random weights.

What replaces what (``KINDS``):

* ``linear``: ``nn.Linear`` -> :class:`LeafPair` (a :class:`~slth.construction.network.RandomPair` on the last
  dimension, times a fixed ``factor`` undoing the leaf's rescaling);
* ``conv1d_t``: transformers' ``Conv1D`` (a Linear with its weight stored transposed, (in, out); recognised by
  duck typing -- an ``nf`` attribute and ``forward(x) == x @ weight + bias``, checked numerically) -> LeafPair of
  ``weight.T``;
* ``conv2d`` / ``conv1d``: ``nn.Conv2d`` / ``nn.Conv1d`` (groups 1, zero padding) -> the conv pair (a Conv1d as
  a Conv2d with kernel (1, k) on (N, C, 1, L), :class:`Conv1dPair`);
* ``embedding``: ``nn.Embedding`` -> :class:`EmbeddingLeaf` (E^T on the one-hot of the index);
* ``layernorm`` / ``rmsnorm``: ``nn.LayerNorm``, ``nn.RMSNorm`` and library RMSNorm classes (a leaf whose only
  parameter is ``weight`` and whose output is ``weight * rms_norm(x)``, checked numerically, e.g. LlamaRMSNorm)
  -> :class:`NormLeaf`: the normalisation without affine (:class:`~slth.construction.network.Normalize`)
  followed by the affine as a diagonal pair (diag(gamma), beta) -- the traced construction's realisation of an
  affine it cannot fold; an identity affine needs no pair;
* ``batchnorm``: eval-mode ``BatchNorm1d/2d`` -> :class:`BatchNormLeaf`, the whole per-channel map
  ``gamma (x - mean) / sqrt(var + eps) + beta`` as a diagonal pair on the channel dimension;
* ``mha``: ``nn.MultiheadAttention`` (its forward reads ``in_proj_weight`` itself, so the module is replaced as a
  whole) -> :class:`AttentionLeaf`, four pairs W_q, W_k, W_v, W_o with the same call signature and masks.

* ``const``: a free parameter of a module with children (a class token, a positional embedding, a bias held
  outside a layer) -> a pair with bias units only (:class:`ConstLeaf`, the traced construction's
  :class:`~slth.construction.network.ConstPair`) whose output, each entry within eps of the parameter, replaces
  the parameter as a buffer of the same name. Without a trace its use is not seen: the value is realised, whatever
  the forward then does with it.

Every parameter of another leaf type (``nn.LSTM``, ``nn.PReLU``, a norm that is not weight * normalise(x), ...)
is refused by its full name before any work.

**Tied parameters** (one tensor under two names): an output layer whose weight *is* an embedding's table
(``tie_word_embeddings``: GPT-2's ``lm_head.weight`` is ``transformer.wte.weight``) stays tied -- one pair for the
shared tensor, used at both places, as the class uses one tensor. The embedding's pair realises the table
Ê (Ê^T on the one-hot index, each entry within eps of E); the head (kind ``tied_linear``, :class:`TiedHead`)
computes ``x Ê^T`` from the same pruned random weights, its two layers read in reverse order: a one-hot input and
nonnegative first-layer weights make the embedding's ReLU the identity, so its map is linear and its transpose is
that of the same weights. The head's own bias, if any, is a constant (a bias-units pair). ``lm_head.weight is
transformer.wte.weight`` holds in the rebuilt model (both are the shared pair's ``b.weight``, see ``weight``
below); a fresh instance must tie them too. Embeddings of one table (T5's ``shared``, ``encoder.embed_tokens``
and ``decoder.embed_tokens``: three modules, one tensor) are one pair, installed at each of their paths (the
first one's aliases). Other ties (a bias under two names) get one pair per use. The
ticket records every tie (``stats["tied_parameters"]``). The same module instance under two paths is one pair
at both.

``weight`` of a replaced Linear-like leaf (:class:`LeafPair`, :class:`EmbeddingLeaf`, :class:`TiedHead`) is its
pair's last layer, ``b.weight`` (masked), read-only: the tensor that carries the module's dtype and device, for
code that reads ``layer.weight.dtype`` (ViT's forward casts its pixels to ``projection.weight.dtype``). It is
not the realised map: a pair has no single weight matrix.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .exported import rms_eps as _rms_eps
from .kept import KeptLinear, embedding_lookup, tied_head
from .network import ConstPair, EmbeddingPair, LayerLayout, Normalize, RandomPair
from .target import ExportedLeaves, LinearSpec, _array, fold_affine

# a tied head computes its embedding's table this many random weights at a time (memory: one block, not the pair)
TABLE_BLOCK_VALUES = 1 << 24
KINDS = ("linear", "conv1d_t", "conv1d", "conv2d", "embedding", "layernorm", "rmsnorm", "batchnorm", "mha", "const",
         "tied_linear")
SUPPORTED_LEAVES = ("Linear, transformers' Conv1D, Conv1d/Conv2d (groups 1, zero padding), Embedding, LayerNorm, "
                    "RMSNorm (torch's or a library's weight-only RMSNorm), eval-mode BatchNorm1d/2d, "
                    "MultiheadAttention")


class LeafPair(RandomPair):
    """A Linear-like leaf replaced by its pair on the last dimension (a conv pair on (N, C, H, W)):
    ``b(relu(a(x))) * factor``, the fixed ``factor`` (a buffer) undoing the leaf's rescaling. ``storage``: "dense"
    or "kept" (``b`` holds only the kept weights, :mod:`slth.construction.kept`; Linear layouts only)."""

    def __init__(self, layout: LayerLayout, factor: float = 1.0, storage: str = "dense"):
        super().__init__(layout, storage)
        self.register_buffer("factor", torch.tensor(float(factor)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.factor

    @property
    def weight(self) -> nn.Parameter:
        """The pair's last layer (``b.weight``): the module's dtype and device, not its realised map."""
        return self.b.weight


class Conv1dPair(LeafPair):
    """An ``nn.Conv1d`` as the Conv2d pair with kernel (1, k) on the input viewed as (N, C, 1, L)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.unsqueeze(-2)).squeeze(-2)


class EmbeddingLeaf(EmbeddingPair):
    """An ``nn.Embedding`` replaced by its pair on the one-hot index, times the fixed ``factor``. The pair's map on
    a one-hot input reads only the index's own n first-layer units, so the forward gathers them (the same products
    as ``b(relu(a(one_hot(idx))))``, without the (tokens, num * n) one-hot activations). ``storage="kept"``: ``b``
    holds only its kept weights, column by column (a token's are contiguous; inference only)."""

    def __init__(self, layout: LayerLayout, factor: float = 1.0, storage: str = "dense"):
        super().__init__(layout, storage, columns=True)
        self.register_buffer("factor", torch.tensor(float(factor)))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        num, n = self.a.weight.shape
        flat = idx.reshape(-1).long()
        if flat.numel() and not (0 <= int(flat.min()) and int(flat.max()) < num):
            raise IndexError(f"index out of range: the embedding has {num} entries")
        if isinstance(self.b, KeptLinear):
            out = embedding_lookup(self.b, torch.relu(self.a.weight), flat)
            return out.reshape(*idx.shape, -1) * self.factor
        rows = self.b.weight.unflatten(1, (num, n))[:, flat, :]  # (dim, tokens, n)
        out = (rows * torch.relu(self.a.weight[flat])).sum(-1).T  # (tokens, dim)
        return out.reshape(*idx.shape, -1) * self.factor

    @property
    def weight(self) -> nn.Parameter:
        """The pair's last layer (``b.weight``): the module's dtype and device, not its realised table."""
        return self.b.weight

    def table(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Columns ``start:stop`` of the realised table Ê^T, (dim, num): column k is the embedding of token k,
        computed from the pruned random weights (``b.weight`` times token k's first-layer scalars, summed over its
        n units)."""
        num, n = self.a.weight.shape
        stop = num if stop is None else stop
        if isinstance(self.b, KeptLinear):
            return embedding_lookup(self.b, torch.relu(self.a.weight), torch.arange(start, stop)).T * self.factor
        b = self.b.weight.unflatten(1, (num, n))[:, start:stop, :]
        return (b * torch.relu(self.a.weight[start:stop])).sum(-1) * self.factor


class TiedHead(nn.Module):
    """A Linear whose weight is an embedding's table (a tied output layer): ``x Ê^T (+ bias)``, Ê the table that
    ``embedding`` (an :class:`EmbeddingLeaf`) realises, from its pruned random weights (:meth:`EmbeddingLeaf.table`).
    The embedding is held by reference, not as a child: its parameters are the embedding's, named there once.
    ``bias``: the head's own bias as a :class:`ConstLeaf`, or None."""

    def __init__(self, embedding: EmbeddingLeaf, bias: ConstLeaf | None = None):
        super().__init__()
        object.__setattr__(self, "_tied", (embedding,))
        self.bias = bias

    @property
    def embedding(self) -> EmbeddingLeaf:
        return self._tied[0]

    @property
    def weight(self) -> nn.Parameter:
        """The shared pair's last layer: ``head.weight is embedding.weight``, as in the tied class."""
        return self.embedding.weight

    def __setattr__(self, name: str, value) -> None:
        if name == "weight":  # transformers' tie_weights() sets head.weight = embedding.weight: already so
            if value is self.embedding.weight:
                return
            raise AttributeError("a tied head's weight is its embedding pair's (read-only); it cannot be set to "
                                 "another tensor")
        super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.embedding
        if isinstance(e.b, KeptLinear):  # the pair read in reverse from its kept weights, a token per thread
            out = tied_head(e.b, torch.relu(e.a.weight), x) * e.factor
            return out if self.bias is None else out + self.bias()
        (num, n), dim = e.a.weight.shape, e.b.weight.shape[0]
        step = max(1, TABLE_BLOCK_VALUES // (dim * n))  # the table's columns a block at a time
        out = torch.cat([x @ e.table(s, min(num, s + step)) for s in range(0, num, step)], dim=-1)
        return out if self.bias is None else out + self.bias()

    def extra_repr(self) -> str:
        num, n = self.embedding.a.weight.shape
        return f"tied to an embedding pair ({num} tokens, n={n})"


class NormLeaf(nn.Module):
    """LayerNorm / RMSNorm: the normalisation without affine, then the affine as a diagonal pair (if any)."""

    def __init__(self, shape, eps: float, center: bool, affine: LeafPair | None):
        super().__init__()
        self.norm = Normalize(shape, eps, center=center)
        self.affine = affine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        return y if self.affine is None else self.affine(y)


class BatchNormLeaf(nn.Module):
    """Eval-mode BatchNorm: its per-channel map as a diagonal pair on the channel dimension (dim 1)."""

    def __init__(self, affine: LeafPair):
        super().__init__()
        self.affine = affine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.affine(x.movedim(1, -1)).movedim(-1, 1)


class AttentionLeaf(nn.Module):
    """An ``nn.MultiheadAttention`` with its four projections as pairs (``q``, ``k``, ``v`` on the query, key and
    value inputs, ``o`` on the heads' concatenated output): the same call signature and results as
    ``nn.MultiheadAttention.forward`` (masks: boolean True = not attended, or additive float; ``key_padding_mask``
    (N, S); ``need_weights`` returns the attention averaged over heads unless ``average_attn_weights=False``).
    ``in_proj_bias`` / ``_qkv_same_embed_dim`` are set so that ``nn.TransformerEncoderLayer`` never takes its
    fused fast path, which reads the projection weights directly."""

    in_proj_weight = None
    in_proj_bias = None
    _qkv_same_embed_dim = False

    def __init__(self, q: LeafPair, k: LeafPair, v: LeafPair, o: LeafPair, *, heads: int, batch_first: bool,
                 dropout: float):
        super().__init__()
        self.q, self.k, self.v, self.o = q, k, v, o
        self.num_heads, self.batch_first, self.dropout = int(heads), bool(batch_first), float(dropout)
        self.embed_dim = q.b.d_out if isinstance(q.b, KeptLinear) else q.b.weight.shape[0]
        self.head_dim = self.embed_dim // self.num_heads

    def forward(self, query, key, value, key_padding_mask=None, need_weights: bool = True, attn_mask=None,
                average_attn_weights: bool = True, is_causal: bool = False):
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
            batch_first = False
        else:
            batch_first = self.batch_first
        if not batch_first:  # (L, N, E) -> (N, L, E)
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        n, lq, lk, h, d = query.shape[0], query.shape[1], key.shape[1], self.num_heads, self.head_dim
        q = self.q(query).view(n, lq, h, d).transpose(1, 2)
        k = self.k(key).view(n, lk, h, d).transpose(1, 2)
        v = self.v(value).view(n, lk, h, d).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d)  # (N, H, Lq, Lk)
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(lq, lk, dtype=torch.bool, device=scores.device).triu(1)
        for mask in (attn_mask, None if key_padding_mask is None else key_padding_mask[:, None, None, :]):
            if mask is None:
                continue
            if mask.dim() == 3:  # (N * H, Lq, Lk)
                mask = mask.view(n, h, lq, lk)
            scores = scores.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        p = torch.softmax(scores, dim=-1)
        if self.training and self.dropout > 0:
            p = nn.functional.dropout(p, self.dropout)
        out = self.o((p @ v).transpose(1, 2).reshape(n, lq, h * d))
        if not batch_first:
            out = out.transpose(0, 1)
        if unbatched:
            out = out.squeeze(1)
        weights = None
        if need_weights:
            weights = p.mean(dim=1) if average_attn_weights else p
            weights = weights.squeeze(0) if unbatched else weights
        return out, weights


class ConstLeaf(ConstPair):
    """A free parameter (class token, positional embedding, ...) as a pair of bias units only, times ``factor``:
    called without input it gives the realised constant, which replaces the parameter as a buffer."""

    def __init__(self, layout: LayerLayout, shape, factor: float = 1.0):
        super().__init__(layout, shape)
        self.register_buffer("factor", torch.tensor(float(factor)))

    def forward(self) -> torch.Tensor:
        return super().forward() * self.factor


@dataclass(frozen=True)
class Leaf:
    """One replaced module: where it sits (``path``; ``aliases``: other paths of the same instance), what it
    is, its pairs' layer indices (none: a normalisation with an identity affine; four for an attention: q, k, v,
    out), their scales, and the options its module needs (a norm's ``shape`` and ``eps``; an attention's
    ``heads``, ``batch_first``, ``dropout``)."""

    path: str
    kind: str
    layers: tuple = ()
    scales: tuple = ()
    options: dict = field(default_factory=dict)
    aliases: tuple = ()

    @property
    def prefixes(self) -> list[str]:
        """Where its pairs sit in the rebuilt model (their parameters' name prefixes), in layer order."""
        if self.kind == "mha":
            return [f"{self.path}.{p}" for p in ("q", "k", "v", "o")]
        if self.kind in ("layernorm", "rmsnorm", "batchnorm"):
            return [f"{self.path}.affine"][: len(self.layers)]
        if self.kind == "tied_linear":  # its pairs are its tied embedding's; its own: the bias, if any
            return [f"{self.path}.bias"][: len(self.layers)]
        return [self.path]

    def to_json(self) -> dict:
        out = {"path": self.path, "kind": self.kind, "layers": list(self.layers), "scales": list(self.scales),
               **{k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()}}
        if self.aliases:
            out["aliases"] = list(self.aliases)
        return out

    @classmethod
    def from_json(cls, d: dict) -> Leaf:
        if d["kind"] not in KINDS:
            raise ValueError(f"unknown module kind {d['kind']!r} for {d['path']!r}")
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()
                   if k not in ("path", "kind", "layers", "scales", "aliases")}
        return cls(str(d["path"]), d["kind"], tuple(int(v) for v in d["layers"]),
                   tuple(float(v) for v in d["scales"]), options, tuple(str(a) for a in d.get("aliases", ())))

    def module(self, layouts: list[LayerLayout], tied: nn.Module | None = None, storage: str = "dense") -> nn.Module:
        """The replacement module (zero weights); its parameters are named as in the ticket's masks. ``tied``:
        for a ``tied_linear`` leaf, the module built for the embedding it is tied to (``options["tie"]``).
        ``storage="kept"``: its Linear-like pairs and embedding pairs hold only their kept weights (empty until
        filled); conv pairs and constants stay dense."""
        pairs = [(layouts[i], s, storage) for i, s in zip(self.layers, self.scales)]
        opt = self.options
        if self.kind == "tied_linear":
            if not isinstance(tied, EmbeddingLeaf):
                raise ValueError(f"{self.path!r} is tied to the embedding {opt['tie']!r}: build that first")
            bias = ConstLeaf(pairs[0][0], (pairs[0][0].d_out,), pairs[0][1]) if pairs else None  # dense: a constant
            return TiedHead(tied, bias)
        if self.kind in ("linear", "conv1d_t"):
            return LeafPair(*pairs[0])
        if self.kind in ("conv2d", "conv1d"):  # conv pairs are dense whatever the storage
            return (LeafPair if self.kind == "conv2d" else Conv1dPair)(*pairs[0][:2])
        if self.kind == "embedding":
            return EmbeddingLeaf(*pairs[0])
        if self.kind in ("layernorm", "rmsnorm"):
            return NormLeaf(opt["shape"], opt["eps"], self.kind == "layernorm", LeafPair(*pairs[0]) if pairs else None)
        if self.kind == "const":
            return ConstLeaf(pairs[0][0], opt["shape"], pairs[0][1])
        if self.kind == "mha":
            return AttentionLeaf(*(LeafPair(*pair) for pair in pairs), heads=opt["heads"],
                                 batch_first=opt["batch_first"], dropout=opt["dropout"])
        return BatchNormLeaf(LeafPair(*pairs[0]))


def _is_conv1d_t(module: nn.Module) -> bool:
    """transformers' ``Conv1D`` by duck typing: a 2-D ``weight`` (in, nf), a ``bias`` (nf,) or None, no children,
    and ``forward(x) == x @ weight + bias`` (checked on a random input)."""
    w = getattr(module, "weight", None)
    nf = getattr(module, "nf", None)
    if type(module).__name__ != "Conv1D" or not isinstance(w, nn.Parameter) or w.ndim != 2 or w.shape[1] != nf:
        return False
    b = getattr(module, "bias", None)
    x = torch.randn(3, w.shape[0], generator=torch.Generator().manual_seed(0), dtype=w.dtype).to(w.device)
    with torch.no_grad():
        want = x @ w + (0 if b is None else b)
        try:
            got = module(x)
        except Exception:  # noqa: BLE001 - any failure means it is not the module we know
            return False
    return isinstance(got, torch.Tensor) and got.shape == want.shape and torch.allclose(got, want, 1e-4, 1e-5)


def _scale(spec: LinearSpec) -> float:
    from .graph import REACH

    biggest = float(np.abs(spec.weight).max()) if spec.weight.size else 0.0
    if spec.bias is not None and spec.bias.size:
        biggest = max(biggest, float(np.abs(spec.bias).max()))
    return max(1.0, biggest / REACH)


def _conv_spec(module, kind: str, path: str) -> LinearSpec:
    name = type(module).__name__
    if module.groups != 1:
        raise NotImplementedError(f"{name} {path!r} has groups={module.groups}: grouped/depthwise convolutions are "
                                  "not supported")
    if isinstance(module.padding, str) or module.padding_mode != "zeros":
        raise NotImplementedError(f"{name} {path!r}: padding={module.padding!r}, padding_mode="
                                  f"{module.padding_mode!r}; only explicit zero padding is supported")
    weight = _array(module.weight, f"weight of {name} {path!r}")
    bias = None if module.bias is None else _array(module.bias, f"bias of {name} {path!r}")
    if kind == "conv1d":
        weight = weight[:, :, None, :]
        conv = {"kernel": [1, *module.kernel_size], "stride": [1, *module.stride],
                "padding": [0, *module.padding], "dilation": [1, *module.dilation]}
    else:
        conv = {k: [int(v) for v in getattr(module, a)] for k, a in
                (("kernel", "kernel_size"), ("stride", "stride"), ("padding", "padding"), ("dilation", "dilation"))}
    if bias is not None:
        (kh, kw), (ph, pw), (dh, dw) = conv["kernel"], conv["padding"], conv["dilation"]
        if ph > ((kh - 1) // 2) * dh or pw > ((kw - 1) // 2) * dw:
            raise NotImplementedError(
                f"{name} {path!r} has a bias and padding {module.padding} larger than its kernel's centre offset: no "
                "tap sees the image at every output pixel, so the bias cannot be carried through zero padding")
    return LinearSpec(path, weight, bias, False, conv=conv)


def _attention_specs(module: nn.MultiheadAttention, path: str) -> list[LinearSpec]:
    """W_q, W_k, W_v (split from ``in_proj_weight``, or the separate ``*_proj_weight`` when kdim/vdim differ) and
    W_o, with their biases."""
    if module.bias_k is not None or module.add_zero_attn:
        raise NotImplementedError(f"MultiheadAttention {path!r} has add_bias_kv / add_zero_attn, which module "
                                  "replacement does not realise")
    e = module.embed_dim
    if module._qkv_same_embed_dim:
        w = _array(module.in_proj_weight, f"in_proj_weight of MultiheadAttention {path!r}")
        weights = [w[:e], w[e : 2 * e], w[2 * e :]]
    else:
        weights = [_array(getattr(module, f"{x}_proj_weight"), f"{x}_proj_weight of MultiheadAttention {path!r}")
                   for x in "qkv"]
    b = None if module.in_proj_bias is None else _array(module.in_proj_bias, f"in_proj_bias of {path!r}")
    biases = [None] * 3 if b is None else [b[:e], b[e : 2 * e], b[2 * e :]]
    out_bias = None if module.out_proj.bias is None else _array(module.out_proj.bias, f"out_proj.bias of {path!r}")
    specs = [LinearSpec(f"{path}.{x}", w, bias, False) for x, w, bias in zip("qkv", weights, biases)]
    return specs + [LinearSpec(f"{path}.o", _array(module.out_proj.weight, f"out_proj.weight of {path!r}"),
                               out_bias, False)]


def _leaf(path: str, module: nn.Module) -> tuple[str, list[LinearSpec], dict] | None:
    """(kind, its pairs' layer specs, options) of a weight-holding module we can replace; None if it is not one."""
    name = type(module).__name__
    if isinstance(module, nn.MultiheadAttention):
        return "mha", _attention_specs(module, path), {"heads": int(module.num_heads),
                                                       "batch_first": bool(module.batch_first),
                                                       "dropout": float(module.dropout)}
    if isinstance(module, nn.Linear):
        bias = None if module.bias is None else _array(module.bias, f"bias of Linear {path!r}")
        return "linear", [LinearSpec(path, _array(module.weight, f"weight of Linear {path!r}"), bias, False)], {}
    if _is_conv1d_t(module):
        bias = None if module.bias is None else _array(module.bias, f"bias of Conv1D {path!r}")
        weight = np.ascontiguousarray(_array(module.weight, f"weight of Conv1D {path!r}").T)
        return "conv1d_t", [LinearSpec(path, weight, bias, False)], {}
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        kind = "conv1d" if isinstance(module, nn.Conv1d) else "conv2d"
        return kind, [_conv_spec(module, kind, path)], {}
    if isinstance(module, nn.Embedding):
        if module.max_norm is not None:
            raise NotImplementedError(f"Embedding {path!r} with max_norm (it renormalises rows) is not supported")
        table = _array(module.weight, f"weight of Embedding {path!r}")
        return "embedding", [LinearSpec(path, np.ascontiguousarray(table.T), None, True)], {}
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or _rms_eps(module) is not None:
        shape = tuple(int(v) for v in getattr(module, "normalized_shape", module.weight.shape))
        if len(shape) != 1:
            raise NotImplementedError(f"{name} {path!r} normalises over {shape}; only the last dimension is "
                                      "supported")
        if isinstance(module, nn.LayerNorm):
            kind, eps = "layernorm", float(module.eps)
        elif isinstance(module, nn.RMSNorm):  # eps=None: torch uses the float32 machine epsilon
            kind, eps = "rmsnorm", torch.finfo(torch.float32).eps if module.eps is None else float(module.eps)
        else:
            kind, eps = "rmsnorm", _rms_eps(module)
        gamma = None if module.weight is None else _array(module.weight, f"weight of {name} {path!r}")
        beta = None if getattr(module, "bias", None) is None else _array(module.bias, f"bias of {name} {path!r}")
        options = {"shape": shape, "eps": eps}
        if (gamma is None or (gamma == 1).all()) and (beta is None or not beta.any()):
            return kind, [], options  # identity affine: the normalisation alone is exact
        gamma = np.ones(shape) if gamma is None else gamma
        return kind, [LinearSpec(path, np.diag(gamma), beta, False)], options
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, nn.BatchNorm3d):
        if module.running_mean is None or module.running_var is None:
            raise NotImplementedError(f"{name} {path!r} has no running statistics (track_running_stats=False)")
        mean = _array(module.running_mean, f"running_mean of {name} {path!r}")
        var = _array(module.running_var, f"running_var of {name} {path!r}")
        gamma = _array(module.weight, f"weight of {name} {path!r}") if module.weight is not None else np.ones_like(mean)
        beta = _array(module.bias, f"bias of {name} {path!r}") if module.bias is not None else np.zeros_like(mean)
        factor = gamma / np.sqrt(var + float(module.eps))  # eval mode: factor * x + (beta - mean * factor)
        return "batchnorm", [LinearSpec(path, np.diag(factor), beta - mean * factor, False)], {}
    return None


def _qualname(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


@dataclass(frozen=True)
class ModulePlan:
    """What module replacement builds for a model: its leaves, their layer specs (one per pair, in layer
    order), the tied parameter names (groups of names of one tensor), the folded norms and the Linear-like leaves
    whose pairs read a nonnegative input (n first-layer units per input)."""

    leaves: tuple[Leaf, ...]
    specs: tuple[LinearSpec, ...]
    tied: tuple[tuple[str, ...], ...]
    model: str  # the model's class, module-qualified
    folds: dict = field(default_factory=dict)  # norm path -> the readers its affine was folded into
    nonnegative: tuple = ()  # Linear-like leaves whose input is >= 0 in every call of the exported graph


def plan_modules(model: nn.Module, exported: Callable[[dict[str, str]], ExportedLeaves] | None = None
                 ) -> ModulePlan:
    """Find every weight-holding leaf of ``model`` and read it as layer specs; refuse (``NotImplementedError``
    naming the full parameter name) any parameter that module replacement cannot realise, before any work.
    The model is not changed.

    ``exported``: called with {module path: leaf kind} once every parameter was checked, returns what the model's
    exported graph says of its leaves (:func:`slth.construction.target.exported_leaves`): each norm of its
    ``folds`` ({norm path: its readers' paths}) keeps no affine pair (its normalisation alone) and each reader's
    pair realises W diag(gamma), with bias b + W beta (exact: W (gamma z + beta) + b); each Linear-like leaf of its
    ``nonnegative`` reads its input as nonnegative (its pair has n first-layer units per input, not 2n). The plan
    records both (``ModulePlan.folds``, ``ModulePlan.nonnegative``)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    paths: dict[int, list[str]] = {}
    modules: dict[int, nn.Module] = {}
    for path, module in model.named_modules(remove_duplicate=False):
        paths.setdefault(id(module), []).append(path)
        modules[id(module)] = module
    owned: dict[str, list[str]] = {}  # module path -> full names of its own parameters
    for full, _ in model.named_parameters(remove_duplicate=False):
        owner = full.rsplit(".", 1)[0] if "." in full else ""
        owned.setdefault(owner, []).append(full)
    # refuse first (every parameter checked before any spec is read)
    handled: dict[int, tuple] = {}
    consts: list[tuple] = []  # (full parameter name, [its spec], options) of the free parameters
    # an attention's out_proj is its own: the attention is one replaced module
    inside = {id(m) for key, mha in modules.items() if isinstance(mha, nn.MultiheadAttention)
              for m in mha.modules() if m is not mha}
    for key, module in modules.items():
        path = paths[key][0]
        if key in inside or not list(module.parameters(recurse=False)):
            continue
        has_children = any(True for _ in module.children()) and not isinstance(module, nn.MultiheadAttention)
        if has_children:  # free parameters of a module with children: constants, realised by bias units
            for name, param in module.named_parameters(recurse=False):
                full = f"{path}.{name}" if path else name
                arr = _array(param, f"parameter {full!r}")
                consts.append((full, [LinearSpec(full, np.zeros((arr.size, 0)), arr.reshape(-1).copy(), True)],
                               {"shape": tuple(int(v) for v in arr.shape)}))
            continue
        info = _leaf(path, module)
        if info is None:
            full = next(n for p in paths[key] for n in owned.get(p, []))
            raise NotImplementedError(
                f"parameter {full!r} belongs to {type(module).__name__} {path!r}, which module replacement cannot "
                f"realise; supported weight-holding modules: {SUPPORTED_LEAVES}")
        handled[key] = info
    if not handled and not consts:
        raise ValueError("the model has no weight-holding module to construct")
    # embeddings of one table (T5's shared, encoder.embed_tokens and decoder.embed_tokens: three modules, one
    # tensor) are one pair, installed at each of their paths as the aliases of the first
    shared: dict[int, list[str]] = {}  # first embedding's key -> the paths of the others
    tables: dict[int, str] = {}  # the table's id -> the first embedding's path
    for key, info in list(handled.items()):
        if info[0] == "embedding":
            first = tables.setdefault(id(modules[key].weight), paths[key][0])
            if first != paths[key][0]:
                first_key = next(k for k in handled if paths[k][0] == first)
                shared.setdefault(first_key, []).extend(paths[key])
                del handled[key]
    # an output Linear whose weight is an embedding's table (tie_word_embeddings) is computed from the
    # embedding's pair: its own specs are its bias only, as a constant (bias units)
    for key, (kind, leaf_specs, _) in list(handled.items()):
        tie = tables.get(id(modules[key].weight)) if kind == "linear" else None
        if tie is not None:
            bias = leaf_specs[0].bias
            own = [] if bias is None else [LinearSpec(f"{paths[key][0]}.bias", np.zeros((bias.size, 0)), bias.copy(),
                                                      True)]
            handled[key] = ("tied_linear", own, {"tie": tie})
    folded: dict[str, tuple[str, ...]] = {}
    nonnegative: tuple[str, ...] = ()
    if exported is not None:
        read = exported({path: info[0] for key, info in handled.items() for path in paths[key]})
        keys = {path: key for key in handled for path in paths[key]}
        folded, nonnegative = read.folds, read.nonnegative
        _fold(handled, keys, folded)
        _nonnegative(handled, keys, nonnegative)
    leaves, specs = [], []
    for key, (kind, leaf_specs, options) in handled.items():
        path, *aliases = paths[key] + shared.get(key, [])
        layers = tuple(range(len(specs), len(specs) + len(leaf_specs)))
        specs += leaf_specs
        leaves.append(Leaf(path, kind, layers, tuple(_scale(spec) for spec in leaf_specs), options, tuple(aliases)))
    for full, leaf_specs, options in consts:
        leaves.append(Leaf(full, "const", (len(specs),), (_scale(leaf_specs[0]),), options))
        specs += leaf_specs
    names: dict[int, list[str]] = {}
    for full, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(full)
    # the same module under two paths shares its parameters by construction; a tie is one tensor in two modules
    same = {a for key in handled for a in paths[key][1:]}
    tied = tuple(tuple(group) for group in names.values() if len({g.rsplit(".", 1)[0] for g in group} - same) > 1)
    return ModulePlan(tuple(leaves), tuple(specs), tied, _qualname(model), folded, nonnegative)


def _fold(handled: dict, keys: dict[str, int], folds: dict[str, tuple[str, ...]]) -> None:
    """Fold each norm's affine into its readers' specs, in ``handled`` (module key -> (kind, specs, options))."""
    for norm, readers in folds.items():
        kind, norm_specs, options = handled[keys[norm]]
        if kind not in ("layernorm", "rmsnorm") or not readers:
            raise ValueError(f"cannot fold {norm!r} (a {kind}) into {list(readers)}")
        if not norm_specs:  # an identity affine: nothing to fold
            continue
        gamma, beta = np.diag(norm_specs[0].weight), norm_specs[0].bias
        handled[keys[norm]] = (kind, [], options)
        for reader in readers:
            rkind, (spec,), roptions = handled[keys[reader]]
            if rkind not in ("linear", "conv1d_t") or spec.d_in != gamma.shape[0]:
                raise ValueError(f"cannot fold {norm!r} into {reader!r} (a {rkind} of {spec.d_in} inputs)")
            weight, bias = fold_affine(spec.weight, spec.bias, gamma, beta if beta is not None and beta.any() else None)
            folded = LinearSpec(spec.path, weight, bias, False)
            handled[keys[reader]] = (rkind, [folded], roptions)


def _nonnegative(handled: dict, keys: dict[str, int], paths: tuple[str, ...]) -> None:
    """Mark the specs of the Linear-like leaves at ``paths`` as reading a nonnegative input, in ``handled``."""
    for path in paths:
        kind, specs, options = handled[keys[path]]
        if kind not in ("linear", "conv1d_t"):
            raise ValueError(f"cannot read {path!r} (a {kind}) as a Linear on a nonnegative input")
        handled[keys[path]] = (kind, [dataclasses.replace(specs[0], nonnegative_input=True)], options)


def _locate(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    parent, _, name = path.rpartition(".")
    return (model.get_submodule(parent) if parent else model), name


def check_model(model: nn.Module, leaves: list[Leaf], layouts: list[LayerLayout], model_class: str) -> None:
    """Refuse (``ValueError``) a model whose modules at the ticket's paths are not the ones the ticket replaces
    (missing, of another kind or of other sizes), before anything is built."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module (a fresh {model_class}), got {type(model).__name__}")
    for leaf in leaves:
        if leaf.kind == "const":
            try:
                param = model.get_parameter(leaf.path)
            except AttributeError:
                raise ValueError(f"the model has no parameter {leaf.path!r}, which the ticket realises (the ticket "
                                 f"was built for a {model_class})") from None
            if tuple(param.shape) != tuple(leaf.options["shape"]):
                raise ValueError(f"parameter {leaf.path!r} of the model has shape {tuple(param.shape)}, the "
                                 f"ticket's {tuple(leaf.options['shape'])}")
            continue
        for path in (leaf.path, *leaf.aliases):
            try:
                module = model.get_submodule(path)
            except AttributeError:
                raise ValueError(f"the model has no module {path!r}, which the ticket replaces (the ticket was "
                                 f"built for a {model_class})") from None
            try:
                info = _leaf(path, module)
            except NotImplementedError as exc:
                raise ValueError(f"module {path!r} of the model does not match the ticket: {exc}") from None
            if leaf.kind == "tied_linear":
                _check_tie(model, path, module, info, leaf)
                continue
            if info is None or info[0] != leaf.kind:
                raise ValueError(f"module {path!r} of the model is a {type(module).__name__}, the ticket replaces a "
                                 f"{leaf.kind} there (built for a {model_class})")
            specs, options = info[1], info[2]
            if options != leaf.options:
                raise ValueError(f"module {path!r} of the model has {options}, the ticket's {leaf.options}")
            # a fresh norm's affine is the identity (no spec): its size is in its options, compared above
            for layer, spec in zip(leaf.layers, specs) if len(specs) == len(leaf.layers) else ():
                lay = layouts[layer]
                want = (lay.d_out, lay.d_in, *lay.kernel)
                got = (spec.d_out, spec.d_in, *(spec.conv["kernel"] if spec.conv else ()))
                if want != got or (spec.bias is not None and not lay.bias):
                    raise ValueError(f"module {path!r} of the model has shape {got} (bias: {spec.bias is not None}); "
                                     f"the ticket's pair realises {want} (bias: {lay.bias})")


def _check_tie(model: nn.Module, path: str, module: nn.Module, info, leaf: Leaf) -> None:
    """A ``tied_linear`` leaf's module in a fresh model: a Linear whose weight is its embedding's (the model ties
    them as the target did), with a bias exactly when the ticket realises one."""
    tie = leaf.options["tie"]
    if info is None or info[0] != "linear":
        raise ValueError(f"module {path!r} of the model is a {type(module).__name__}, the ticket replaces a Linear "
                         f"tied to {tie!r} there")
    try:
        table = model.get_submodule(tie).weight
    except AttributeError:
        table = None
    if module.weight is not table:
        raise ValueError(f"module {path!r} of the model is not tied to {tie!r} (its weight is not {tie}.weight); the "
                         "ticket realises one pair for both, as its target tied them: rebuild it in an instance whose "
                         "config ties them (tie_word_embeddings=True)")
    if (module.bias is not None) != bool(leaf.layers):
        raise ValueError(f"module {path!r} of the model has bias={module.bias is not None}, the ticket's "
                         f"{bool(leaf.layers)}")


def install(model: nn.Module, leaves: list[Leaf], built: dict[str, nn.Module]) -> nn.Module:
    """Set each leaf's new module (``built[leaf.path]``) at its path and aliases of ``model``, in place (check the
    model with :func:`check_model` first); returns ``model``."""
    for leaf in leaves:
        if leaf.kind == "const":  # the free parameter becomes a buffer holding its realised value
            owner, name = _locate(model, leaf.path)
            with torch.no_grad():
                value = built[leaf.path]().detach()
            delattr(owner, name)
            owner.register_buffer(name, value)
            continue
        for path in (leaf.path, *leaf.aliases):
            parent, name = _locate(model, path)
            setattr(parent, name, built[leaf.path])
    return model


def first_untraceable(model: nn.Module, trace_error: str) -> str:
    """The deepest module on the first failing path that torch.fx cannot trace, with its error: the first piece a
    certified bound would need and cannot read. ``trace_error``: the whole model's trace error."""
    import torch.fx as fx

    def pieces(module, prefix):  # children, with torch's containers (ModuleList, ...) opened
        for name, child in module.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
                yield from pieces(child, path)
            elif not type(child).__module__.startswith("torch.") and list(child.parameters()):
                yield path, child

    path, error = "", trace_error
    module = model
    while True:
        for name, child in pieces(module, path):
            try:
                fx.symbolic_trace(child)
            except Exception as exc:  # noqa: BLE001 - any trace failure is what we look for
                path, error, module = name, f"{type(exc).__name__}: {exc}", child
                break
        else:
            break
    where = f"{type(module).__name__} {path!r}" if path else f"the model ({type(model).__name__})"
    return f"{where}: {error}".strip()


__all__ = ["KINDS", "Leaf", "ModulePlan", "plan_modules", "check_model", "install", "first_untraceable",
           "LeafPair", "Conv1dPair", "EmbeddingLeaf", "TiedHead", "NormLeaf", "BatchNormLeaf"]
