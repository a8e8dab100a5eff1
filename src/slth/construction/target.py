"""Read a target network into a flat list of operations the construction understands."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .graph import (ActivationNode, AdaptiveAvgPoolNode, AdaptiveMaxPoolNode, AddNode, AvgPoolNode, EmbeddingNode,
                    FlattenNode, Graph, IdentityNode, LayerNode, LayerNormNode, MaxPoolNode, Node, ReluNode, ShiftNode)

SUPPORTED = (
    "Flatten, Linear, Conv2d (groups=1, zero padding), BatchNorm1d/2d (folded into the preceding Linear/Conv2d), "
    "ReLU, GELU, SiLU, Tanh, Sigmoid, LayerNorm (last dimension; its affine folded into the Linear layers that "
    "read it), Embedding (of the network input), MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, AdaptiveMaxPool2d, "
    "Identity, Dropout (nested nn.Sequential allowed); other modules are traced with torch.fx, which adds "
    "residual additions (x + y)"
)
ACTIVATION_MODULES = {"GELU": "gelu", "SiLU": "silu", "Tanh": "tanh", "Sigmoid": "sigmoid"}
LAYERS = ("Linear", "Conv2d")


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


def _array(t: torch.Tensor, what: str) -> np.ndarray:
    arr = t.detach().to("cpu", torch.float64).numpy().copy()
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contains NaN or inf")
    return arr


def _pair(v) -> list[int]:
    return [int(x) for x in v] if isinstance(v, (tuple, list)) else [int(v), int(v)]


class _Builder:
    """Collects typed nodes and layer specs; ``graph=True``: nodes read any earlier value (-1 = the input),
    else each reads the previous one (a chain)."""

    def __init__(self, nonnegative_input: bool, graph: bool, shift: float | None = None):
        self.nodes: list[Node] = []
        self.specs: list[LinearSpec] = []
        self.graph = graph
        self.nonneg = {-1: bool(nonnegative_input)}
        self.flat = {-1: None}  # is the value flat (N, d)? None = unknown (the input)
        self.shift = shift  # inputs lie in [shift, hi] with shift < 0: layers reading them are fed x - shift
        self.raw = {-1: True}  # the value is the input itself, up to ops that commute with a shift
        self.pending: dict[int, tuple] = {}  # value -> (gamma, beta, path) of a LayerNorm affine still to fold

    def emit(self, node: Node, flat, folds_affine: bool = False) -> int:
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
        if kind == "Conv2d":
            if self.flat[src]:
                raise NotImplementedError(f"Conv2d {where} ({path!r}) after a Linear is not supported (its input is flat)")
            if module.groups != 1:
                raise NotImplementedError(
                    f"Conv2d {where} ({path!r}) has groups={module.groups}: grouped/depthwise convolutions are not "
                    f"supported by construct(); supported: {SUPPORTED}")
            if isinstance(module.padding, str) or module.padding_mode != "zeros":
                raise NotImplementedError(
                    f"Conv2d {where} ({path!r}): padding={module.padding!r}, padding_mode={module.padding_mode!r}; "
                    "only explicit zero padding is supported")
            conv = {"kernel": _pair(module.kernel_size), "stride": _pair(module.stride),
                    "padding": _pair(module.padding), "dilation": _pair(module.dilation)}
        elif not self.graph and self.specs and self.flat[src] and self.specs[-1].conv is None \
                and self.specs[-1].d_out != weight.shape[1]:
            raise ValueError(
                f"Linear {path!r} expects {weight.shape[1]} inputs but the previous Linear gives {self.specs[-1].d_out}")
        folds = src in self.pending
        if folds:  # W (gamma * z + beta) + b = (W diag(gamma)) z + (b + W beta): exact
            gamma, beta, ln_path = self.pending[src]
            if conv is not None or weight.shape[1] != gamma.shape[0]:
                raise NotImplementedError(f"{kind} {where} ({path!r}) reads LayerNorm {ln_path!r}, whose affine can "
                                          "only be folded into a Linear over its normalised features")
            bias = weight @ beta + (0.0 if bias is None else bias)
            weight = weight * gamma[None, :]
            path = f"{ln_path}+{path}"
        if self.shift is not None and self.raw[src]:
            src, bias = self.shifted(src, weight, bias, conv)
        self.specs.append(LinearSpec(path, weight, bias, self.nonneg[src], conv=conv))
        return self.emit(LayerNode((src,), len(self.specs) - 1), kind == "Linear", folds_affine=folds)

    def embedding(self, module, path: str, where: str, src: int) -> int:
        if src != -1:
            raise NotImplementedError(f"Embedding {where} ({path!r}) must read the network input (token indices)")
        if module.max_norm is not None:
            raise NotImplementedError(f"Embedding {where} ({path!r}) with max_norm (it renormalises rows) is "
                                      "not supported")
        table = _array(module.weight, f"weight of Embedding {path!r}")  # (num, dim)
        # the map E^T (dim, num) on the one-hot of the index: a nonnegative input
        self.specs.append(LinearSpec(path, np.ascontiguousarray(table.T), None, True))
        return self.emit(EmbeddingNode((src,), len(self.specs) - 1), True)

    def activation(self, fn: str, src: int) -> int:
        return self.emit(ActivationNode((src,), fn), self.flat[src])

    def layernorm(self, module, path: str, where: str, src: int) -> int:
        shape = tuple(int(v) for v in module.normalized_shape)
        if len(shape) != 1:
            raise NotImplementedError(f"LayerNorm {where} ({path!r}) normalises over {shape}; only the last "
                                      "dimension is supported")
        i = self.emit(LayerNormNode((src,), shape, float(module.eps)), self.flat[src])
        gamma = None if module.weight is None else _array(module.weight, f"weight of LayerNorm {path!r}")
        beta = None if getattr(module, "bias", None) is None else _array(module.bias, f"bias of LayerNorm {path!r}")
        if (gamma is not None and not (gamma == 1).all()) or (beta is not None and beta.any()):
            self.pending[i] = (np.ones(shape) if gamma is None else gamma, np.zeros(shape) if beta is None else beta,
                               path)
        return i

    def batchnorm(self, module, kind: str, path: str, where: str, src: int, sole_user: bool = True) -> int:
        node = self.nodes[src] if src >= 0 else None
        if not isinstance(node, LayerNode) or not sole_user:
            raise NotImplementedError(
                f"{kind} {where} ({path!r}) does not directly follow a Linear/Conv2d whose output only it reads; "
                "only BatchNorm right after a layer can be folded")
        if module.running_mean is None or module.running_var is None:
            raise NotImplementedError(f"{kind} {where} ({path!r}) has no running statistics (track_running_stats=False)")
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
        if src >= 0 and isinstance(self.nodes[src], LayerNode):
            self.specs[self.nodes[src].index].relu_after = True
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
        if kind == "LayerNorm":
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
        raise NotImplementedError(
            f"layer {kind} {where} ({path!r}) is not supported by construct(); supported: {SUPPORTED}")

    def adaptive(self, kind: str, output_size, src: int) -> int:
        size = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size, output_size)
        node = AdaptiveAvgPoolNode if kind == "AdaptiveAvgPool2d" else AdaptiveMaxPoolNode
        return self.emit(node((src,), size), False)

    def flatten(self, src: int, start_dim: int, end_dim: int) -> int:
        return self.emit(FlattenNode((src,), start_dim, end_dim), True)

    def add(self, a: int, b: int) -> int:
        return self.emit(AddNode((a, b), (1.0, 1.0)), self.flat[a])

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


def parse_options(config: dict) -> dict:
    """The :func:`parse_target` arguments a ticket was built with (from its config)."""
    return {"nonnegative_input": config["nonnegative_input"], "input_range": config.get("input_range")}


def parse_target(target, *, nonnegative_input: bool = False,
                 input_range=None) -> tuple[Graph, list[LinearSpec]]:
    """Return (graph, layers): a :class:`~slth.construction.graph.Graph` of typed nodes (layers, ReLU,
    pools, flatten, residual joins) and the target's layers.

    An ``nn.Sequential`` (or a TorchScript one) gives a chain; any other ``nn.Module`` is traced with
    ``torch.fx`` into a graph whose nodes read any earlier value (-1 = the input), which is how
    residual blocks are represented. Eval-mode BatchNorm is folded into the preceding layer.
    ``input_range=(lo, hi)``: inputs lie in that box; lo >= 0 makes them nonnegative, lo < 0 feeds every layer
    that reads the input (through flatten / max pooling only) with x - lo >= 0 (a ``shift`` node, the shift
    folded into that layer's bias). Raises ``NotImplementedError`` naming the first unsupported layer and its
    position or path, ``ValueError`` for NaN/inf weights or a network with no Linear/Conv2d layer.
    """
    box = input_range_of(input_range, nonnegative_input)
    nonneg = box is not None and box[0] >= 0
    shift = box[0] if box is not None and box[0] < 0 else None
    kind = _type_name(target)
    if kind == "Sequential":
        b = _Builder(nonneg, graph=False, shift=shift)
        out = -1
        for position, (path, module) in enumerate(_walk(target, "")):
            out = b.module(module, path, f"at position {position}", out)
        return b.finish(out)
    if not isinstance(target, nn.Module) or type(target).__module__.startswith("torch."):
        raise NotImplementedError(
            f"target must be an nn.Sequential of {SUPPORTED}, or an nn.Module whose forward torch.fx can trace; "
            f"got {kind}")
    return _parse_fx(target, nonneg, shift)


def _parse_fx(target: nn.Module, nonnegative_input: bool, shift: float | None) -> tuple[Graph, list[LinearSpec]]:
    import operator

    import torch.fx as fx
    import torch.nn.functional as F

    try:
        gm = fx.symbolic_trace(target)
    except Exception as exc:
        raise NotImplementedError(f"target {_type_name(target)} is not an nn.Sequential and torch.fx cannot trace it "
                                  f"({type(exc).__name__}: {exc})") from None
    modules = dict(gm.named_modules())
    FX_ACTIVATIONS = {F.gelu: "gelu", F.silu: "silu", torch.tanh: "tanh", F.tanh: "tanh", torch.sigmoid: "sigmoid",
                      F.sigmoid: "sigmoid"}
    b = _Builder(nonnegative_input, graph=True, shift=shift)
    env: dict = {}
    out = None
    seen_input = False

    def arg(node, value):
        if not isinstance(value, fx.Node):
            raise NotImplementedError(f"{node.op} {node.target!r} ({node.name!r}) takes a non-tensor argument {value!r}")
        return env[value]

    for node in gm.graph.nodes:
        where = f"at node {node.name!r}"
        if node.op == "placeholder":
            if seen_input:
                raise NotImplementedError(f"target takes more than one input ({node.name!r})")
            seen_input = True
            env[node] = -1
        elif node.op == "call_module":
            module = modules[node.target]
            src = arg(node, node.args[0])
            sole = src < 0 or len(node.args[0].users) == 1
            env[node] = b.module(module, node.target, where, src, sole_user=sole)
        elif node.op == "call_function" and node.target in (F.relu, torch.relu, torch.relu_):
            env[node] = b.relu(arg(node, node.args[0]))
        elif node.op == "call_method" and node.target in ("relu", "relu_"):
            env[node] = b.relu(arg(node, node.args[0]))
        elif node.op == "call_function" and node.target in FX_ACTIVATIONS and len(node.args) == 1:
            fn = FX_ACTIVATIONS[node.target]
            if node.kwargs.get("approximate", "none") == "tanh":
                fn = "gelu_tanh"
            elif set(node.kwargs) - {"approximate"}:
                raise NotImplementedError(f"{node.op} {node.target.__name__!r} {where} with {node.kwargs}")
            env[node] = b.activation(fn, arg(node, node.args[0]))
        elif node.op == "call_method" and node.target in ("tanh", "sigmoid") and len(node.args) == 1:
            env[node] = b.activation(node.target, arg(node, node.args[0]))
        elif node.op in ("call_function", "call_method") and node.target in (operator.add, operator.iadd, torch.add,
                                                                             "add", "add_") \
                and len(node.args) == 2 and not node.kwargs:
            env[node] = b.add(arg(node, node.args[0]), arg(node, node.args[1]))
        elif node.op == "call_function" and node.target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
            size = node.args[1] if len(node.args) > 1 else node.kwargs["output_size"]
            kind = "AdaptiveAvgPool2d" if node.target is F.adaptive_avg_pool2d else "AdaptiveMaxPool2d"
            env[node] = b.adaptive(kind, size, arg(node, node.args[0]))
        elif (node.op == "call_function" and node.target is torch.flatten) or \
                (node.op == "call_method" and node.target == "flatten"):
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            env[node] = b.flatten(arg(node, node.args[0]), int(start), int(end))
        elif node.op == "output":
            out = arg(node, node.args[0])
        else:
            name = getattr(node.target, "__name__", node.target)
            raise NotImplementedError(
                f"{node.op} {name!r} {where} is not supported by construct(); supported: {SUPPORTED}")
    return b.finish(out)


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
    and ``num_classes``; see :mod:`slth.construction.zoo`) or, without ``arch``, a TorchScript module
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
                f"{path} is not a TorchScript module ({type(exc).__name__}); for a state_dict pass --arch, e.g. 784-500-10"
            ) from None
        return module.eval()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable state_dict file ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state_dict (a dict of tensors)")
    if not all(part.isdigit() for part in arch.split("-")):
        from .zoo import build_target

        if input_shape is None or num_classes is None:
            raise ValueError(f"--arch {arch} needs the input shape and the number of classes (--input-shape, --classes)")
        net = build_target(arch, tuple(input_shape), int(num_classes), width=width)
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
