"""Error report of a ticket: per-layer weight errors, a certified output bound, measured agreement.

Certified bound (exact arithmetic; derivation in docs/construction.md). For target layer l with
weights W, bias b and the ticket's realised weights P (on relu(x)), Q (on relu(-x)) and bias b^,

    z^ - z = (P - W) relu(h^) + (Q + W) relu(-h^) + W (h^ - h) + (b^ - b),

so with |h^ - h| <= d elementwise and the target's activations h in [h_lo, h_hi] (interval bound
propagation over the input box),

    |z^ - z| <= max_u |(P - W) u| + max_v |(Q + W) v| + |W| d + |b^ - b|,

with u = relu(h^) in [relu(h_lo - d), relu(h_hi + d)] and v = relu(-h^) in [relu(-h_hi - d),
relu(-h_lo + d)] (a signed error vector over an interval: |E c| + |E| r with center c, radius r),

and a ReLU is 1-Lipschitz, so the same d carries through it. Starting from d = 0 at the input this
bounds every output of the ticket against the target for *every* input in the box.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .network import RandomPair
from .target import parse_target
from .ticket import Ticket


def realised_weights(ticket: Ticket) -> list[dict[str, np.ndarray | None]]:
    """Per layer, the weights the pruned random pair realises, in the target's scale (float64)."""
    module = ticket.to_module()
    pairs = [m for m in module if isinstance(m, RandomPair)]
    out = []
    cumulative = 1.0
    for pair, layout, scale in zip(pairs, ticket.layouts, ticket.stats["layer_scales"]):
        cumulative *= scale
        a = pair.a.weight.detach().double().numpy()  # (d_in, units)
        b = pair.b.weight.detach().double().numpy()  # (d_out, hidden)
        n, g = layout.n, layout.groups
        blocks = b[:, : layout.d_in * layout.units].reshape(layout.d_out, layout.d_in, g, n)
        prod = (blocks * np.abs(a).reshape(layout.d_in, g, n)[None]).sum(axis=-1) * scale
        bias = None
        if layout.bias:
            beta = pair.a.bias.detach().double().numpy()
            bias = (b[:, layout.d_in * layout.units :] * beta[None]).sum(axis=-1) * cumulative
        out.append({"pos": prod[:, :, 0], "neg": prod[:, :, 1] if g == 2 else None, "bias": bias})
    return out


def _box(lo, hi, d: int) -> tuple[np.ndarray, np.ndarray]:
    lo = np.broadcast_to(np.asarray(lo, dtype=np.float64).reshape(-1), (d,)).copy()
    hi = np.broadcast_to(np.asarray(hi, dtype=np.float64).reshape(-1), (d,)).copy()
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()) or (lo > hi).any():
        raise ValueError("input box must be finite with lo <= hi")
    return lo, hi


def _interval_abs(e: np.ndarray, u_lo: np.ndarray, u_hi: np.ndarray) -> np.ndarray:
    """max over u in [u_lo, u_hi] of |e @ u|, elementwise over rows (sound, tight for one row)."""
    c, r = (u_lo + u_hi) / 2, (u_hi - u_lo) / 2
    return np.abs(e @ c) + np.abs(e) @ r


def is_mlp(ticket: Ticket) -> bool:
    """A chain of Linear pairs (the tickets this module's MLP formulas are written for)."""
    return all("args" not in op for op in ticket.config["ops"]) and not any(lay.conv for lay in ticket.layouts)


def certified_bound(ticket: Ticket, target, lo=None, hi=None, *, center=None, radius=None,
                    input_shape=None) -> np.ndarray:
    """Elementwise bound on |ticket(x) - target(x)| over all x in the box [lo, hi] (flattened input),
    or in the L-inf / L2 ball of ``radius`` around ``center`` (both contained in the box center ± radius).
    Default box: [0, 1] for a ticket built with ``nonnegative_input``, else [-1, 1].
    CNN and residual tickets: :func:`slth.construct.bound.certified_bound_nd` over the box broadcast to
    ``input_shape`` (C, H, W)."""
    if not is_mlp(ticket):
        from .bound import certified_bound_nd

        if input_shape is None or center is not None or radius is not None:
            raise ValueError("a CNN/residual ticket's bound needs input_shape (C, H, W) and a box lo, hi")
        if lo is None and hi is None:
            lo, hi = (0.0, 1.0) if ticket.config["nonnegative_input"] else (-1.0, 1.0)
        shape = tuple(input_shape)
        lo = torch.broadcast_to(torch.as_tensor(lo, dtype=torch.float64), shape)
        hi = torch.broadcast_to(torch.as_tensor(hi, dtype=torch.float64), shape)
        return certified_bound_nd(ticket, target, lo, hi)
    _, linears = parse_target(target, nonnegative_input=ticket.config["nonnegative_input"])
    d = linears[0].d_in
    if center is not None or radius is not None:
        if center is None or radius is None or radius < 0:
            raise ValueError("a ball needs a center and a radius >= 0")
        c = np.asarray(center, dtype=np.float64).reshape(-1)
        lo, hi = c - radius, c + radius
    elif lo is None and hi is None:
        lo, hi = (0.0, 1.0) if ticket.config["nonnegative_input"] else (-1.0, 1.0)
    lo, hi = _box(lo, hi, d)
    if ticket.config["nonnegative_input"] and (lo < 0).any():
        raise ValueError("the ticket was built for nonnegative inputs; the box must have lo >= 0")
    h_lo, h_hi = lo, hi
    delta = np.zeros(d)
    for spec, real in zip(linears, realised_weights(ticket)):
        w = spec.weight
        bias = np.zeros(spec.d_out) if spec.bias is None else spec.bias
        # relu(h^) and relu(-h^) lie in intervals; signed errors are bounded over them (center/radius)
        err = _interval_abs(real["pos"] - w, np.maximum(h_lo - delta, 0), np.maximum(h_hi + delta, 0))
        err += np.abs(w) @ delta
        if real["neg"] is not None:
            err += _interval_abs(real["neg"] + w, np.maximum(-h_hi - delta, 0), np.maximum(-h_lo + delta, 0))
        if real["bias"] is not None:
            err += np.abs(real["bias"] - bias)
        # interval propagation of the target itself
        c, r = (h_lo + h_hi) / 2, (h_hi - h_lo) / 2
        zc, zr = w @ c + bias, np.abs(w) @ r
        h_lo, h_hi = zc - zr, zc + zr
        if spec.relu_after:
            h_lo, h_hi = np.maximum(h_lo, 0), np.maximum(h_hi, 0)
        delta = err
    return delta


@torch.no_grad()
def measure(ticket_module: torch.nn.Module, target: torch.nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
            *, batch_size: int = 1000, progress=None) -> dict[str, Any]:
    """Measured agreement of the ticket with the target on data: max logit difference, accuracies, top-1 agreement."""
    target = target.eval()
    ticket_module = ticket_module.eval()
    max_diff = 0.0
    agree = correct_t = correct_k = 0
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        ft = target(xb).double()
        fk = ticket_module(xb).double()
        max_diff = max(max_diff, float((ft - fk).abs().max()))
        pt, pk = ft.argmax(1), fk.argmax(1)
        agree += int((pt == pk).sum())
        if y is not None:
            yb = y[start : start + batch_size]
            correct_t += int((pt == yb).sum())
            correct_k += int((pk == yb).sum())
        if progress is not None:
            progress(len(xb))
    out = {"max_logit_diff": max_diff, "top1_agreement": agree / len(x), "examples": int(len(x))}
    if y is not None:
        out["target_accuracy"] = correct_t / len(x)
        out["ticket_accuracy"] = correct_k / len(x)
    return out


def weight_errors(ticket: Ticket, target) -> list[float]:
    """Per-layer max |realised - target| over weights and biases, recomputed from the ticket's module."""
    _, linears = parse_target(target, nonnegative_input=ticket.config["nonnegative_input"])
    errs = []
    if is_mlp(ticket):
        realised = realised_weights(ticket)
    else:
        from .bound import realised_kernels

        realised = [{k: None if v is None else v.numpy() for k, v in r.items()} for r in realised_kernels(ticket)]
    for spec, real in zip(linears, realised):
        e = np.abs(real["pos"] - spec.weight).max()
        if real["neg"] is not None:
            e = max(e, np.abs(real["neg"] + spec.weight).max())
        if real["bias"] is not None:
            e = max(e, np.abs(real["bias"] - spec.bias).max())
        errs.append(float(e))
    return errs
