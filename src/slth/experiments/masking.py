"""Supermasks with per-layer densities on any model, and one small trainer for the evidence experiments.

:func:`slth.supermask.apply_supermask` gives every layer a density from a rule (uniform, ERK) and
re-seeds the weights. The experiments here need to keep weights they planted or initialised their own way
(Plant 'n' Seek, Pensia's RedLayer) and to give each tensor its own density, so :func:`attach` registers
the same parametrization classes (``slth.supermask.methods``) on the ``weight`` of every module listed,
leaving the weights as they are. The trainer hooks (``after_step``, ``after_epoch``, ``regularization``,
``final_masks``) are slth.supermask's own, so every method behaves as in ``slth train``.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..supermask import after_epoch, after_step, derive_seed, final_masks, regularization
from ..supermask.methods import METHODS, Bernoulli, BiProp, EdgePopup, GemMiner, IteRand


def scores_like(method: str, weight: torch.Tensor, fan_in: int, density: float, gen: torch.Generator) -> torch.Tensor:
    """Initial scores as slth.supermask draws them: kaiming-uniform (a = sqrt 5), U[0, 1] for Gem-Miner,
    shifted by logit(density) for Bernoulli so the sampled masks start near the target density."""
    u = torch.rand(weight.shape, generator=gen)
    if method == "gem-miner":
        return u
    scores = (2.0 * u - 1.0) / math.sqrt(fan_in)
    if method == "bernoulli":
        d = min(max(density, 1e-3), 1 - 1e-3)
        scores = scores + math.log(d / (1.0 - d))
    return scores


def attach(model: nn.Module, method: str, densities: dict[str, float], seed: int, *,
           redraw: Callable[[str, int], torch.Tensor] | None = None, fan_in: dict[str, int] | None = None,
           rerand_period: int = 300, rerand_prob: float = 0.1, score_l2: float = 1e-4) -> nn.Module:
    """Freeze every parameter of ``model`` and mask ``weight`` of each module named in ``densities``
    (kept fraction per module) with ``method``'s parametrization. ``redraw(name, generation)`` gives
    IteRand's re-draws of that module's weights; ``fan_in`` overrides the fan used for the score scale."""
    if method not in METHODS:
        raise ValueError(f"unknown supermask method {method!r}; valid: {', '.join(METHODS)}")
    if method == "iterand" and redraw is None:
        raise ValueError("iterand needs redraw(name, generation)")
    modules = dict(model.named_modules())
    for p in model.parameters():
        p.requires_grad_(False)
    for name, density in densities.items():
        module = modules[name]
        w = module.weight
        fan = (fan_in or {}).get(name, math.prod(w.shape[1:]))
        scores = scores_like(method, w, fan, density, torch.Generator().manual_seed(derive_seed(seed, "scores", name)))
        sample_seed = derive_seed(seed, "sample", name)
        if method == "edge-popup":
            p = EdgePopup(w.shape, density, scores)
        elif method == "biprop":
            p = BiProp(w.shape, density, scores)
        elif method == "bernoulli":
            p = Bernoulli(w.shape, density, scores, sample_seed)
        elif method == "iterand":
            p = IteRand(w.shape, density, scores, sample_seed, redraw=lambda g, name=name: redraw(name, g),
                        period=rerand_period, prob=rerand_prob)
        else:
            p = GemMiner(w.shape, density, scores, score_l2=score_l2)
        parametrize.register_parametrization(module, "weight", p, unsafe=True)
    return model


def normal_weight(shape, fan_in: int, seed: int, *keys) -> torch.Tensor:
    """He-normal N(0, 2/fan_in), seeded by (seed, keys)."""
    gen = torch.Generator().manual_seed(derive_seed(seed, *keys))
    return torch.randn(tuple(shape), generator=gen) * math.sqrt(2.0 / fan_in)


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
        order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, "data-order", epoch)))
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
