"""Certified output bound for any constructed ticket: MLPs, convolutions, pooling and residual joins.

The one implementation of the bound (derivation in docs/construction.md). For a layer (Linear or Conv2d,
written ``L_K(x)`` for "apply kernel K to x") with target kernel W, bias b and the ticket's realised
kernels P (on relu(x)), Q (on relu(-x), ≈ -W) and bias b^,

    z^ - z = L_{P-W}(relu(h^)) + L_{Q+W}(relu(-h^)) + L_W(h^ - h) + (b^ - b),

so with |h^ - h| <= d elementwise and the target's activation h in [lo, hi] (interval propagation),
|z^ - z| <= |L_E(c)| + L_|E|(r) (per term, c/r the centre/radius of the relu interval) + L_|W|(d) + |b^ - b|.
Without a negative group (inputs >= 0 in both networks) the Q term is absent and P is applied to h^.
ReLU, max pooling and flatten are 1-Lipschitz elementwise/max maps: d passes through them (max pooling
takes the max of d over the window). Average pooling is an average: it averages d. A residual join adds
both branches' d (the ticket's join factors only undo its internal rescaling, so in the target's units
both networks add plainly). The result bounds |ticket(x) - target(x)| for every x in the box, with
exact arithmetic (float32 evaluation adds a relative ~1e-6).

What each op does to the intervals and errors is written once, by its node class in
:mod:`slth.construction.graph` (``Node.bound``; the layer term above is :func:`~slth.construction.graph.layer_bound`);
this module sets up the box and the realised kernels and walks the graph.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .graph import BoundContext, EmbeddingNode, plan_scales
from .network import LayerLayout, RandomPair, RealisedKernels
from .target import as_example_inputs, parse_exported, parse_options, parse_target


def refuse_untraced(ticket, what: str) -> None:
    """``NotImplementedError`` for a ticket built by module replacement: ``what`` needs the construction graph,
    which only a traced model has; names the first module torch.fx could not trace."""
    if ticket.replaces_modules:
        raise NotImplementedError(
            f"{what} needs the traced construction graph, and this ticket replaced the modules of a "
            f"{ticket.config['model']} that torch.fx could not trace ({ticket.config['untraced']}); measure its "
            "error on data with slth.construction.measure instead"
            + ("; or give example_inputs= to bound it through torch.export" if what == "certified_bound" else ""))


def realised_kernels(ticket, module=None) -> list[RealisedKernels]:
    """Per layer, the kernels the pruned random pair realises in the target's units (:class:`RealisedKernels`)."""
    module = ticket.to_module() if module is None else module
    named = dict(module.named_modules())
    out = []
    layer_scales = ticket.stats["layer_scales"]
    graph = ticket.graph
    bias_scales = plan_scales(graph, ticket.layouts, layer_scales).bias_scales
    for index, (pos, layout) in enumerate(zip(graph.layer_positions(), ticket.layouts)):
        out.append(pair_kernels(named[str(pos)], layout, layer_scales[index], bias_scales[index]))
    return out


def pair_kernels(pair: RandomPair, layout: LayerLayout, scale: float, bias_scale: float) -> RealisedKernels:
    """The kernels one pruned random pair realises, in the target's units (its weights times ``scale``, its bias
    times ``bias_scale``)."""
    a = pair.a.weight.detach().double()  # (d_in, units)
    b = pair.b.weight.detach().double()  # (d_out, hidden, *kernel)
    n, g, d_in = layout.n, layout.groups, layout.d_in
    kdims = (1,) * len(layout.kernel)
    blocks = b[:, : d_in * layout.units].reshape(layout.d_out, d_in, g, n, *layout.kernel)
    prod = (blocks * a.abs().reshape(1, d_in, g, n, *kdims)).sum(dim=3) * scale
    bias = None
    if layout.bias:
        assert pair.a.bias is not None  # a layout with bias units has them
        beta = pair.a.bias.detach().double()
        bb = b[:, d_in * layout.units :] * beta.reshape(1, -1, *kdims)
        bias = bb.reshape(layout.d_out, -1).sum(dim=1) * bias_scale
    return RealisedKernels(pos=prod[:, :, 0], neg=prod[:, :, 1] if g == 2 else None, bias=bias)


def certified_bound(ticket, target, lo=None, hi=None, *, center=None, radius=None, input_shape=None,
                    example_inputs=None) -> np.ndarray:
    """Elementwise bound on |ticket(x) - target(x)| over every x in the box [lo, hi], or in the L-inf / L2
    ball of ``radius`` around ``center`` (both inside the box center ± radius). ``lo``, ``hi``, ``center``
    are numbers or arrays broadcast to one input's shape: ``input_shape`` (C, H, W) for a ticket whose
    first layer is a convolution, else the flat input (d,). Default box: the ticket's ``input_range`` if it
    was built with one, [0, 1] for a ticket built with ``nonnegative_input``, else [-1, 1]. Returns the bound
    per output (flattened).

    A ticket built by module replacement (a model torch.fx cannot trace) needs ``example_inputs``: the target is
    exported with torch.export on them and the bound holds for inputs of their shape, by default at the example
    inputs themselves (a point; ``lo`` / ``hi`` of that shape give a box, e.g. every token id); see
    :func:`modules_bound`."""
    if ticket.replaces_modules and example_inputs is not None:
        if center is not None or radius is not None or input_shape is not None:
            raise ValueError("a module-replacement ticket's bound takes example_inputs and an optional lo / hi of "
                             "their shape (no center, radius or input_shape)")
        return modules_bound(ticket, target, example_inputs, lo, hi)
    if example_inputs is not None:
        raise ValueError("example_inputs is for tickets built by module replacement; this ticket has its traced "
                         "graph (give the input box)")
    refuse_untraced(ticket, "certified_bound")
    first = ticket.layouts[0]
    if input_shape is None:
        if first.conv:
            raise ValueError("a ticket whose first layer is a convolution needs input_shape (C, H, W) for its bound")
        input_shape = (first.d_in,)
    shape = tuple(int(s) for s in input_shape)
    if center is not None or radius is not None:
        if center is None or radius is None or radius < 0:
            raise ValueError("a ball needs a center and a radius >= 0")
        c = torch.as_tensor(np.asarray(center, dtype=np.float64)).reshape(shape)
        lo, hi = c - radius, c + radius
    elif lo is None and hi is None:
        if "input_range" in ticket.config:
            lo, hi = ticket.config["input_range"]
        else:
            lo, hi = (0.0, 1.0) if ticket.config["nonnegative_input"] else (-1.0, 1.0)
    elif lo is None or hi is None:
        raise ValueError("give both lo and hi of the input box")
    lo = torch.as_tensor(np.asarray(lo, dtype=np.float64))
    hi = torch.as_tensor(np.asarray(hi, dtype=np.float64))
    try:
        lo = torch.broadcast_to(lo.reshape(shape) if lo.numel() == math.prod(shape) else lo, shape)
        hi = torch.broadcast_to(hi.reshape(shape) if hi.numel() == math.prod(shape) else hi, shape)
    except RuntimeError:
        raise ValueError(f"the input box does not fit the input shape {shape}") from None
    return certified_bound_nd(ticket, target, lo, hi)


@torch.no_grad()
def certified_bound_nd(ticket, target, lo, hi, *, batched: bool = False) -> np.ndarray:
    """Elementwise bound on |ticket(x) - target(x)| for every x with lo <= x <= hi (tensors or floats
    broadcast to one input's shape, e.g. (C, H, W)); returns the bound per output (flattened).
    ``batched=True``: lo/hi are (B, C, H, W), B boxes at once (e.g. lo = hi = a batch of points); returns
    (B, outputs)."""
    refuse_untraced(ticket, "certified_bound")
    graph, specs = parse_target(target, **parse_options(ticket.config))
    lo = torch.as_tensor(lo, dtype=torch.float64)
    hi = torch.as_tensor(hi, dtype=torch.float64)
    if not batched:
        lo, hi = lo[None], hi[None]
    if lo.shape != hi.shape:
        lo, hi = torch.broadcast_tensors(lo, hi)
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()) or (lo > hi).any():
        raise ValueError("input box must be finite with lo <= hi")
    if ticket.config["nonnegative_input"] and (lo < 0).any():
        raise ValueError("the ticket was built for nonnegative inputs; the box must have lo >= 0")
    if "input_range" in ticket.config:
        floor = float(ticket.config["input_range"][0])
        if (lo < floor - 1e-6 * max(1.0, abs(floor))).any():  # slack: lo rounded to float32
            raise ValueError(f"the ticket was built for inputs >= {floor} (its input_range); the box must not go "
                             "below it")
        lo, hi = lo.clamp(min=floor), hi.clamp(min=floor)
    ctx = BoundContext(specs, ticket.layouts, realised_kernels(ticket))
    out = graph.propagate_bound((lo, hi, torch.zeros_like(lo)), ctx)[2]
    out = out.reshape(out.shape[0], -1).numpy()
    return out if batched else out[0]


# -- module replacement: the bound through torch.export ------------------------------------------------------------
def leaf_kernels(ticket, model) -> tuple[dict, dict]:
    """For a module-replacement ticket rebuilt in ``model``: {leaf path: (its pair's :class:`RealisedKernels`, its
    layout)} for every leaf with one pair (Linear, Conv1D, convs, embeddings, norm and BatchNorm affines), and
    {target parameter name: the tensor the ticket holds in its place} (an embedding's realised table (num, dim), a
    free parameter's realised value, a tied head's realised bias)."""
    kernels: dict[str, tuple] = {}
    values: dict[str, torch.Tensor] = {}
    layouts = ticket.layouts
    for leaf in ticket.leaves:
        if not leaf.layers:
            continue
        if leaf.kind == "const":
            values[leaf.path] = model.get_buffer(leaf.path).detach().double()
            continue
        module: Any = model.get_submodule(leaf.path)
        if leaf.kind == "tied_linear":  # its one layer is its bias (a constant)
            values[f"{leaf.path}.bias"] = module.bias().detach().double()
        elif leaf.kind in ("linear", "conv1d_t", "conv1d", "conv2d", "embedding", "layernorm", "rmsnorm", "batchnorm"):
            pair = module if leaf.kind in ("linear", "conv1d_t", "conv1d", "conv2d", "embedding") else module.affine
            factor = float(pair.factor)
            layout = layouts[leaf.layers[0]]
            kernels[leaf.path] = (pair_kernels(pair, layout, factor, factor), layout)
            if leaf.kind == "embedding":
                values[f"{leaf.path}.weight"] = kernels[leaf.path][0].pos.T
    return kernels, values


def _leaf_realisation(ticket, spec, is_embedding: bool, kernels: dict, values: dict, owners: dict):
    """(RealisedKernels, layout) of one layer of the exported graph: the pair of the leaf that owns its weight (the
    embedding's pair read transposed for a head tied to it), checked against the target's weight."""
    wkey, bkey = (tuple(spec.source) + ("", ""))[:2]
    owner = owners.get((wkey or bkey).rpartition(".")[0]) if (wkey or bkey) else None
    if owner is None or owner.path not in kernels:
        raise NotImplementedError(
            f"layer {spec.path!r} of the exported graph (weight {wkey or 'unnamed'!r}) is not a module the ticket "
            "replaced with a pair; the bound cannot follow it")
    real, layout = kernels[owner.path]
    w = torch.from_numpy(spec.weight)
    if owner.kind == "embedding" and not is_embedding:  # x E^T: a head tied to (or reading) the embedding's table
        pos = real.pos.T
        real = RealisedKernels(pos=pos, neg=-pos, bias=None)  # the ticket computes x Ê^T, linear in x
        layout = LayerLayout(d_in=spec.d_in, d_out=spec.d_out, n=1, signed_input=True, bias=spec.bias is not None,
                             relu_after=False)
    if not layout.signed_input and not spec.nonnegative_input:  # its pair reads relu(x): x must be >= 0
        raise NotImplementedError(f"the ticket's pair for {owner.path!r} reads a nonnegative input (the ticket was "
                                  f"built from a graph in which it does), but layer {spec.path!r} of the exported "
                                  "graph reads a signed one; the bound cannot follow it")
    if tuple(real.pos.shape) != tuple(w.shape):
        raise NotImplementedError(f"layer {spec.path!r} of the exported graph has shape {tuple(w.shape)}, the pair of "
                                  f"{owner.path!r} realises {tuple(real.pos.shape)}")
    # the target the bound is asked about must be the one the ticket realises
    tolerance = 10 * max(float(ticket.config["eps"]), float(ticket.stats["max_weight_error"]))
    off = float((real.pos - w).abs().max()) if w.numel() else 0.0
    if off > tolerance:
        raise ValueError(f"the ticket's pair for {owner.path!r} is {off:.3g} from the target's weight {wkey!r} (the "
                         f"ticket realises each weight within {ticket.stats['max_weight_error']:.3g}): this is not "
                         "the target the ticket was built from")
    bias = None
    if spec.bias is not None:
        if bkey.rpartition(".")[0] == owner.path and real.bias is not None:
            bias = real.bias
        elif bkey in values:
            bias = values[bkey].reshape(-1)
        elif not bkey and real.bias is not None:  # a norm's beta folded into a reader without a bias of its own
            bias = real.bias
        elif not bkey and not spec.bias.any():  # a zero bias the parser made (an RMSNorm weight's diagonal pair)
            bias = torch.zeros(spec.d_out, dtype=torch.float64)
        else:
            raise NotImplementedError(f"the bias {bkey!r} of layer {spec.path!r} is not realised by the ticket")
    elif real.bias is not None:
        raise NotImplementedError(f"layer {spec.path!r} of the exported graph has no bias, the pair of "
                                  f"{owner.path!r} realises one")
    return RealisedKernels(pos=real.pos, neg=real.neg, bias=bias), layout


@torch.no_grad()
def modules_bound(ticket, target, example_inputs, lo=None, hi=None) -> np.ndarray:
    """Elementwise bound on |ticket(x) - target(x)| (the first output, flattened) for a module-replacement ticket,
    over every x of the example inputs' shape in [lo, hi] (default: the example inputs themselves, a point).

    The target is exported with torch.export on ``example_inputs`` (:func:`~slth.construction.target.parse_exported`)
    into the construction graph, in which each layer is the leaf whose parameters it reads; the ticket is rebuilt
    in a copy of the target and each leaf's pair gives its realised kernels (a head tied to an embedding reads the
    embedding's pair; a norm the ticket folded into its readers (``config["folds"]``) is read folded, its readers'
    layers W diag(gamma), b + W beta); constants (positional embeddings of ``arange(T)``, masks) are evaluated with
    the target's and with the ticket's values. The layers' and ops' bounds are the traced construction's
    (:mod:`.graph`). The exported graph has the example's sizes: the bound holds for inputs of exactly that shape."""
    import copy

    example_inputs = as_example_inputs(example_inputs)
    x = example_inputs[0].double()
    shape = tuple(x.shape)
    box = []
    for v in (lo, hi):  # the box first, before any work
        try:
            box.append(x if v is None else torch.broadcast_to(torch.as_tensor(v, dtype=torch.float64), shape))
        except RuntimeError:
            raise ValueError(f"the input box must broadcast to the example inputs' shape {shape} (the exported "
                             "graph's)") from None
    lo, hi = box
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()) or (lo > hi).any():
        raise ValueError("input box must be finite with lo <= hi")
    model = ticket.to_module(model=copy.deepcopy(target))
    kernels, values = leaf_kernels(ticket, model)
    folds = ticket.config.get("folds")  # norms whose affine the ticket folded into their readers
    read = parse_exported(target, example_inputs, realised=values, folds=set(folds) if folds else None)
    graph, specs, consts = read.graph, read.specs, read.consts
    owners = {path: leaf for leaf in ticket.leaves for path in (leaf.path, *leaf.aliases)}
    owners.update({leaf.path: owners[leaf.options["tie"]] for leaf in ticket.leaves if leaf.kind == "tied_linear"})
    embeddings = {node.index for node in graph.nodes if isinstance(node, EmbeddingNode)}
    real, layouts = [], []
    for index, spec in enumerate(specs):
        if index in consts:  # a constant: the value the ticket computes there
            value = torch.as_tensor(consts[index]).double().reshape(-1)
            real.append(RealisedKernels(pos=torch.zeros(spec.d_out, 0, dtype=torch.float64), neg=None, bias=value))
            layouts.append(LayerLayout(d_in=0, d_out=spec.d_out, n=1, signed_input=False, bias=True, relu_after=False))
            continue
        r, lay = _leaf_realisation(ticket, spec, index in embeddings, kernels, values, owners)
        real.append(r)
        layouts.append(lay)
    out = graph.propagate_bound((lo, hi, torch.zeros_like(lo)), BoundContext(list(specs), layouts, real))[2]
    return out.reshape(-1).numpy()
