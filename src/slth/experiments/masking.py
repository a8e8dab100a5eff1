"""Supermasks with per-layer densities on any model, and one small trainer for the evidence experiments.

:func:`slth.supermask.apply_supermask` gives every layer a density from a rule (uniform, ERK) and
re-seeds the weights. The experiments here need to keep weights they planted or initialised their own way
(Plant 'n' Seek, Pensia's RedLayer) and to give each tensor its own density, so :func:`attach` masks the
``weight`` of every module listed through the same machinery (:func:`slth.supermask.apply.mask_tensors`,
which reads each method's :data:`slth.supermask.METHODS` entry), leaving the weights as they are. The
trainer hooks (``after_step``, ``after_epoch``, ``regularization``, ``final_masks``) are slth.supermask's
own, so every method behaves as in ``slth train``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..seeding import generator
from ..supermask import after_epoch, after_step, final_masks, regularization
from ..supermask.apply import mask_tensors
from ..supermask.methods import METHODS, SupermaskConfig


def attach(model: nn.Module, method: str, densities: dict[str, float], seed: int, *,
           redraw: Callable[[str, int], torch.Tensor] | None = None,
           fan_in: dict[str, int] | None = None) -> nn.Module:
    """Freeze every parameter of ``model`` and mask ``weight`` of each module named in ``densities``
    (kept fraction per module) with ``method``'s parametrization (:func:`slth.supermask.apply.mask_tensors`,
    as ``apply_supermask``). ``redraw(name, generation)`` gives IteRand's re-draws of that module's
    weights; ``fan_in`` overrides the fan used for the score scale. The method's own settings are
    :class:`~slth.supermask.SupermaskConfig`'s defaults."""
    if method not in METHODS:
        raise ValueError(f"unknown supermask method {method!r}; valid: {', '.join(METHODS)}")
    config = SupermaskConfig(method=method)
    return mask_tensors(model, config, densities, seed, redraw=redraw, fan_in=fan_in)


def normal_weight(shape, fan_in: int, seed: int, *keys) -> torch.Tensor:
    """He-normal N(0, 2/fan_in), seeded by (seed, keys)."""
    return torch.randn(tuple(shape), generator=generator(seed, *keys)) * math.sqrt(2.0 / fan_in)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str, batch: int = 2000) -> float:
    """Accuracy (classification) or mean squared error (regression), eval mode (final masks)."""
    model.eval()
    total = 0.0
    for i in range(0, len(x), batch):
        out = model(x[i : i + batch])
        if task == "classification":
            total += float((out.argmax(1) == y[i : i + batch]).sum())
        else:
            total += float(((out - y[i : i + batch]) ** 2).sum())
    return total / len(x) if task == "classification" else total / y.numel()


def fit(model: nn.Module, data: tuple[torch.Tensor, ...], *, task: str, epochs: int, lr: float, seed: int,
        batch_size: int = 128, momentum: float = 0.9, weight_decay: float = 0.0) -> dict:
    """SGD with momentum and a per-step cosine schedule on the trainable parameters (scores, or weights
    for dense); the supermask hooks run after each step and epoch, as in ``slth.train``."""
    x_tr, y_tr, x_te, y_te = data
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    n = len(x_tr)
    steps = epochs * math.ceil(n / batch_size)
    step = 0
    history = []
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator(seed, "data-order", epoch))
        for b in range(0, n, batch_size):
            idx = order[b : b + batch_size]
            for g in opt.param_groups:
                g["lr"] = 0.5 * lr * (1.0 + math.cos(math.pi * step / steps))
            out = model(x_tr[idx])
            loss = F.cross_entropy(out, y_tr[idx]) if task == "classification" else F.mse_loss(out, y_tr[idx])
            opt.zero_grad(set_to_none=True)
            (loss + regularization(model)).backward()
            opt.step()
            step += 1
            after_step(model, step)
        after_epoch(model, epoch, epochs)
        history.append(evaluate(model, x_te, y_te, task))
    return {"test_metric": history[-1], "test_metric_per_epoch": history, "seconds": time.perf_counter() - start,
            "epochs": epochs, "lr": lr, "weight_decay": weight_decay, "batch_size": batch_size}


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """Final boolean masks keyed by module name (``final_masks`` keys are ``<module>.weight``)."""
    return {k[: -len(".weight")]: v for k, v in final_masks(model).items()}
