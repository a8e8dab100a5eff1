"""Read a target network into a construction graph: an ``nn.Sequential`` chain, or a torch.fx trace (asserts and
dead code dropped, optional None inputs fixed), each op turned into a typed node of :mod:`.graph` and each
weight-holding layer into a :class:`LinearSpec` (:func:`parse_target`). A target torch.fx cannot trace raises
:class:`UntraceableError` (``construct`` then replaces its modules instead, :mod:`.modules`); every other refusal
names the op's file, line and module. :func:`parse_exported` reads a torch.export graph (normalised by
:mod:`.exported`) with the same parser, for the certified bound of a module-replacement ticket.
:func:`load_target` reads a saved target from disk."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .graph import (
    ActivationNode,
    AdaptiveAvgPoolNode,
    AdaptiveMaxPoolNode,
    AddNode,
    AttentionNode,
    AvgPoolNode,
    CatNode,
    ConstNode,
    EmbeddingNode,
    ExpandNode,
    FlattenNode,
    GetItemNode,
    Graph,
    IdentityNode,
    LayerNode,
    LayerNormNode,
    MatmulNode,
    MaxPoolNode,
    MeanNode,
    MulConstNode,
    MulNode,
    Node,
    PermuteNode,
    QKNode,
    ReluNode,
    ReshapeNode,
    RMSNormNode,
    ShiftNode,
    SoftmaxNode,
    SplitNode,
    UnsqueezeNode,
    VONode,
)

SUPPORTED = (
    "Flatten, Linear, Conv1d and Conv2d (groups=1, zero padding), BatchNorm1d/2d (folded into the preceding layer), "
    "ReLU, GELU, SiLU, Tanh, Sigmoid, LayerNorm and RMSNorm (last dimension; the affine folded into the Linear "
    "layers that read it), Embedding (of the network input), MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, "
    "AdaptiveMaxPool2d, Identity, Dropout, TransformerEncoderLayer, TransformerEncoder (nested nn.Sequential "
    "allowed); other modules are traced with torch.fx, which adds residual additions (x + y, x + constant), "
    "MultiheadAttention (self-attention), reshape/view/expand, transpose/permute, indexing, split/chunk, cat, "
    "matmul of activations, x @ constant matrix, softmax(dim=-1), scaled_dot_product_attention, mean(dim), x * "
    "number, unbind, F.linear / F.embedding / F.layer_norm / F.rms_norm on the target's parameters; shape "
    "assertions and code that does not reach the output are dropped"
)
ACTIVATION_MODULES = {"GELU": "gelu", "SiLU": "silu", "Tanh": "tanh", "Sigmoid": "sigmoid"}
LAYERS = ("Linear", "Conv2d", "Conv1d")
ATTENTION_MODES = ("projection", "product")  # construct(..., attention=): docs/construction.md, "Attention"


class UntraceableError(NotImplementedError):
    """torch.fx cannot trace the target (``construct`` then replaces its modules instead, ``modules.py``)."""


@dataclass
class LinearSpec:
    """One target Linear (weight (d_out, d_in)) or Conv2d (weight (c_out, c_in, kh, kw), geometry in
    ``conv``), with its bias (a folded BatchNorm included) and where it sits."""

    path: str
    weight: np.ndarray  # float64
    bias: np.ndarray | None  # float64
    nonnegative_input: bool  # inputs are >= 0 (after a ReLU, or declared)
    relu_after: bool = False
    conv: dict | None = None  # {"kernel", "stride", "padding", "dilation"} (lists of two ints) for a Conv2d
    # a merged map of the product attention construction: its first random layer is a selector without a ReLU,
    # so one sign group of units serves inputs of either sign
    selector: bool = False
    # the target's parameter names of weight and bias ("" where none), where the parser knows them: a bound of a
    # module-replacement ticket finds each layer's pair by them (:func:`parse_exported`)
    source: tuple = ()

    @property
    def d_out(self) -> int:
        return self.weight.shape[0]

    @property
    def d_in(self) -> int:
        return self.weight.shape[1]

    @property
    def taps(self) -> int:
        return int(np.prod(self.weight.shape[2:], dtype=np.int64))

    @property
    def params(self) -> int:
        return self.weight.size + (0 if self.bias is None else self.bias.size)


def _type_name(module) -> str:
    # TorchScript modules keep the Python class name in ``original_name``
    return getattr(module, "original_name", None) or type(module).__name__


def _walk(module, prefix: str):
    # _modules, not named_children(): that skips a module instance seen before, and a Sequential may apply
    # the same instance twice (one nn.ReLU object after every layer)
    for name, child in module._modules.items():
        if child is None:
            continue
        path = f"{prefix}.{name}" if prefix else name
        if _type_name(child) == "Sequential":
            yield from _walk(child, path)
        else:
            yield path, child


def _held(module, path: str) -> str:
    """``; it holds parameters 'a.w', ... that the construction cannot realise`` for a refused module with
    parameters (the names as in the target's ``named_parameters()``)."""
    names = [f"{path}.{name}" if path else name for name, _ in module.named_parameters()]
    if not names:
        return ""
    shown = ", ".join(repr(n) for n in names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return f"; it holds parameter(s) {shown}, which the construction cannot realise"


def _array(t: torch.Tensor, what: str) -> np.ndarray:
    arr = t.detach().to("cpu", torch.float64).numpy().copy()
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contains NaN or inf")
    return arr


def _pair(v) -> list[int]:
    return [int(x) for x in v] if isinstance(v, (tuple, list)) else [int(v), int(v)]


def fold_affine(weight: np.ndarray, bias, gamma: np.ndarray, beta) -> tuple[np.ndarray, np.ndarray | None]:
    """A norm's affine (gamma, beta) folded into the Linear (weight, bias) that reads it, exact:
    W (gamma z + beta) + b = (W diag(gamma)) z + (b + W beta). ``beta`` None: no shift, the bias stays as it is.
    The one fold of the traced construction, of the bound's graphs and of module replacement's folded readers."""
    if beta is not None:
        bias = weight @ beta + (0.0 if bias is None else bias)
    return weight * gamma[None, :], bias


class _Builder:
    """Collects typed nodes and layer specs; ``graph=True``: nodes read any earlier value (-1 = the input),
    else each reads the previous one (a chain)."""

    def __init__(self, nonnegative_input: bool, graph: bool, shift: float | None = None,
                 attention: str = "projection", leaves: bool = False, folds=None):
        self.attention_mode = attention
        # ``leaves``: the graph of a module-replacement ticket's target, for its bound: every norm's affine is its
        # own (diagonal) layer, as module replacement builds it, unless it is folded into its readers (``folds``);
        # constants carry the ticket's value beside the target's (:class:`_Const`)
        self.leaves = leaves
        # ``folds`` (with ``leaves``): the norms (module paths) whose affine the ticket folded into the Linear layers
        # that read them (their affines stay pending, through last-dimension-keeping reshapes, and a norm any other
        # node reads is refused), or FOLD_ALL: fold wherever a Linear reads a norm and record where (``folded``:
        # norm path -> the spec indices that folded it; ``unfolded``: norms some other node read)
        self.folds = folds
        self.folded: dict[str, list[int]] = {}
        self.unfolded: set[str] = set()
        self.pending_norm: dict[int, str] = {}  # pending value -> its norm's module path (``folds`` only)
        self.pending_sources: dict[int, tuple] = {}  # pending value -> its affine's parameter names
        self.const_values: dict[int, torch.Tensor] = {}  # leaves: spec index of a constant -> the ticket's value
        self.nodes: list[Node] = []
        self.specs: list[LinearSpec] = []
        self.graph = graph
        self.nonneg = {-1: bool(nonnegative_input)}
        self.flat = {-1: None}  # is the value flat (N, d)? None = unknown (the input)
        self.shift = shift  # inputs lie in [shift, hi] with shift < 0: layers reading them are fed x - shift
        self.raw = {-1: True}  # the value is the input itself, up to ops that commute with a shift
        self.pending: dict[int, tuple] = {}  # value -> (gamma, beta, path) of a LayerNorm affine still to fold
        self.affines: dict[int, int] = {}  # pending value -> its affine realised as a diagonal Linear
        self.consts: dict = {}  # key -> ConstNode value of a constant of the target

    def emit(self, node: Node, flat, folds_affine: bool = False) -> int:
        if not folds_affine and any(a in self.pending_norm for a in node.inputs):  # a folded norm's other reader
            node = dataclasses.replace(node, inputs=tuple(self.plain(a) for a in node.inputs))
        for a in node.inputs:
            if a in self.pending and not folds_affine:
                raise NotImplementedError(
                    f"the affine of LayerNorm {self.pending[a][2]!r} is folded into the Linear layers that read it, "
                    f"but {node.kind} node {len(self.nodes)} reads it too; only Linear layers may read a LayerNorm "
                    "with a non-trivial affine")
        self.nodes.append(node)
        i = len(self.nodes) - 1
        self.nonneg[i], self.flat[i] = node.nonneg([self.nonneg[a] for a in node.inputs]), flat
        # flatten and max pooling (padded with -inf) commute with subtracting a constant
        self.raw[i] = isinstance(node, (FlattenNode, MaxPoolNode, AdaptiveMaxPoolNode)) and self.raw[node.inputs[0]]
        return i

    def shifted(self, src: int, weight: np.ndarray, bias, conv) -> tuple[int, np.ndarray | None]:
        """Feed a layer that reads the raw input x in [lo, hi] (lo < 0) with pad(x) - lo >= 0 instead: a
        :class:`ShiftNode`, and bias b + W lo (summed over inputs and taps), so W (x - lo) + b + W lo = W x + b.
        A conv's zero padding moves into the shift (padded pixels are 0 in x's units) and the conv runs
        unpadded."""
        pad = ()
        if conv is not None:
            pad, conv["padding"] = tuple(conv["padding"]), [0, 0]
        src = self.emit(ShiftNode((src,), float(self.shift), pad), self.flat[src])
        extra = self.shift * weight.reshape(weight.shape[0], -1).sum(axis=1)
        return src, extra if bias is None else bias + extra

    def layer(self, module, kind: str, path: str, where: str, src: int) -> int:
        weight = _array(module.weight, f"weight of {kind} {path!r}")
        bias = None if module.bias is None else _array(module.bias, f"bias of {kind} {path!r}")
        conv = None
        if kind in ("Conv2d", "Conv1d"):
            reshaped = src >= 0 and isinstance(self.nodes[src], (PermuteNode, ReshapeNode))  # (N, L, E) -> (N, E, L)
            if self.flat[src] and not (kind == "Conv1d" and reshaped):
                raise NotImplementedError(
                    f"{kind} {where} ({path!r}) after a Linear is not supported (its input is flat)")
            if module.groups != 1:
                raise NotImplementedError(
                    f"{kind} {where} ({path!r}) has groups={module.groups}: grouped/depthwise convolutions are not "
                    f"supported by construct(); supported: {SUPPORTED}")
            if isinstance(module.padding, str) or module.padding_mode != "zeros":
                raise NotImplementedError(
                    f"{kind} {where} ({path!r}): padding={module.padding!r}, padding_mode={module.padding_mode!r}; "
                    "only explicit zero padding is supported")
            if kind == "Conv1d":  # a Conv2d with kernel (1, k) on (N, C, 1, L), between an unsqueeze and a squeeze
                feeder = self._feeding_layer(src)
                if feeder is not None and self.specs[feeder.index].conv is not None:
                    raise NotImplementedError(
                        f"Conv1d {where} ({path!r}) reads the 4-D output of Conv2d {self.specs[feeder.index].path!r}")
                weight = weight[:, :, None, :]
                conv = {"kernel": [1, *module.kernel_size], "stride": [1, *module.stride],
                        "padding": [0, *module.padding], "dilation": [1, *module.dilation]}
                src = self.emit(UnsqueezeNode((src,), 2), False)
                out = self.linear(weight, bias, kind, path, where, src, conv)
                return self.emit(UnsqueezeNode((out,), 2, squeeze=True), False)
            conv = {"kernel": _pair(module.kernel_size), "stride": _pair(module.stride),
                    "padding": _pair(module.padding), "dilation": _pair(module.dilation)}
        return self.linear(weight, bias, kind, path, where, src, conv)

    def _feeding_layer(self, src: int):
        """The LayerNode whose output reaches ``src`` through shape-keeping elementwise ops and pooling only."""
        node = self.nodes[src] if src >= 0 else None
        while isinstance(node, (ReluNode, ActivationNode, MaxPoolNode, AvgPoolNode, IdentityNode)):
            node = self.nodes[node.inputs[0]] if node.inputs[0] >= 0 else None
        return node if isinstance(node, LayerNode) else None

    def _layer_behind(self, src: int):
        """The node ``src`` names, or the Conv1d layer behind its squeeze (BatchNorm1d and ReLU fold into it)."""
        node = self.nodes[src] if src >= 0 else None
        if isinstance(node, UnsqueezeNode) and node.squeeze:
            return self.nodes[node.inputs[0]]
        return node

    def linear(self, weight: np.ndarray, bias, kind: str, path: str, where: str, src: int, conv=None,
               source: tuple = ()) -> int:
        """A Linear (or, with ``conv``, Conv2d) map from its float64 arrays: folds a pending LayerNorm affine
        and an input shift, and emits its :class:`LayerNode`."""
        if conv is None and not self.graph and self.specs and self.flat[src] and self.specs[-1].conv is None \
                and self.specs[-1].d_out != weight.shape[1]:
            raise ValueError(
                f"Linear {path!r} expects {weight.shape[1]} inputs but the previous Linear gives "
                f"{self.specs[-1].d_out}")
        folds = src in self.pending
        if folds:  # W (gamma * z + beta) + b = (W diag(gamma)) z + (b + W beta): exact
            gamma, beta, ln_path = self.pending[src]
            if conv is not None or weight.shape[1] != gamma.shape[0]:
                raise NotImplementedError(f"{kind} {where} ({path!r}) reads LayerNorm {ln_path!r}, whose affine can "
                                          "only be folded into a Linear over its normalised features")
            if src in self.pending_norm and self.pending_norm[src] not in self.unfolded:
                self.folded.setdefault(self.pending_norm[src], []).append(len(self.specs))
            weight, bias = fold_affine(weight, bias, gamma, beta)
            path = f"{ln_path}+{path}"
        if self.shift is not None and self.raw[src]:
            src, bias = self.shifted(src, weight, bias, conv)
        self.specs.append(LinearSpec(path, weight, bias, self.nonneg[src], conv=conv, source=source))
        return self.emit(LayerNode((src,), len(self.specs) - 1), kind == "Linear", folds_affine=folds)

    def embedding(self, module, path: str, where: str, src: int) -> int:
        if module.max_norm is not None:
            raise NotImplementedError(f"Embedding {where} ({path!r}) with max_norm (it renormalises rows) is "
                                      "not supported")
        return self.embedding_table(module.weight, path, where, src)

    def embedding_table(self, weight: torch.Tensor, path: str, where: str, src: int, source: tuple = ()) -> int:
        """An embedding lookup of the table ``weight`` (num, dim) at the indices ``src``: the network input, or the
        input reshaped / indexed (the indices move, their values do not)."""
        at = src
        while at >= 0 and isinstance(self.nodes[at], (ReshapeNode, PermuteNode, GetItemNode, IdentityNode)):
            at = self.nodes[at].inputs[0]
        if at != -1:
            raise NotImplementedError(f"Embedding {where} ({path!r}) must read the network input (token indices)")
        table = _array(weight, f"weight of Embedding {path!r}")  # (num, dim)
        # the map E^T (dim, num) on the one-hot of the index: a nonnegative input
        self.specs.append(LinearSpec(path, np.ascontiguousarray(table.T), None, True, source=source))
        return self.emit(EmbeddingNode((src,), len(self.specs) - 1), True)

    def activation(self, fn: str, src: int) -> int:
        return self.emit(ActivationNode((src,), fn), self.flat[src])

    def layernorm(self, module, path: str, where: str, src: int) -> int:
        """LayerNorm or (``nn.RMSNorm``) RMSNorm: the normalisation as a node, its affine pending (folded into the
        Linear layers that read it, else realised as a diagonal pair)."""
        name = type(module).__name__
        rms = isinstance(module, nn.RMSNorm)
        eps = module.eps
        if rms and eps is None:  # eps=None: torch uses the float32 machine epsilon
            eps = torch.finfo(torch.float32).eps
        return self.normalise(name, module.normalized_shape, eps, module.weight, getattr(module, "bias", None),
                              path, where, src, rms)

    def normalise(self, name: str, normalized_shape, eps, weight, bias, path: str, where: str, src: int,
                  rms: bool = False, source: tuple = ()) -> int:
        """A LayerNorm (``rms``: RMSNorm) with shape, eps and affine tensors (None: absent), from a module or from
        a call of ``F.layer_norm`` / ``F.rms_norm`` on parameters of the target."""
        shape = tuple(int(v) for v in normalized_shape)
        if len(shape) != 1:
            raise NotImplementedError(f"{name} {where} ({path!r}) normalises over {shape}; only the last "
                                      "dimension is supported")
        node = RMSNormNode if rms else LayerNormNode
        i = self.emit(node((src,), shape, float(eps)), self.flat[src])
        gamma = None if weight is None else _array(weight, f"weight of {name} {path!r}")
        beta = None if bias is None else _array(bias, f"bias of {name} {path!r}")
        if (gamma is not None and not (gamma == 1).all()) or (beta is not None and beta.any()):
            self.pending[i] = (np.ones(shape) if gamma is None else gamma, np.zeros(shape) if beta is None else beta,
                               path)
            self.pending_sources[i] = source
            norm = source[0].rpartition(".")[0] if source and source[0] else None
            if self.leaves and norm is not None and (self.folds is FOLD_ALL or norm in (self.folds or ())):
                self.pending_norm[i] = norm  # folded into its Linear readers, as the ticket did
            elif self.leaves:  # module replacement's NormLeaf: the affine is a diagonal pair of its own
                return self.plain(i)
        return i

    def carries_affine(self, src: int) -> bool:
        """A value carrying a folded norm's pending affine (``folds``): a reshape that keeps the last dimension
        passes it on (a transformers ``Conv1D`` flattens its input before its ``addmm``)."""
        return src in self.pending_norm

    def carry(self, src: int, node: Node) -> int:
        """Emit ``node`` (a last-dimension-keeping reshape of ``src``) with ``src``'s pending affine carried on."""
        i = self.emit(node, True, folds_affine=True)
        self.pending[i], self.pending_norm[i] = self.pending[src], self.pending_norm[src]
        self.pending_sources[i] = self.pending_sources.get(src, ())
        return i

    def batchnorm(self, module, kind: str, path: str, where: str, src: int, sole_user: bool = True) -> int:
        node = self._layer_behind(src)
        if not isinstance(node, LayerNode) or not sole_user:
            raise NotImplementedError(
                f"{kind} {where} ({path!r}) does not directly follow a Linear/Conv1d/Conv2d whose output only it "
                "reads; only BatchNorm right after a layer can be folded")
        if module.running_mean is None or module.running_var is None:
            raise NotImplementedError(
                f"{kind} {where} ({path!r}) has no running statistics (track_running_stats=False)")
        spec = self.specs[node.index]
        mean = _array(module.running_mean, f"running_mean of {kind} {path!r}")
        var = _array(module.running_var, f"running_var of {kind} {path!r}")
        gamma = _array(module.weight, f"weight of {kind} {path!r}") if module.weight is not None else np.ones_like(mean)
        beta = _array(module.bias, f"bias of {kind} {path!r}") if module.bias is not None else np.zeros_like(mean)
        if mean.shape[0] != spec.d_out:
            raise ValueError(f"{kind} {path!r} has {mean.shape[0]} features but {spec.path!r} gives {spec.d_out}")
        # eval-mode BatchNorm: y = gamma (z - mean) / sqrt(var + eps) + beta = factor z + shift
        factor = gamma / np.sqrt(var + float(module.eps))
        spec.weight = spec.weight * factor.reshape(-1, *([1] * (spec.weight.ndim - 1)))
        spec.bias = beta - mean * factor + (0.0 if spec.bias is None else spec.bias * factor)
        spec.path = f"{spec.path}+{path}"
        return src

    def relu(self, src: int) -> int:
        layer = self._layer_behind(src)
        if isinstance(layer, LayerNode):
            self.specs[layer.index].relu_after = True
        return self.emit(ReluNode((src,)), self.flat[src])

    def module(self, module, path: str, where: str, src: int, sole_user: bool = True) -> int:
        kind = _type_name(module)
        if kind in LAYERS:
            return self.layer(module, kind, path, where, src)
        if kind in ("BatchNorm1d", "BatchNorm2d"):
            return self.batchnorm(module, kind, path, where, src, sole_user)
        if kind in ACTIVATION_MODULES:
            fn = ACTIVATION_MODULES[kind]
            if kind == "GELU" and getattr(module, "approximate", "none") == "tanh":
                fn = "gelu_tanh"
            return self.activation(fn, src)
        if kind in ("LayerNorm", "RMSNorm"):
            return self.layernorm(module, path, where, src)
        if kind == "Embedding":
            return self.embedding(module, path, where, src)
        if kind == "ReLU":
            return self.relu(src)
        if kind == "Flatten":
            if not self.graph and self.specs and self.specs[-1].conv is None:
                raise NotImplementedError(f"Flatten {where} ({path!r}) after a Linear is not supported")
            return self.flatten(src, int(module.start_dim), int(module.end_dim))
        if kind == "MaxPool2d":
            if module.return_indices:
                raise NotImplementedError(f"MaxPool2d {where} ({path!r}) with return_indices is not supported")
            stride = module.stride if module.stride is not None else module.kernel_size
            return self.emit(MaxPoolNode((src,), _pair(module.kernel_size), _pair(stride), _pair(module.padding),
                                         _pair(module.dilation), bool(module.ceil_mode)), False)
        if kind == "AvgPool2d":
            stride = module.stride if module.stride is not None else module.kernel_size
            return self.emit(AvgPoolNode((src,), _pair(module.kernel_size), _pair(stride), _pair(module.padding),
                                         bool(module.ceil_mode), bool(module.count_include_pad),
                                         module.divisor_override), False)
        if kind in ("AdaptiveAvgPool2d", "AdaptiveMaxPool2d"):
            return self.adaptive(kind, module.output_size, src)
        if kind in ("Identity", "Dropout"):
            return src  # identity in eval mode
        if kind == "TransformerEncoderLayer":
            return self.encoder_layer(module, path, where, src)
        if kind == "TransformerEncoder":
            return self.encoder(module, path, where, src)
        if kind == "MultiheadAttention":
            raise NotImplementedError(f"MultiheadAttention {where} ({path!r}) inside an nn.Sequential: it takes "
                                      "(query, key, value) and returns a tuple; call it from a module's forward")
        raise NotImplementedError(
            f"layer {kind} {where} ({path!r}) is not supported by construct(){_held(module, path)}\n"
            f"supported: {SUPPORTED}")

    def adaptive(self, kind: str, output_size, src: int) -> int:
        size = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size, output_size)
        node = AdaptiveAvgPoolNode if kind == "AdaptiveAvgPool2d" else AdaptiveMaxPoolNode
        return self.emit(node((src,), size), False)

    def flatten(self, src: int, start_dim: int, end_dim: int) -> int:
        return self.emit(FlattenNode((src,), start_dim, end_dim), True)

    def add(self, a: int, b: int) -> int:
        return self.emit(AddNode((a, b), (1.0, 1.0)), self.flat[a])

    # -- attention (docs/construction.md, "Attention") ----------------------------------------------------
    def plain(self, src: int) -> int:
        """``src`` for a reader that is not a Linear: a LayerNorm's pending affine is realised first, as a
        diagonal Linear (diag(gamma), beta) pair reading it (memoised; Linear readers still fold it)."""
        if src not in self.pending:
            return src
        if src in self.pending_norm:  # a folded norm read by something other than a Linear
            norm = self.pending_norm[src]
            if self.folds is not FOLD_ALL:
                raise NotImplementedError(
                    f"the ticket folded the affine of {norm!r} into the Linear layers that read it, but in this graph "
                    f"node {len(self.nodes)} (not a Linear) reads it too: the graph is not the one the ticket was "
                    "built from")
            self.unfolded.add(norm)  # (before its diagonal pair below, which is no reader it folds into)
        if src not in self.affines:
            d = self.pending[src][0].shape[0]
            self.affines[src] = self.linear(np.eye(d), None, "Linear", "affine", "(its affine)", src,
                                            source=self.pending_sources.get(src, ()))
        return self.affines[src]

    def const(self, value: torch.Tensor, key, path: str, ticket=None) -> int:
        """A constant tensor of the target as a :class:`ConstNode` (a pair of bias units only), memoised by key.
        ``ticket``: with ``leaves``, the value the ticket computes there (:class:`_Const`)."""
        if key not in self.consts:
            arr = _array(value, f"constant {path!r}")
            if self.leaves:
                if ticket is _UNKNOWN:
                    raise NotImplementedError(
                        f"the constant {path!r} is computed from the weights of a layer that the ticket realises as a "
                        "pair, which has no single weight tensor: the bound cannot follow it")
                self.const_values[len(self.specs)] = value if ticket is None else ticket
            self.specs.append(LinearSpec(path, np.zeros((arr.size, 0)), arr.reshape(-1).copy(), True))
            self.consts[key] = self.emit(ConstNode((), len(self.specs) - 1, tuple(arr.shape)), True)
        return self.consts[key]

    def op(self, node: Node) -> int:
        """A parameter-free op; its inputs must not carry a pending LayerNorm affine (realised by :meth:`plain`)."""
        node = dataclasses.replace(node, inputs=tuple(self.plain(a) for a in node.inputs))
        return self.emit(node, True)

    def attention(self, mha, path: str, where: str, src: int, mask=(), causal: bool = False) -> int:
        """``nn.MultiheadAttention`` as self-attention on ``src``: the q, k, v projections (slices of in_proj,
        each a Linear with its bias), head split, :class:`AttentionNode`, head merge, out_proj."""
        if getattr(mha, "bias_k", None) is not None or getattr(mha, "add_zero_attn", False):
            raise NotImplementedError(f"MultiheadAttention {where} ({path!r}) with add_bias_kv / add_zero_attn is "
                                      "not supported")
        if mha.training and mha.dropout > 0:
            raise NotImplementedError(f"MultiheadAttention {where} ({path!r}) is in training mode with dropout "
                                      f"{mha.dropout}; construct an eval() model")
        if self.attention_mode == "product":
            return self.product_attention(mha, path, where, src, mask, causal)
        e, h = int(mha.embed_dim), int(mha.num_heads)
        if mha._qkv_same_embed_dim:
            w = _array(mha.in_proj_weight, f"in_proj_weight of {path!r}")
            ws = [w[:e], w[e:2 * e], w[2 * e:]]
        else:
            ws = [_array(getattr(mha, f"{c}_proj_weight"), f"{c}_proj_weight of {path!r}") for c in "qkv"]
        bs = [None] * 3
        if mha.in_proj_bias is not None:
            b = _array(mha.in_proj_bias, f"in_proj_bias of {path!r}")
            bs = [b[:e], b[e:2 * e], b[2 * e:]]
        heads = []
        for c, w_c, b_c in zip("qkv", ws, bs):
            t = self.linear(w_c, b_c, "Linear", f"{path}.in_proj.{c}", where, src)
            if not mha.batch_first:  # (L, N, E) -> (N, L, E), after the projection (it may fold a LayerNorm affine)
                t = self.op(PermuteNode((t,), (0, 1), True))
            t = self.op(ReshapeNode((t, t), ((0, 0, 1, 1), (0, 1, 1, 1), h, e // h)))  # (N, L, H, E/H)
            heads.append(self.op(PermuteNode((t,), (1, 2), True)))  # (N, H, L, E/H)
        a = self.op(AttentionNode(tuple(heads), bool(causal), tuple(mask)))
        a = self.op(FlattenNode((self.op(PermuteNode((a,), (1, 2), True)),), 2, -1))  # (N, L, E)
        out_bias = None if mha.out_proj.bias is None else _array(mha.out_proj.bias, f"out_proj.bias of {path!r}")
        out = self.linear(_array(mha.out_proj.weight, f"out_proj.weight of {path!r}"), out_bias, "Linear",
                          f"{path}.out_proj", where, a)
        return self.op(PermuteNode((out,), (0, 1), True)) if not mha.batch_first else out

    def product_attention(self, mha, path: str, where: str, src: int, mask=(), causal: bool = False) -> int:
        """``nn.MultiheadAttention`` as ONE random attention pruned for its merged maps (Otsuka et al.): per head a
        :class:`QKNode` (M_h = W_q^h W_k^h^T / sqrt(e), key-side bias c_h = W_k^h b_q^h / sqrt(e)) and one
        :class:`VONode` (N_h = W_v^h W_o^h, bias b_o + b_v W_o^T). A pending LayerNorm affine x = z gamma + beta
        is folded (exact): M' = diag(gamma) M diag(gamma), c' = gamma (c + M^T beta) (the query-only term cancels
        in the softmax), N' = diag(gamma) N, b' + sum_h beta N_h."""
        if not mha._qkv_same_embed_dim:
            raise NotImplementedError(f"MultiheadAttention {where} ({path!r}) with kdim/vdim != embed_dim")
        e, heads = int(mha.embed_dim), int(mha.num_heads)
        hd = e // heads
        scale = 1.0 / float(np.sqrt(hd))
        w = _array(mha.in_proj_weight, f"in_proj_weight of {path!r}")
        wq, wk, wv = w[:e], w[e:2 * e], w[2 * e:]
        bq = bv = None
        if mha.in_proj_bias is not None:
            b = _array(mha.in_proj_bias, f"in_proj_bias of {path!r}")
            bq, bv = b[:e], b[2 * e:]  # b_k only adds terms constant over the keys: the softmax cancels them
        wo = _array(mha.out_proj.weight, f"out_proj.weight of {path!r}")
        bo = None if mha.out_proj.bias is None else _array(mha.out_proj.bias, f"out_proj.bias of {path!r}")
        if not mha.batch_first:  # (L, N, E) -> (N, L, E); the permute keeps the features, so an affine still folds
            t = self.emit(PermuteNode((src,), (0, 1), True), True, folds_affine=True)
            if src in self.pending:
                self.pending[t] = self.pending[src]
            src = t
        folds = src in self.pending
        gamma, beta, ln_path = self.pending[src] if folds else (np.ones(e), np.zeros(e), None)
        prefix = f"{ln_path}+{path}" if folds else path
        scores = []
        for h in range(heads):
            sl = slice(h * hd, (h + 1) * hd)
            m = wq[sl].T @ wk[sl] * scale  # (e, e): x_s M x_t^T
            c = np.zeros(e) if bq is None else wk[sl].T @ bq[sl] * scale
            c = gamma * (c + m.T @ beta)
            m = gamma[:, None] * m * gamma[None, :]
            bias = c if (bq is not None or folds) else None
            self.specs.append(LinearSpec(f"{prefix}.qk{h}", np.ascontiguousarray(m.T), bias, self.nonneg[src],
                                         selector=True))
            scores.append(self.emit(QKNode((src,), len(self.specs) - 1), False, folds_affine=folds))
        n_maps = [wv[h * hd:(h + 1) * hd].T @ wo[:, h * hd:(h + 1) * hd].T for h in range(heads)]  # (e, e) each
        bias = None
        if bo is not None or bv is not None or folds:
            bias = (np.zeros(e) if bo is None else bo) + (0.0 if bv is None else wo @ bv)
            bias = bias + sum(beta @ n_h for n_h in n_maps)
        weight = np.concatenate([(gamma[:, None] * n_h).T for n_h in n_maps], axis=1)  # (e, H e)
        self.specs.append(LinearSpec(f"{prefix}.vo", weight, bias, self.nonneg[src], selector=True))
        out = self.emit(VONode((src, *scores), len(self.specs) - 1, heads, bool(causal), tuple(mask)), True,
                        folds_affine=folds)
        return self.op(PermuteNode((out,), (0, 1), True)) if not mha.batch_first else out

    def encoder_layer(self, layer, path: str, where: str, src: int, mask=(), causal: bool = False) -> int:
        """``nn.TransformerEncoderLayer``: residuals, both LayerNorms (norm_first True or False), self-attention
        and the feed-forward Linear - activation - Linear."""
        if layer.training and any(getattr(layer, f"dropout{s}").p > 0 for s in ("", "1", "2")):
            raise NotImplementedError(f"TransformerEncoderLayer {where} ({path!r}) is in training mode with dropout; "
                                      "construct an eval() model")
        act = layer.activation
        if act is F.relu or isinstance(act, nn.ReLU):
            def activation(x):
                return self.relu(x)
        elif act is F.gelu:
            def activation(x):
                return self.activation("gelu", x)
        elif isinstance(act, nn.Module):
            def activation(x):
                return self.module(act, f"{path}.activation", where, x)
        else:
            raise NotImplementedError(f"TransformerEncoderLayer {where} ({path!r}): activation {act!r} is not "
                                      "supported (F.relu, F.gelu or a supported module)")

        def sa(x):
            return self.attention(layer.self_attn, f"{path}.self_attn", where, x, mask, causal)

        def ff(x):
            x = self.layer(layer.linear1, "Linear", f"{path}.linear1", where, x)
            return self.layer(layer.linear2, "Linear", f"{path}.linear2", where, activation(x))

        def norm(m, name, x):
            return self.layernorm(m, f"{path}.{name}", where, x)

        x = src
        if layer.norm_first:
            x = self.add(self.plain(x), sa(norm(layer.norm1, "norm1", x)))
            return self.add(x, ff(norm(layer.norm2, "norm2", x)))
        x = norm(layer.norm1, "norm1", self.add(self.plain(x), sa(x)))
        return norm(layer.norm2, "norm2", self.add(self.plain(x), ff(x)))

    def encoder(self, enc, path: str, where: str, src: int, mask=(), causal: bool = False) -> int:
        x = src
        for i, layer in enumerate(enc.layers):
            x = self.encoder_layer(layer, f"{path}.layers.{i}", where, x, mask, causal)
        if enc.norm is not None:
            x = self.layernorm(enc.norm, f"{path}.norm", where, x)
        return x

    def finish(self, out: int) -> tuple[Graph, list[LinearSpec]]:
        if not self.specs:
            raise ValueError("target has no Linear or Conv2d layer")
        if out in self.pending:
            raise NotImplementedError(f"the network ends with LayerNorm {self.pending[out][2]!r}, whose affine has no "
                                      "Linear to fold into")
        if self.graph and out != len(self.nodes) - 1:
            self.emit(IdentityNode((out,)), self.flat[out])
        for spec in self.specs:
            if spec.conv is not None and spec.bias is not None:
                (kh, kw), (ph, pw), (dh, dw) = spec.conv["kernel"], spec.conv["padding"], spec.conv["dilation"]
                if ph > ((kh - 1) // 2) * dh or pw > ((kw - 1) // 2) * dw:
                    raise NotImplementedError(
                        f"Conv2d {spec.path!r} has a bias (or a folded BatchNorm) and padding {spec.conv['padding']} "
                        f"larger than its kernel's centre offset: no tap sees the image at every output pixel, so "
                        "the bias cannot be carried through zero padding")
        return Graph(tuple(self.nodes), chain=not self.graph), self.specs


def input_range_of(input_range, nonnegative_input: bool = False) -> tuple[float, float] | None:
    """Check a declared input box ``(lo, hi)``; ``nonnegative_input=True`` alone means (0, 1). None: no box
    declared (inputs of any sign)."""
    if input_range is None:
        return (0.0, 1.0) if nonnegative_input else None
    try:
        lo, hi = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise ValueError(f"input_range must be two numbers (lo, hi), got {input_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"input_range must be finite, got ({lo}, {hi})")
    if not lo < hi:
        raise ValueError(f"input_range needs lo < hi, got ({lo}, {hi})")
    if nonnegative_input and lo < 0:
        raise ValueError(f"nonnegative_input=True contradicts input_range ({lo}, {hi}) with lo < 0")
    return lo, hi


def as_example_inputs(example_inputs) -> tuple:
    """``example_inputs`` as a tuple of tensors (one tensor: a tuple of it); anything else is refused by name."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)) or not example_inputs or \
            not all(isinstance(x, torch.Tensor) for x in example_inputs):
        raise ValueError(f"example_inputs must be a tuple of tensors (the target's positional inputs), got "
                         f"{type(example_inputs).__name__}")
    return tuple(example_inputs)


def check_example_inputs(target, example_inputs) -> tuple:
    """``example_inputs`` as a tuple of tensors (:func:`as_example_inputs`), after running ``target`` on them (no
    gradients): a target that fails on its own example inputs is refused with the error it raised."""
    example_inputs = as_example_inputs(example_inputs)
    try:
        with torch.no_grad():
            target(*example_inputs)
    except Exception as exc:
        shapes = ", ".join(f"{tuple(x.shape)} {x.dtype}" for x in example_inputs)
        raise ValueError(f"example_inputs: the target fails on them ({shapes}): {type(exc).__name__}: {exc}") from None
    return tuple(example_inputs)


def parse_options(config: dict) -> dict:
    """The :func:`parse_target` arguments a ticket was built with (from its config)."""
    return {"nonnegative_input": config["nonnegative_input"], "input_range": config.get("input_range"),
            "attention": config.get("attention", "projection")}


def parse_target(target, *, nonnegative_input: bool = False, input_range=None,
                 attention: str = "projection") -> tuple[Graph, list[LinearSpec]]:
    """Return (graph, layers): a :class:`~slth.construction.graph.Graph` of typed nodes (layers, ReLU,
    pools, flatten, residual joins) and the target's layers.

    An ``nn.Sequential`` (or a TorchScript one) gives a chain; any other ``nn.Module`` is traced with
    ``torch.fx`` into a graph whose nodes read any earlier value (-1 = the input), which is how
    residual blocks are represented. Eval-mode BatchNorm is folded into the preceding layer.
    ``input_range=(lo, hi)``: inputs lie in that box; lo >= 0 makes them nonnegative, lo < 0 feeds every layer
    that reads the input (through flatten / max pooling only) with x - lo >= 0 (a ``shift`` node, the shift
    folded into that layer's bias). Raises ``NotImplementedError`` naming the first unsupported layer and its
    position or path, ``ValueError`` for NaN/inf weights or a network with no Linear/Conv2d layer.
    ``attention``: ``"projection"`` (each of W_q, W_k, W_v, W_o a pair) or ``"product"`` (every
    ``nn.MultiheadAttention`` one random attention pruned for its merged maps, :meth:`_Builder.product_attention`).
    """
    if attention not in ATTENTION_MODES:
        raise ValueError(f"unknown attention construction {attention!r}; valid: {', '.join(ATTENTION_MODES)}")
    box = input_range_of(input_range, nonnegative_input)
    nonneg = box is not None and box[0] >= 0
    shift = box[0] if box is not None and box[0] < 0 else None
    kind = _type_name(target)
    if kind == "Sequential":
        # transformer layers add residual joins: a graph, not a chain
        graph = any(_type_name(m) in TRANSFORMER_MODULES for _, m in _walk(target, ""))
        b = _Builder(nonneg, graph=graph, shift=shift, attention=attention)
        out = -1
        for position, (path, module) in enumerate(_walk(target, "")):
            out = b.module(module, path, f"at position {position}", out)
        return b.finish(out)
    if kind in TRANSFORMER_MODULES:  # a bare layer; a bare MultiheadAttention is self-attention x -> mha(x, x, x)[0]
        b = _Builder(nonneg, graph=True, shift=shift, attention=attention)
        build = {"MultiheadAttention": b.attention, "TransformerEncoderLayer": b.encoder_layer,
                 "TransformerEncoder": b.encoder}[kind]
        return b.finish(b.plain(build(target, kind, "at the top", -1)))
    if not isinstance(target, nn.Module) or type(target).__module__.startswith("torch."):
        raise NotImplementedError(
            f"target must be an nn.Sequential of {SUPPORTED}, or an nn.Module whose forward torch.fx can trace; "
            f"got {kind}")
    return _parse_fx(target, nonneg, shift, attention)


TRANSFORMER_MODULES = ("MultiheadAttention", "TransformerEncoderLayer", "TransformerEncoder")


def export_target(target: nn.Module, example_inputs):
    """``target`` exported with ``torch.export`` (``strict=False``) on ``example_inputs`` and normalised into the
    parser's op set (:func:`slth.construction.exported.normalise`; a ``use_cache`` argument is set to False).
    The graph is valid for inputs of the example's shape only. Raises :class:`UntraceableError` when torch.export
    cannot export it."""
    import inspect

    from .exported import normalise

    inputs = check_example_inputs(target, example_inputs)
    try:
        names = inspect.signature(target.forward).parameters
    except (TypeError, ValueError):
        names = {}
    kwargs = {"use_cache": False} if "use_cache" in names else {}
    try:
        ep = torch.export.export(target, inputs, kwargs=kwargs, strict=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UntraceableError(f"torch.export cannot export {_type_name(target)} ({type(exc).__name__}: "
                               f"{first})") from None
    return normalise(ep, target)


FOLD_ALL = "all"  # _Builder(folds=FOLD_ALL): fold every norm affine a Linear reads, recording where


@dataclass(frozen=True)
class ExportedGraph:
    """The graph of a target as torch.export sees it, read for a module-replacement ticket's bound
    (:func:`parse_exported`): the construction graph, its layers, {spec index of a constant: the value the ticket
    computes there} and the input shape the graph is valid for (the example's)."""

    graph: Graph
    specs: tuple[LinearSpec, ...]
    consts: dict[int, torch.Tensor]
    shape: tuple[int, ...]


def parse_exported(target: nn.Module, example_inputs, realised: dict | None = None, folds=None) -> ExportedGraph:
    """The graph of ``target`` as torch.export sees it on ``example_inputs``, read by the one parser for the bound
    of a module-replacement ticket: every layer is named by its parameters (``LinearSpec.source``), every norm's
    affine is its own diagonal layer (as module replacement builds it), and every constant carries the value the
    ticket computes there (from ``realised``: parameter name -> realised tensor). Refusals name the op, the line of
    the model's code that made it and its module.

    ``folds``: the norms (module paths) whose affine the ticket folded into its readers (``config["folds"]``): their
    readers' specs are W diag(gamma), b + W beta, as the ticket realises them."""
    exported = export_target(target, example_inputs)
    b = _Builder(False, graph=True, leaves=True, folds=folds)
    graph, specs = _parse_gm(exported.module, b, realised)
    return ExportedGraph(graph, tuple(specs), b.const_values, tuple(exported.shape))


@dataclass(frozen=True)
class ExportedLeaves:
    """What module replacement reads from the target's exported graph (:func:`exported_leaves`): the norms whose
    affine folds into their readers ({norm path: its readers' paths}) and the Linear-like leaves whose input is
    nonnegative in every call (their pairs need no negative units: n first-layer units per input, not 2n)."""

    folds: dict[str, tuple[str, ...]]
    nonnegative: tuple[str, ...]


def exported_leaves(target: nn.Module, exported, kinds: dict[str, str]) -> ExportedLeaves:
    """Read the exported graph of ``target`` (``exported``, :func:`export_target`) once with the one parser;
    ``kinds``: module path -> its leaf kind.

    A norm folds when every node that reads its output (through reshapes that keep the last dimension) is a Linear
    whose module is a ``linear`` or ``conv1d_t`` leaf, and every call of those modules in the graph reads that norm:
    not a norm whose output also feeds a residual add or any other op, nor a head tied to an embedding (its weight
    is the embedding's table).

    A ``linear`` or ``conv1d_t`` leaf reads a nonnegative input when, in every call of it in the graph, the layer's
    input is nonnegative as the traced construction decides it (:meth:`Node.nonneg`: the output of a ReLU, a
    sigmoid, a softmax, ...; ``LinearSpec.nonnegative_input``)."""
    b = _Builder(False, graph=True, leaves=True, folds=FOLD_ALL)
    # constants read as the target's own values (no ticket yet)
    _, specs = _parse_gm(exported.module, b, {k: v.detach() for k, v in target.named_parameters()})
    calls: dict[str, list[int]] = {}  # module path -> the specs of its calls
    for index, spec in enumerate(specs):
        if spec.source and spec.source[0]:
            calls.setdefault(spec.source[0].rpartition(".")[0], []).append(index)
    folds = {}
    for norm, readers in b.folded.items():
        if norm in b.unfolded or kinds.get(norm) not in ("layernorm", "rmsnorm"):
            continue
        paths = [specs[i].source[0].rpartition(".")[0] if specs[i].source and specs[i].source[0] else ""
                 for i in readers]
        if all(kinds.get(p) in ("linear", "conv1d_t") and set(calls[p]) <= set(readers) for p in paths):
            folds[norm] = tuple(dict.fromkeys(paths))
    nonnegative = tuple(path for path, at in calls.items() if kinds.get(path) in ("linear", "conv1d_t")
                        and all(specs[i].nonnegative_input for i in at))
    return ExportedLeaves(folds, nonnegative)


@dataclass(frozen=True)
class _Const:
    """A value of the traced target that does not depend on its input (a parameter, a buffer, a literal, or
    anything computed from them alone): evaluated at parse time. ``ticket``: when parsing for a module-replacement
    ticket's bound, the value the ticket computes there (``_UNKNOWN``: none, it reads a layer realised as a pair)."""

    value: object
    key: str
    ticket: object = None


_UNKNOWN = object()


@dataclass(frozen=True)
class _Shape:
    ref: int  # x.shape / x.size() of value ref


@dataclass(frozen=True)
class _Dim:
    ref: int  # x.size(dim) * mul // div of value ref
    dim: int
    mul: int = 1
    div: int = 1


@dataclass(frozen=True)
class _Size:
    """An int computed from traced sizes that no single ``x.size(d) * m // k`` expresses (``n_h * n_w``)."""

    what: str  # the fx node's name


class _Parts:
    """The outputs of a split / chunk (made on first use) or of a MultiheadAttention call."""

    def __init__(self, make, what: str):
        self.make, self.what, self.made = make, what, {}

    def get(self, i: int) -> int:
        if i not in self.made:
            self.made[i] = self.make(i)
        return self.made[i]


def _causal_rows(lq: int, lk: int) -> tuple:
    return tuple(tuple(None if j > i else 0.0 for j in range(lk)) for i in range(lq))


def _mask_rows(mask, blocked_when_true: bool, causal: bool, where: str, uniform: bool = False) -> tuple[tuple, bool]:
    """A constant 2-D attention mask as stored rows (floats, None = -inf) and the causal flag. ``blocked_when_true``:
    a bool mask's True means "may not attend" (nn.MultiheadAttention) rather than "may" (scaled_dot_product_attention).
    A mask equal to the causal one becomes the causal flag (it then fits any sequence length). ``uniform``: a mask
    with leading (batch, head) dimensions whose every slice is the same is read as that slice (a bound's graph, whose
    sizes are fixed: transformers build their masks (batch, 1, Lq, Lk))."""
    if mask is None:
        return (), bool(causal)
    if isinstance(mask, _Const):
        mask = mask.value
    while uniform and isinstance(mask, torch.Tensor) and mask.dim() > 2 and (mask == mask[:1]).all():
        mask = mask[0]  # (batch, heads, Lq, Lk) the same for every batch and head (an exported model's mask)
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise NotImplementedError(f"attention {where}: the mask must be a constant 2-D tensor (no per-batch or "
                                  "per-head masks, no key_padding_mask)")
    if mask.dtype == torch.bool:
        blocked = mask if blocked_when_true else ~mask
        rows = tuple(tuple(None if v else 0.0 for v in row) for row in blocked.tolist())
    else:
        values = mask.double()
        if torch.isnan(values).any() or torch.isposinf(values).any():
            raise NotImplementedError(f"attention {where}: the mask has NaN or +inf entries")
        rows = tuple(tuple(None if v == float("-inf") else float(v) for v in row) for row in values.tolist())
    lq, lk = len(rows), len(rows[0]) if rows else 0
    if rows == _causal_rows(lq, lk):
        return (), True
    if causal:
        raise NotImplementedError(f"attention {where}: is_causal=True with a mask that is not the causal mask")
    return rows, False


def _encode_index(idx, where: str) -> tuple:
    items = idx if isinstance(idx, tuple) else (idx,)
    out = []
    for item in items:
        if isinstance(item, slice):
            if not all(v is None or isinstance(v, int) for v in (item.start, item.stop, item.step)):
                raise NotImplementedError(f"indexing {where} with a non-constant slice {item!r}")
            out.append(("slice", item.start, item.stop, item.step))
        elif item is Ellipsis:
            out.append("...")
        elif item is None or (isinstance(item, int) and not isinstance(item, bool)):
            out.append(item)
        else:
            raise NotImplementedError(f"indexing {where} with {item!r} (only ints, slices, None and ...)")
    return tuple(out)


# calls that only check the target's input (shape asserts; fx's check that an input fixed to None is None): dropped
_CHECKS = tuple(f for f in (torch._assert, getattr(torch, "_assert_async", None),
                            getattr(torch, "_assert_tensor_metadata", None), getattr(torch, "_check", None))
                if f is not None)


def _in_place(node) -> bool:
    """A node that may change one of its inputs: kept even when nothing reads its result."""
    import operator

    name = getattr(node.target, "__name__", node.target) if node.op != "call_module" else ""
    if node.op in ("call_method", "call_function") and isinstance(name, str) and name.endswith("_") \
            and not name.endswith("__"):
        return True
    if node.op == "call_function" and node.target in (operator.iadd, operator.isub, operator.imul, operator.itruediv):
        return True
    return bool(node.kwargs.get("inplace")) or (
        node.op == "call_module" and bool(getattr(node.graph.owning_module.get_submodule(node.target), "inplace", 0)))


def _trace(target: nn.Module):
    """``target`` traced with torch.fx (torch.nn modules stay leaves), with its optional inputs that default to
    None fixed to None, and every node that does not reach the output dropped: shape assertions
    (``torch._assert(h == 224, ...)``), the sizes and comparisons they read, unused outputs. In-place calls and
    other impure nodes stay."""
    import inspect

    import torch.fx as fx
    from torch.fx._symbolic_trace import _assert_is_none

    try:
        params = list(inspect.signature(target.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    fixed = {p.name: None for p in params[1:] if p.kind in kinds and p.default is None}
    tracer = fx.Tracer()
    tracer.record_stack_traces = True  # node.stack_trace: refusals name the file and line of the op
    try:
        graph = tracer.trace(target, concrete_args=fixed or None)
    except Exception as exc:
        raise UntraceableError(f"target {_type_name(target)} is not an nn.Sequential and torch.fx cannot trace it "
                               f"({type(exc).__name__}: {exc})") from None
    gm = fx.GraphModule(tracer.root, graph, type(target).__name__)
    gm.meta["fixed_to_none"] = set()  # the placeholders of the inputs fixed to None
    for node in reversed(list(gm.graph.nodes)):
        if node.op == "call_function" and (node.target in _CHECKS or node.target is _assert_is_none):
            if node.target is _assert_is_none:
                gm.meta["fixed_to_none"].add(node.args[0].name)
            gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code(is_impure_node=lambda n: n.is_impure() or _in_place(n))
    return gm


def _source_line(node) -> str | None:
    """``file:line`` of the user code that made ``node`` (the innermost stack frame outside torch)."""
    import os
    import re

    torch_dir = os.path.dirname(torch.__file__) + os.sep
    found = None
    for file, line in re.findall(r'File "([^"]+)", line (\d+)', node.stack_trace or ""):
        if not file.startswith(torch_dir):
            found = f"{file}:{line}"
    return found


def _module_path(node) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    return str(next(reversed(stack.values()))[0]) if stack else ""


def _located(exc: Exception, node, gm) -> Exception:
    """``exc`` with where the refused node comes from (file:line, module path) and the parameters it reads on the
    first line of its message."""
    first, _, rest = str(exc).partition("\n")
    where = [f"module {_module_path(node)!r}" if _module_path(node) else "the target's own forward"]
    line = _source_line(node)
    if line:
        where.insert(0, line)
    params = []
    for n in node.all_input_nodes:
        if n.op == "get_attr":
            try:
                value = gm.get_parameter(n.target)
            except AttributeError:
                continue
            if isinstance(value, nn.Parameter):
                params.append(repr(n.target))
    note = ""
    if params and node.op != "call_module":
        note = f"; it reads parameter(s) {', '.join(params)}, which the construction cannot realise there"
    return type(exc)(f"{first} [{', '.join(where)}]{note}" + (f"\n{rest}" if rest else ""))


def _parse_fx(target: nn.Module, nonnegative_input: bool, shift: float | None,
              attention: str = "projection") -> tuple[Graph, list[LinearSpec]]:
    return _parse_gm(_trace(target), _Builder(nonnegative_input, graph=True, shift=shift, attention=attention))


def _parse_gm(gm, b: _Builder, realised: dict | None = None) -> tuple[Graph, list[LinearSpec]]:
    """The one parser: an fx ``GraphModule`` (a torch.fx trace, :func:`_trace`, or a normalised torch.export graph,
    :mod:`.exported`) read node by node into ``b``. ``realised`` (with ``b.leaves``): parameter name -> the value
    the ticket computes in its place (an embedding's realised table, a free parameter's realised value); other
    parameters (the weights of layers realised as pairs) have none."""
    import builtins
    import inspect
    import operator

    import torch.fx as fx

    from .exported import linear_t

    modules = dict(gm.named_modules())
    FX_ACTIVATIONS = {F.gelu: "gelu", F.silu: "silu", torch.tanh: "tanh", F.tanh: "tanh", torch.sigmoid: "sigmoid",
                      F.sigmoid: "sigmoid"}
    SIZE_OPS = (operator.mul, operator.floordiv, operator.add, operator.sub)
    env: dict = {}
    out = None
    seen_input = False

    def arg(node, value):
        """The graph value an argument stands for; a constant tensor becomes a :class:`ConstNode`."""
        if isinstance(value, fx.Node):
            got = env[value]
            if isinstance(got, _Const) and isinstance(got.value, torch.Tensor):
                return b.const(got.value, got.key, got.key, got.ticket)
            if isinstance(got, int):
                return got
        raise NotImplementedError(f"{node.op} {getattr(node.target, '__name__', node.target)!r} ({node.name!r}) "
                                  f"takes a non-tensor argument {value!r}")

    def scalar(value):
        """A Python number (literal or constant), else None."""
        if isinstance(value, fx.Node):
            value = env[value].value if isinstance(env[value], _Const) else None
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.requires_grad:
            value = value.item()
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def sizes_of(node, values, reshape: bool = False):
        """reshape / expand sizes: ints and traced sizes (x.size(d) * m // k) of other values; for a reshape one
        other arithmetic of sizes (``n_h * n_w``) is left to reshape (-1)."""
        if len(values) == 1 and isinstance(values[0], (tuple, list)):
            values = values[0]
        refs, spec = [], []
        for v in values:
            v = env[v] if isinstance(v, fx.Node) else v
            if isinstance(v, _Const):
                v = v.value
            if isinstance(v, _Dim):
                if v.ref not in refs:
                    refs.append(v.ref)
                spec.append((refs.index(v.ref), v.dim, v.mul, v.div))
            elif isinstance(v, int):
                spec.append(int(v))
            elif isinstance(v, _Size) and reshape:
                spec.append(v)
            else:
                raise NotImplementedError(f"{node.target!r} at node {node.name!r} with size {v!r}")
        unknown = [i for i, v in enumerate(spec) if isinstance(v, _Size)]
        if unknown:  # one size the ticket cannot compute from its inputs' sizes: reshape infers it (-1), exactly
            if len(unknown) > 1 or -1 in spec:
                raise NotImplementedError(
                    f"{node.target!r} at node {node.name!r}: the sizes {', '.join(spec[i].what for i in unknown)} are "
                    "arithmetic of traced sizes beyond x.size(d) * m // k, and at most one size of a reshape (none "
                    "of an expand) may be; write the others as x.size(d) or -1")
            spec[unknown[0]] = -1
        return tuple(refs), tuple(spec)

    def size_arithmetic(node):
        """``h // p``, ``2 * n``, ``n_h * n_w``, ``n + 1`` on traced sizes: a :class:`_Dim` where one entry
        x.size(d) * m // k says it, else a :class:`_Size`."""
        x, y = (node_value(a) for a in node.args)
        x, y = (v.value if isinstance(v, _Const) else v for v in (x, y))
        if node.target is operator.mul and isinstance(y, _Dim) and isinstance(x, int):
            x, y = y, x
        if isinstance(x, _Dim) and isinstance(y, int) and not isinstance(y, bool):
            if node.target is operator.mul and x.div == 1:
                return dataclasses.replace(x, mul=x.mul * y)
            if node.target is operator.floordiv and y > 0:
                return dataclasses.replace(x, div=x.div * y)
        return _Size(node.name)

    def is_fn(node, functions=(), methods=()):
        return (node.op == "call_function" and node.target in functions) or \
            (node.op == "call_method" and node.target in methods)

    def node_value(v):
        return env[v] if isinstance(v, fx.Node) else v

    def bind(fn, node):
        return inspect.signature(fn).bind(*node.args, **node.kwargs).arguments

    def step(node) -> None:
        nonlocal out, seen_input
        where = f"at node {node.name!r}"
        if node.op == "placeholder":
            if node.name in gm.meta["fixed_to_none"]:  # an optional input fixed to None
                env[node] = None
                return
            if seen_input:
                raise NotImplementedError(f"target takes more than one input ({node.name!r})")
            seen_input = True
            env[node] = -1
            return
        if node.op == "get_attr":
            value = gm
            for part in node.target.split("."):
                value = getattr(value, part)
            ticket = None
            if b.leaves:  # what the ticket holds there: a realised value, the same buffer, or no single tensor
                ticket = (realised or {}).get(node.target, _UNKNOWN if isinstance(value, nn.Parameter) else value)
            env[node] = _Const(value, node.target, ticket)
            return
        if node.op in ("call_function", "call_method", "call_module") and \
                all(isinstance(env[n], _Const) for n in node.all_input_nodes):
            # a constant sub-expression (positional embeddings of arange(T), masks, ...): evaluate it now
            def evaluate(which):
                cargs = fx.node.map_arg(node.args, lambda n: which(env[n]))
                ckwargs = fx.node.map_arg(node.kwargs, lambda n: which(env[n]))
                with torch.no_grad():
                    if node.op == "call_function":
                        return node.target(*cargs, **ckwargs)
                    if node.op == "call_method":
                        return getattr(cargs[0], node.target)(*cargs[1:], **ckwargs)
                    return modules[node.target](*cargs, **ckwargs)

            value, ticket = evaluate(lambda c: c.value), None
            if b.leaves:  # the same expression over the ticket's values
                known = all(env[n].ticket is not _UNKNOWN for n in node.all_input_nodes)
                ticket = evaluate(lambda c: c.ticket) if known else _UNKNOWN
            env[node] = _Const(value, node.name, ticket)
            return
        t = node.target
        if node.op == "call_function" and t in SIZE_OPS and \
                any(isinstance(node_value(a), (_Dim, _Size)) for a in node.args):
            env[node] = size_arithmetic(node)
        elif node.op == "call_module" and _type_name(modules[t]) in TRANSFORMER_MODULES:
            module = modules[t]
            kind = _type_name(module)
            a = bind(module.forward, node)
            if kind == "MultiheadAttention":
                if not (a["query"] is a.get("key") is a.get("value")):
                    raise NotImplementedError(f"MultiheadAttention {where} ({t!r}): only self-attention "
                                              "(query, key and value the same tensor) is supported")
                if a.get("key_padding_mask") is not None:
                    raise NotImplementedError(f"MultiheadAttention {where} ({t!r}) with a key_padding_mask")
                rows, causal = _mask_rows(node_value(a.get("attn_mask")), True, a.get("is_causal", False), where)
                res = b.attention(module, t, where, arg(node, a["query"]), rows, causal)
                env[node] = _Parts(lambda i, res=res, t=t: res if i == 0 else _no(
                    f"the attention weights of MultiheadAttention {t!r} (output 1) are not supported"), "attention")
            else:
                mask_name = "src_mask" if kind == "TransformerEncoderLayer" else "mask"
                if a.get("src_key_padding_mask") is not None:
                    raise NotImplementedError(f"{kind} {where} ({t!r}) with a src_key_padding_mask")
                rows, causal = _mask_rows(node_value(a.get(mask_name)), True, bool(a.get("is_causal") or False), where)
                build = b.encoder_layer if kind == "TransformerEncoderLayer" else b.encoder
                env[node] = build(module, t, where, arg(node, a["src"]), rows, causal)
        elif node.op == "call_module":
            module = modules[t]
            src = arg(node, node.args[0])
            sole = src < 0 or len(node.args[0].users) == 1
            env[node] = b.module(module, t, where, src, sole_user=sole)
        elif node.op == "call_function" and t in (F.relu, torch.relu, torch.relu_):
            env[node] = b.relu(arg(node, node.args[0]))
        elif node.op == "call_method" and t in ("relu", "relu_"):
            env[node] = b.relu(arg(node, node.args[0]))
        elif node.op == "call_function" and t in FX_ACTIVATIONS and len(node.args) == 1:
            fn = FX_ACTIVATIONS[t]
            if node.kwargs.get("approximate", "none") == "tanh":
                fn = "gelu_tanh"
            elif set(node.kwargs) - {"approximate", "inplace"} or node.kwargs.get("inplace"):  # F.silu: inplace=False
                raise NotImplementedError(f"{node.op} {t.__name__!r} {where} with {node.kwargs}")
            env[node] = b.activation(fn, arg(node, node.args[0]))
        elif node.op == "call_method" and t in ("tanh", "sigmoid") and len(node.args) == 1:
            env[node] = b.activation(t, arg(node, node.args[0]))
        elif is_fn(node, (operator.add, operator.iadd, torch.add), ("add", "add_")) and len(node.args) == 2 \
                and not node.kwargs:
            x, y = node.args
            if not isinstance(x, fx.Node):  # number + tensor
                x, y = y, x
            if not isinstance(y, fx.Node):
                y_value = scalar(y)
                if y_value is None:
                    raise NotImplementedError(f"add {where} of {y!r}")
                env[node] = b.add(b.plain(arg(node, x)), b.const(torch.tensor(float(y_value)), f"{node.name}.c",
                                                                 f"{node.name} (the number {y_value})"))
            else:
                env[node] = b.add(b.plain(arg(node, x)), b.plain(arg(node, y)))
        elif is_fn(node, (operator.mul, torch.mul, operator.truediv, torch.div), ("mul", "div")) \
                and len(node.args) == 2 and not node.kwargs:
            x, y = node.args
            divide = t in (operator.truediv, torch.div, "div")
            if not divide and scalar(x) is not None:
                x, y = y, x
            c = scalar(y)
            other = node_value(y)
            if b.leaves and c is None and not divide and isinstance(x, fx.Node) and isinstance(y, fx.Node):
                # a bound's graph: x * y elementwise (a gate, x * a constant table); not a ticket op
                env[node] = b.op(MulNode((arg(node, x), arg(node, y))))
                return
            if c is None and isinstance(other, _Const) and isinstance(other.value, torch.Tensor):
                raise NotImplementedError(f"{node.op} {getattr(t, '__name__', t)!r} {where}: activations multiplied "
                                          f"elementwise by the tensor {other.key!r} of the target; only a number "
                                          "factor is supported")
            if c is None or not isinstance(x, fx.Node):
                raise NotImplementedError(f"{node.op} {getattr(t, '__name__', t)!r} {where}: the product of two "
                                          "activations is only supported as a matmul (x * number is)")
            env[node] = b.op(MulConstNode((arg(node, x),), float(1.0 / c if divide else c)))
        elif is_fn(node, (operator.matmul, torch.matmul, torch.bmm), ("matmul", "bmm")):
            x, y = node.args[:2]
            c = env[y] if isinstance(y, fx.Node) else None
            if isinstance(c, _Const) and isinstance(c.value, torch.Tensor) and c.value.dim() == 2:
                # x @ C with C a constant matrix (a tied head x @ E^T, say): the Linear map W = C^T, its own pair
                w = _array(c.value, f"matrix {c.key!r}").T.copy()
                env[node] = b.linear(w, None, "Linear", f"{node.name}({c.key})", where, arg(node, x))
            else:
                env[node] = b.op(MatmulNode((arg(node, x), arg(node, y))))
        elif node.op == "call_function" and t is builtins.getattr and node.args[1] == "shape":
            env[node] = _Shape(arg(node, node.args[0]))
        elif node.op == "call_method" and t == "size":
            src = arg(node, node.args[0])
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            env[node] = _Shape(src) if dim is None else _Dim(src, int(dim))
        elif node.op == "call_function" and t is operator.getitem:
            src, idx = env[node.args[0]], node.args[1]
            if isinstance(src, _Shape) and isinstance(idx, int):
                env[node] = _Dim(src.ref, idx)
            elif isinstance(src, _Parts) and isinstance(idx, int):
                env[node] = src.get(idx)
            else:
                env[node] = b.op(GetItemNode((arg(node, node.args[0]),), _encode_index(idx, where)))
        elif is_fn(node, (torch.reshape,), ("reshape", "view")):
            refs, spec = sizes_of(node, node.args[1:] or (node.kwargs.get("shape"),), reshape=True)
            src = arg(node, node.args[0])
            before, after = (getattr(v, "meta", {}).get("val") for v in (node.args[0], node))
            if b.carries_affine(src) and isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor) \
                    and before.dim() and after.dim() and before.shape[-1] == after.shape[-1]:
                env[node] = b.carry(src, ReshapeNode((src, *refs), spec))  # the features stay where they were
            else:
                env[node] = b.op(ReshapeNode((src, *refs), spec))
        elif is_fn(node, (), ("expand",)):
            refs, spec = sizes_of(node, node.args[1:])
            env[node] = b.op(ExpandNode((arg(node, node.args[0]), *refs), spec))
        elif is_fn(node, (torch.transpose,), ("transpose",)):
            env[node] = b.op(PermuteNode((arg(node, node.args[0]),), (int(node.args[1]), int(node.args[2])), True))
        elif is_fn(node, (torch.permute,), ("permute",)):
            dims = node.args[1:] if len(node.args) > 2 or isinstance(node.args[1], int) else node.args[1]
            env[node] = b.op(PermuteNode((arg(node, node.args[0]),), tuple(int(d) for d in dims)))
        elif is_fn(node, (), ("contiguous", "clone")):
            env[node] = arg(node, node.args[0])
        elif is_fn(node, (torch.split, torch.chunk), ("split", "chunk")):
            src = arg(node, node.args[0])
            chunk = t in (torch.chunk, "chunk")
            key = "chunks" if chunk else "split_size_or_sections"
            size = node.args[1] if len(node.args) > 1 else node.kwargs.get(key, node.kwargs.get("split_size"))
            dim = int(node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0))
            size = tuple(size) if isinstance(size, (tuple, list)) else int(size)
            env[node] = _Parts(lambda i, src=src, size=size, dim=dim, chunk=chunk: b.op(
                SplitNode((src,), 0 if chunk else size, size if chunk else 0, dim, i)), "split")
        elif node.op == "call_function" and t in (torch.cat, torch.concat, torch.concatenate):
            tensors = node.args[0]
            dim = int(node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", node.kwargs.get("axis", 0)))
            env[node] = b.op(CatNode(tuple(arg(node, x) for x in tensors), dim))
        elif is_fn(node, (torch.softmax, F.softmax), ("softmax",)):
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            if dim != -1 or node.kwargs.get("dtype") is not None:
                raise NotImplementedError(f"softmax {where} over dim {dim!r}: only dim=-1 (the last) is supported")
            env[node] = b.op(SoftmaxNode((arg(node, node.args[0]),)))
        elif node.op == "call_function" and t is F.scaled_dot_product_attention:
            names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
            a = {**dict(zip(names, node.args)), **node.kwargs}
            if scalar(a.get("dropout_p", 0.0)) or a.get("enable_gqa", False):
                raise NotImplementedError(f"scaled_dot_product_attention {where} with dropout_p > 0 or enable_gqa")
            rows, causal = _mask_rows(node_value(a.get("attn_mask")), False, bool(a.get("is_causal", False)), where,
                                      uniform=b.leaves)
            sm_scale = a.get("scale")
            env[node] = b.op(AttentionNode(tuple(arg(node, a[k]) for k in names[:3]), causal, rows,
                                           None if sm_scale is None else float(scalar(sm_scale))))
        elif is_fn(node, (torch.mean,), ("mean",)):
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            if dim is None:
                raise NotImplementedError(f"mean {where} over every dimension (give dim)")
            keepdim = bool(node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False))
            env[node] = b.op(MeanNode((arg(node, node.args[0]),), tuple(dim) if isinstance(dim, (list, tuple))
                                      else int(dim), keepdim))
        elif node.op == "call_function" and t in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
            size = node.args[1] if len(node.args) > 1 else node.kwargs["output_size"]
            kind = "AdaptiveAvgPool2d" if t is F.adaptive_avg_pool2d else "AdaptiveMaxPool2d"
            env[node] = b.adaptive(kind, size, arg(node, node.args[0]))
        elif (node.op == "call_function" and t is torch.flatten) or (node.op == "call_method" and t == "flatten"):
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            env[node] = b.flatten(arg(node, node.args[0]), int(start), int(end))
        elif is_fn(node, (torch.unbind,), ("unbind",)):  # q, k, v = qkv.unbind(0): x[i] along dim, per output
            src = arg(node, node.args[0])
            dim = int(node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0))
            full = ("slice", None, None, None)
            env[node] = _Parts(lambda i, src=src, dim=dim: b.op(GetItemNode(
                (src,), (*[full] * dim, i) if dim >= 0 else ("...", i, *[full] * (-dim - 1)))), "unbind")
        elif node.op == "call_function" and t in (F.linear, linear_t):  # F.linear(x, self.weight, self.bias): a Linear
            a = {**dict(zip(("input", "weight", "bias"), node.args)), **node.kwargs}
            w, bias = node_value(a["weight"]), node_value(a.get("bias"))
            for v in (w, bias):
                if v is not None and not (isinstance(v, _Const) and isinstance(v.value, torch.Tensor)):
                    raise NotImplementedError(f"linear {where}: its weight and bias must be parameters or constants "
                                              "of the target, not computed from the input")
            if w.value.dim() != 2:
                raise NotImplementedError(f"linear {where}: weight {w.key!r} has shape {tuple(w.value.shape)}")
            weight = _array(w.value, f"weight {w.key!r}")
            env[node] = b.linear(weight.T.copy() if t is linear_t else weight,  # linear_t: stored (in, out)
                                 None if bias is None else _array(bias.value, f"bias {bias.key!r}"), "Linear",
                                 w.key.removesuffix(".weight"), where, arg(node, a["input"]),
                                 source=(w.key, "" if bias is None else bias.key))
        elif node.op == "call_function" and t is F.embedding:  # F.embedding(indices, self.weight)
            names = ("input", "weight", "padding_idx", "max_norm")
            a = {**dict(zip(names, node.args)), **node.kwargs}
            w = node_value(a["weight"])
            if not (isinstance(w, _Const) and isinstance(w.value, torch.Tensor)) or a.get("max_norm") is not None:
                raise NotImplementedError(f"embedding {where}: its table must be a parameter or constant of the "
                                          "target (and max_norm is not supported)")
            env[node] = b.embedding_table(w.value, w.key.removesuffix(".weight"), where, arg(node, a["input"]),
                                          source=(w.key, ""))
        elif node.op == "call_function" and t in (F.layer_norm, F.rms_norm):
            rms = t is F.rms_norm
            names = ("input", "normalized_shape", "weight", *(() if rms else ("bias",)), "eps")
            a = {**dict(zip(names, node.args)), **node.kwargs}
            affine, keys = [], []
            for key in ("weight", "bias"):
                v = node_value(a.get(key))
                if v is not None and not (isinstance(v, _Const) and isinstance(v.value, torch.Tensor)):
                    raise NotImplementedError(f"{getattr(t, '__name__', t)} {where}: its {key} must be a parameter "
                                              "or constant of the target, not computed from the input")
                affine.append(None if v is None else v.value)
                keys.append("" if v is None else v.key)
            eps = scalar(a.get("eps"))
            if eps is None:  # rms_norm's eps=None: torch uses the float32 machine epsilon
                eps = torch.finfo(torch.float32).eps if rms else 1e-5
            path = ".".join(filter(None, (_module_path(node), node.name)))
            env[node] = b.normalise("RMSNorm" if rms else "LayerNorm", a["normalized_shape"], eps, *affine, path,
                                    where, b.plain(arg(node, a["input"])), rms, source=tuple(keys))
        elif node.op == "output":
            out = arg(node, node.args[0])
        else:
            name = getattr(t, "__name__", t)
            raise NotImplementedError(
                f"{node.op} {name!r} {where} is not supported by construct()\nsupported: {SUPPORTED}")
    for node in gm.graph.nodes:
        try:
            step(node)
        except (NotImplementedError, ValueError) as exc:
            raise _located(exc, node, gm) from None
    return b.finish(out)


def _no(message: str):
    raise NotImplementedError(message)


def mlp(arch: list[int] | str, *, bias: bool = True) -> nn.Sequential:
    """``Flatten, Linear, ReLU, ..., Linear`` for widths like ``[784, 500, 10]`` or ``"784-500-10"``."""
    if isinstance(arch, str):
        try:
            arch = [int(x) for x in arch.split("-")]
        except ValueError:
            raise ValueError(f"--arch must look like 784-500-10, got {arch!r}") from None
    if len(arch) < 2 or any(d < 1 for d in arch):
        raise ValueError(f"an MLP needs at least two positive widths, got {arch}")
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (d_in, d_out) in enumerate(zip(arch[:-1], arch[1:])):
        layers.append(nn.Linear(d_in, d_out, bias=bias))
        if i < len(arch) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def load_target(path, arch: str | None = None, *, input_shape=None, num_classes: int | None = None,
                width: float = 1.0) -> nn.Module:
    """A target from a file: a state_dict (``torch.save``) of :func:`mlp` ``(arch)`` -- biases are
    inferred from its keys, a ``layers.`` prefix (slth's FC model) is accepted --, a state_dict of a named
    architecture (``arch`` = ``lenet5``, ``conv4``, ``resnet20``, ``resnet18``, ... with ``input_shape``
    and ``num_classes``; see :mod:`slth.models.zoo`) or, without ``arch``, a TorchScript module
    (``torch.jit.save``)."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such model file: {path}")
    if arch is None:
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise ValueError(
                f"{path} is not a TorchScript module ({type(exc).__name__}); "
                "for a state_dict pass --arch, e.g. 784-500-10"
            ) from None
        return module.eval()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable state_dict file ({type(exc).__name__}: {exc})") from None
    saved_kwargs = {}  # slth train-dense --model files name the constructor arguments they were built with
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        if state.get("model") == arch and isinstance(state.get("model_kwargs"), dict):
            saved_kwargs = dict(state["model_kwargs"])
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state_dict (a dict of tensors)")
    if not all(part.isdigit() for part in arch.split("-")):
        from ..models.zoo import build_target

        input_shape = saved_kwargs.pop("input_shape", None) if input_shape is None else input_shape
        num_classes = saved_kwargs.pop("num_classes", None) if num_classes is None else num_classes
        width = saved_kwargs.pop("width", width) if width == 1.0 else width
        extra = {k: v for k, v in saved_kwargs.items() if k not in ("input_shape", "num_classes", "width")}
        if input_shape is None or num_classes is None:
            raise ValueError(
                f"--arch {arch} needs the input shape and the number of classes (--input-shape, --classes)")
        net = build_target(arch, tuple(input_shape), int(num_classes), width=width, **extra)
        state = {k.removeprefix("module."): v for k, v in state.items()}
    else:
        state = {k.removeprefix("layers."): v for k, v in state.items()}
        has_bias = any(k.endswith(".bias") for k in state)
        net = mlp(arch, bias=has_bias)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path} does not match --arch {arch}: {str(exc).splitlines()[0]}") from None
    return net.eval()
