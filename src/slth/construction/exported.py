"""A ``torch.export`` graph rewritten into the op set the construction parser reads.

``torch.export.export(model, example_inputs, strict=False)`` reaches models that torch.fx cannot trace (every
Hugging Face transformer: their masking code branches on traced values), and gives an ATen graph
(``aten.linear``, ``aten.addmm``, ``aten.embedding``, ``aten.layer_norm``, ``aten.scaled_dot_product_attention``,
views and permutes, ...). :func:`normalise` rewrites that graph, node by node, into the torch-level calls the one
parser of :mod:`slth.construction.target` already reads (``F.linear``, ``F.layer_norm``, ``torch.reshape``,
``x[...]``, ``operator.add``, ...), so there is one parser for both tracers:

* the model's parameters, buffers and lifted constants become ``get_attr`` nodes under their own names
  (``transformer.h.0.attn.c_attn.weight``), so a layer is named by its parameter, as in an fx trace;
* shape and metadata checks (``aten._assert_tensor_metadata``, ...) are dropped, and so is every node that does
  not reach the first output (the logits of a language model, say);
* an op that reads a tensor only for its shape or dtype (``ones_like``, ``new_ones``, ``sym_size``) reads a
  constant of the example input's shape instead: the mask-building code of a transformer (``arange``, ``cumsum``,
  ``eq``, ``le``, ``index``) then depends on constants only and the parser evaluates it to a constant;
* ``aten.addmm(b, x, W)`` (transformers' ``Conv1D``, a Linear stored transposed) becomes :func:`linear_t`.

An exported graph is static: its sizes (batch, sequence length) are the example inputs' (``Exported.shape``),
and it is valid for inputs of exactly that shape only.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

aten = torch.ops.aten


def linear_t(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight + bias``: a Linear whose weight is stored transposed, (in, out), as transformers' ``Conv1D``
    keeps it (``aten.addmm`` in an exported graph)."""
    out = x @ weight
    return out if bias is None else out + bias


def _packets(*names: str) -> frozenset:
    return frozenset(getattr(aten, n) for n in names if hasattr(aten, n))


# calls that only check shapes and metadata: dropped
CHECKS = _packets("_assert_tensor_metadata", "_assert_async", "_assert_scalar", "sym_constrain_range",
                  "sym_constrain_range_for_size", "_functional_assert_async")
IDENTITY = _packets("clone", "contiguous", "alias", "detach", "lift_fresh_copy")
# ops whose result depends on their first input's shape and dtype only
SHAPE_ONLY = _packets("ones_like", "zeros_like", "full_like", "empty_like", "new_ones", "new_zeros", "new_full",
                      "new_empty", "new_tensor")
ACTIVATIONS = {aten.silu: F.silu, aten.relu: F.relu, aten.tanh: torch.tanh, aten.sigmoid: torch.sigmoid}


def rms_eps(module: nn.Module) -> float | None:
    """A library RMSNorm by duck typing, whatever its class is called (``LlamaRMSNorm``, T5's ``T5LayerNorm``):
    the only parameter is a 1-D ``weight``, no children, an epsilon (``variance_epsilon`` or ``eps``), and
    ``forward(x) == weight * rms_norm(x)`` on a random input -- numerically, the one criterion -- both with the
    module's own weight and with a random one put in its place (``torch.func.functional_call``; the module is not
    changed), so that a module that ignores its weight, or whose weight is not a plain scale, is not taken for one
    (nor is a mean-subtracting norm or a scale without normalisation). Returns its epsilon, or None when the module
    is not such a norm."""
    params = dict(module.named_parameters(recurse=False))
    if set(params) != {"weight"} or list(module.children()):
        return None
    w = params["weight"]
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    if w.ndim != 1 or not isinstance(eps, (int, float)):
        return None
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, w.shape[0], generator=g, dtype=w.dtype).to(w.device)
    other = (torch.rand(w.shape[0], generator=g) + 0.5).to(dtype=w.dtype, device=w.device)
    for weight in (w, other):
        with torch.no_grad():
            want = F.rms_norm(x, (w.shape[0],), weight, float(eps))
            try:
                got = torch.func.functional_call(module, {"weight": weight}, (x,))
            except Exception:  # noqa: BLE001 - any failure means it is not an RMSNorm
                return None
        if not (isinstance(got, torch.Tensor) and got.shape == want.shape and torch.allclose(got, want, 1e-4, 1e-5)):
            return None
    return float(eps)


def _activation_of(module: nn.Module):
    """(function, keyword arguments) of the torch activation a parameter-free library module computes (e.g.
    transformers' ``NewGELUActivation``, GELU's tanh approximation written out), checked on a random input; None
    when it is none of them."""
    if list(module.parameters()) or list(module.children()):
        return None
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(0)) * 3
    for fn, kwargs in KNOWN_ACTIVATIONS:
        with torch.no_grad():
            want = fn(x, **kwargs)
            try:
                got = module(x)
            except Exception:  # noqa: BLE001 - any failure means it is not this activation
                return None
        if isinstance(got, torch.Tensor) and got.shape == want.shape and torch.allclose(got, want, 1e-5, 1e-5):
            return fn, kwargs
    return None


KNOWN_ACTIVATIONS = ((F.gelu, {}), (F.gelu, {"approximate": "tanh"}), (F.silu, {}), (F.relu, {}), (torch.tanh, {}),
                     (torch.sigmoid, {}))


@dataclass(frozen=True)
class Exported:
    """A normalised exported graph (``module``: an ``fx.GraphModule`` whose ``get_attr`` targets are the model's
    parameter, buffer and constant names) and the input shape it is valid for."""

    module: fx.GraphModule
    shape: tuple[int, ...]
    dtype: torch.dtype


def _val(node):
    return node.meta.get("val") if isinstance(node, fx.Node) else None


def _dim(node, d: int, extra: int = 0) -> int:
    """``d`` as a nonnegative dimension of ``node``'s value (of rank + ``extra``)."""
    return d % (_val(node).dim() + extra)


def _full(n: int) -> tuple:
    return (slice(None),) * n


def _library_regions(ep, model: nn.Module, names: dict) -> dict:
    """The library modules (not torch's own) that compute one torch op, checked numerically (an activation written
    out, e.g. transformers' ``NewGELUActivation``; a weight-only RMSNorm, e.g. ``LlamaRMSNorm``), and whose nodes
    in the exported graph read one activation and give one value: {that value's node: (function, the activation's
    node, extra arguments, keyword arguments, the region's nodes)}. The parser then reads one call."""
    regions: dict[str, list] = {}
    for node in ep.graph_module.graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        for path, _ in stack.values():  # every module the node runs inside
            regions.setdefault(path, []).append(node)
    out = {}
    for path, nodes in regions.items():
        try:
            module = model.get_submodule(path)
        except AttributeError:
            continue
        if type(module).__module__.startswith("torch.") or list(module.children()):
            continue
        act = _activation_of(module)
        eps = None if act is not None else rms_eps(module)
        if act is None and eps is None:
            continue
        inside = {n for n in nodes if getattr(n.target, "overloadpacket", None) not in CHECKS}
        changed = True
        while changed:  # a cast to the same dtype at the region's edge is its input itself (the caller may read it)
            edge = {n for n in inside if _is_identity(n) and n.all_input_nodes and n.all_input_nodes[0] not in inside}
            inside -= edge
            changed = bool(edge)
        reads = {n for node in inside for n in node.all_input_nodes if n not in inside}
        acts = [n for n in reads if not (n.op == "placeholder" and n.name in names)]
        params = [n for n in reads if n.op == "placeholder" and n.name in names]
        outs = [n for n in inside if any(u not in inside and getattr(u.target, "overloadpacket", None) not in CHECKS
                                         for u in n.users)]
        if len(acts) != 1 or len(outs) != 1:
            continue
        if act is not None and not params:
            out[outs[0]] = (act[0], acts[0], (), act[1], inside)
        elif eps is not None and [names[p.name] for p in params] == [f"{path}.weight"]:
            shape = [int(module.weight.shape[0])]
            out[outs[0]] = (F.rms_norm, acts[0], (shape, params[0], eps), {}, inside)
    return out


def normalise(ep, model: nn.Module) -> Exported:
    """Rewrite an ``ExportedProgram`` of ``model`` (one tensor input) into the op set of the construction parser
    (see the module's docstring). Ops it does not know are kept as they are: the parser refuses them, naming the
    op and the line of the model's code that made it."""
    sig = ep.graph_signature
    names = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}
    state = {**ep.state_dict, **ep.constants}
    g = fx.Graph()
    attrs: dict[str, torch.Tensor] = {}
    env: dict = {}
    shape, dtype = None, None

    def new(target, args, kwargs, like, op="call_function"):
        node = g.create_node(op, target, args, kwargs)
        node.meta = dict(like.meta)
        return node

    def const(value: torch.Tensor, like) -> fx.Node:
        name = f"_slth_{like.name}"
        attrs[name] = value
        node = g.get_attr(name)
        node.meta = dict(like.meta)
        return node

    old_graph = ep.graph_module.graph
    out_specs = [s for s in sig.output_specs if s.kind.name == "USER_OUTPUT"]
    regions = _library_regions(ep, model, names)
    skip = {n for _, _, _, _, inside in regions.values() for n in inside}
    for node in old_graph.nodes:
        if node.op == "placeholder":
            if node.name in names:
                fqn = names[node.name]
                attrs[fqn] = state[fqn]
                env[node] = g.get_attr(fqn)
                env[node].meta = dict(node.meta)
            elif not isinstance(_val(node), torch.Tensor):  # a non-tensor argument (use_cache=False): its value
                env[node] = _val(node)
            else:
                shape, dtype = tuple(int(s) for s in _val(node).shape), _val(node).dtype
                env[node] = g.placeholder(node.name)
                env[node].meta = dict(node.meta)
            continue
        if node.op == "output":
            flat = node.args[0]
            wanted = next((s.arg.name for s in out_specs if hasattr(s.arg, "name")), None)
            first = next((a for a in flat if isinstance(a, fx.Node) and a.name == wanted), None)
            if first is None:
                raise NotImplementedError("the exported model has no tensor output")
            g.output(env[first])
            continue
        if node in regions:  # a library module computing one torch op: that call
            fn, src, extra, kwargs, _ = regions[node]
            env[node] = new(fn, (env[src], *fx.node.map_arg(extra, lambda n: env[n])), kwargs, node)
            continue
        if node in skip:
            continue
        packet = getattr(node.target, "overloadpacket", None)
        if packet in CHECKS:
            continue
        args = fx.node.map_arg(node.args, lambda n: env[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
        if packet is aten.sym_size:  # a static size
            env[node] = int(_val(node))
            continue
        if packet in SHAPE_ONLY:
            like = _val(node.args[0])
            proxy = const(torch.zeros(like.shape, dtype=like.dtype), node)
            args = (proxy, *args[1:])
        elif _is_identity(node):
            env[node] = args[0]
            continue
        env[node] = _translate(node, packet, args, kwargs, new)
    g.eliminate_dead_code()
    gm = fx.GraphModule(attrs, g, "Exported")
    gm.meta["fixed_to_none"] = set()
    if shape is None:
        raise NotImplementedError("the exported model has no tensor input")
    return Exported(gm, shape, dtype)


def _is_identity(node) -> bool:
    """A copy, alias, eval-mode dropout or cast to the same dtype and device: its first input's value."""
    packet = getattr(node.target, "overloadpacket", None)
    if packet in IDENTITY:
        return True
    if packet is aten.dropout:
        return not node.args[2] or not node.args[1]
    if packet in (aten._to_copy, aten.to) and node.args and isinstance(_val(node.args[0]), torch.Tensor):
        before, after = _val(node.args[0]), _val(node)
        return isinstance(after, torch.Tensor) and after.dtype == before.dtype and after.device == before.device
    return False


def _translate(node, packet, args, kwargs, new):
    """The torch-level call for one ATen node (args already mapped to the new graph), or the node as it is."""
    a = args
    if packet is aten.linear:
        return new(F.linear, a, kwargs, node)
    if packet is aten.addmm and not kwargs:  # addmm(b, x, W) = x @ W + b
        return new(linear_t, (a[1], a[2], a[0]), {}, node)
    if packet in (aten.mm, aten.bmm, aten.matmul):
        return new(torch.matmul, a, kwargs, node)
    if packet is aten.embedding:
        return new(F.embedding, (a[1], a[0]), {}, node)
    if packet is aten.layer_norm:
        return new(F.layer_norm, tuple(a[:5]), {}, node)
    if packet is getattr(aten, "rms_norm", None):
        return new(F.rms_norm, tuple(a[:4]), {}, node)
    if packet is aten.gelu:
        approximate = kwargs.get("approximate", a[1] if len(a) > 1 else "none")
        return new(F.gelu, (a[0],), {"approximate": approximate}, node)
    if packet in ACTIVATIONS and len(a) == 1 and not kwargs:
        return new(ACTIVATIONS[packet], a, {}, node)
    if packet in (aten.view, aten.reshape, aten._unsafe_view):
        return new(torch.reshape, (a[0], list(a[1])), {}, node)
    if packet is aten.permute:
        return new(torch.permute, (a[0], list(a[1])), {}, node)
    if packet is aten.transpose:
        return new(torch.transpose, a, {}, node)
    if packet is aten.t and _val(node.args[0]).dim() == 2:
        return new(torch.transpose, (a[0], 0, 1), {}, node)
    if packet is aten.expand:
        return new("expand", (a[0], list(a[1])), {}, node, op="call_method")
    if packet is aten.unsqueeze:
        d = _dim(node.args[0], a[1], 1)
        return new(operator.getitem, (a[0], (*_full(d), None)), {}, node)
    if packet is aten.select:
        return new(operator.getitem, (a[0], (*_full(_dim(node.args[0], a[1])), int(a[2]))), {}, node)
    if packet is aten.slice and not kwargs:
        dim, start, end, step = (list(a[1:]) + [0, None, None, 1][len(a) - 1:])[:4]
        size = _val(node.args[0]).shape[_dim(node.args[0], dim)]
        end = None if end is not None and end >= size else end
        return new(operator.getitem, (a[0], (*_full(_dim(node.args[0], dim)), slice(start, end, step))), {}, node)
    if packet in (aten.split, aten.split_with_sizes) and not kwargs:
        size = a[1] if isinstance(a[1], int) else list(a[1])
        return new(torch.split, (a[0], size, a[2] if len(a) > 2 else 0), {}, node)
    if packet is aten.chunk and not kwargs:
        return new(torch.chunk, tuple(a), {}, node)
    if packet is aten.unbind and not kwargs:
        return new(torch.unbind, tuple(a), {}, node)
    if packet is aten.cat:
        return new(torch.cat, (list(a[0]), a[1] if len(a) > 1 else kwargs.get("dim", 0)), {}, node)
    if packet is aten.flatten:
        return new(torch.flatten, tuple(a), {}, node)
    if packet in (aten.add, aten.sub) and len(a) == 2:
        alpha = kwargs.get("alpha", 1)
        y = a[1]
        if packet is aten.sub or alpha != 1:
            factor = -alpha if packet is aten.sub else alpha
            y = new(operator.mul, (y, factor), {}, node) if isinstance(y, fx.Node) else y * factor
        return new(operator.add, (a[0], y), {}, node)
    if packet is aten.neg:
        return new(operator.mul, (a[0], -1.0), {}, node)
    if packet is aten.mul and len(a) == 2 and not kwargs:
        return new(operator.mul, a, {}, node)
    if packet is aten.div and len(a) == 2 and not kwargs:
        return new(operator.truediv, a, {}, node)
    if packet in (aten.softmax, aten._softmax):
        d = _dim(node.args[0], a[1])
        last = d == _val(node.args[0]).dim() - 1
        return new(F.softmax, (a[0],), {"dim": -1 if last else d}, node)
    if packet is aten.mean and len(a) >= 2 and not kwargs.get("dtype"):
        return new(torch.mean, (a[0], a[1], bool(a[2]) if len(a) > 2 else bool(kwargs.get("keepdim", False))), {},
                   node)
    if packet is aten.scaled_dot_product_attention:
        return new(F.scaled_dot_product_attention, a, kwargs, node)
    return new(node.target, a, kwargs, node)
