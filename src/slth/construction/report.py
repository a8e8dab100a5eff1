"""Measured error of a ticket: agreement with the target on data, per-layer weight errors.

The certified bound lives in :mod:`slth.construction.bound` (one implementation for every ticket).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .bound import realised_kernels, refuse_untraced
from .target import parse_options, parse_target
from .ticket import Ticket


@torch.no_grad()
def measure(ticket_module: torch.nn.Module, target: torch.nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
            *, batch_size: int = 1000, progress=None) -> dict[str, Any]:
    """Measured agreement of the ticket with the target on data: max logit difference, accuracies, top-1 agreement.

    Outputs of shape (..., classes) with more than two dimensions (a sequence model's (N, L, vocab)) and a
    transformers output's ``logits`` (e.g. a module-replacement ticket's) are compared position by position:
    every position is a row (``examples`` counts rows; ``y`` then holds one label per position)."""
    target = target.eval()
    ticket_module = ticket_module.eval()
    max_diff = 0.0
    agree = correct_t = correct_k = rows = 0
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        ft = _scores(target(xb)).double()
        fk = _scores(ticket_module(xb)).double()
        max_diff = max(max_diff, float((ft - fk).abs().max()))
        pt, pk = ft.argmax(1), fk.argmax(1)
        agree += int((pt == pk).sum())
        rows += len(ft)
        if y is not None:
            yb = y[start : start + batch_size]
            yb = yb.reshape(-1) if yb.ndim > 1 and yb.numel() == len(pt) else yb  # a label per position
            correct_t += int((pt == yb).sum())
            correct_k += int((pk == yb).sum())
        if progress is not None:
            progress(len(xb))
    out = {"max_logit_diff": max_diff, "top1_agreement": agree / rows, "examples": int(rows)}
    if y is not None:
        out["target_accuracy"] = correct_t / rows
        out["ticket_accuracy"] = correct_k / rows
    return out


def _scores(out) -> torch.Tensor:
    """A model's output (a tensor, or a transformers output's ``logits``) as (rows, classes) scores."""
    out = getattr(out, "logits", out)
    return out.reshape(-1, out.shape[-1]) if out.ndim > 2 else out


def weight_errors(ticket: Ticket, target) -> list[float]:
    """Per-layer max |realised - target| over weights and biases, recomputed from the ticket's module."""
    refuse_untraced(ticket, "weight_errors")
    _, linears = parse_target(target, **parse_options(ticket.config))
    errs = []
    for spec, real in zip(linears, realised_kernels(ticket)):
        e = np.abs(real.pos.numpy() - spec.weight).max()
        if real.neg is not None:
            e = max(e, np.abs(real.neg.numpy() + spec.weight).max())
        if real.bias is not None:
            e = max(e, np.abs(real.bias.numpy() - spec.bias).max())
        errs.append(float(e))
    return errs
