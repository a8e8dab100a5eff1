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

import numpy as np
import torch

from .graph import BoundContext, plan_scales
from .network import RandomPair, RealisedKernels
from .target import parse_options, parse_target


def refuse_untraced(ticket, what: str) -> None:
    """``NotImplementedError`` for a ticket built by module replacement: ``what`` needs the construction graph,
    which only a traced model has; names the first module torch.fx could not trace."""
    if ticket.replaces_modules:
        raise NotImplementedError(
            f"{what} needs the traced construction graph, and this ticket replaced the modules of a "
            f"{ticket.config['model']} that torch.fx could not trace ({ticket.config['untraced']}); measure its "
            "error on data with slth.construction.measure instead")


def realised_kernels(ticket, module=None) -> list[RealisedKernels]:
    """Per layer, the kernels the pruned random pair realises in the target's units (:class:`RealisedKernels`)."""
    module = ticket.to_module() if module is None else module
    named = dict(module.named_modules())
    out = []
    layer_scales = ticket.stats["layer_scales"]
    graph = ticket.graph
    bias_scales = plan_scales(graph, ticket.layouts, layer_scales).bias_scales
    for index, (pos, layout) in enumerate(zip(graph.layer_positions(), ticket.layouts)):
        pair: RandomPair = named[str(pos)]
        scale, bias_scale = layer_scales[index], bias_scales[index]
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
        out.append(RealisedKernels(pos=prod[:, :, 0], neg=prod[:, :, 1] if g == 2 else None, bias=bias))
    return out


def certified_bound(ticket, target, lo=None, hi=None, *, center=None, radius=None, input_shape=None) -> np.ndarray:
    """Elementwise bound on |ticket(x) - target(x)| over every x in the box [lo, hi], or in the L-inf / L2
    ball of ``radius`` around ``center`` (both inside the box center ± radius). ``lo``, ``hi``, ``center``
    are numbers or arrays broadcast to one input's shape: ``input_shape`` (C, H, W) for a ticket whose
    first layer is a convolution, else the flat input (d,). Default box: the ticket's ``input_range`` if it
    was built with one, [0, 1] for a ticket built with ``nonnegative_input``, else [-1, 1]. Returns the bound
    per output (flattened)."""
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
