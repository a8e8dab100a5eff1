"""Putting supermasks on a model: seeded build, parametrization, the trainer's hooks."""

from __future__ import annotations

import math
from dataclasses import asdict
from functools import partial
from typing import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from .init import derive_seed, draw_weight, fan_in, generator, init_weights, layer_densities, prunable_layers
from .methods import BiProp, Bernoulli, EdgePopup, GemMiner, IteRand, Supermask, SupermaskConfig

DENSE_INIT = "kaiming-normal"


def _scores(method: str, module: nn.Module, name: str, seed: int, density: float) -> torch.Tensor:
    shape = module.weight.shape
    gen = generator(seed, "scores", name)
    u = torch.rand(shape, generator=gen)
    if method == "gem-miner":
        return u  # U[0, 1]
    bound = 1.0 / math.sqrt(fan_in(module))  # kaiming_uniform_(a=sqrt(5)), as hidden-networks
    scores = (2.0 * u - 1.0) * bound
    if method == "bernoulli":  # start with sigmoid(s) ~ density so the sampled masks start at the target
        d = min(max(density, 1e-3), 1 - 1e-3)
        scores = scores + math.log(d / (1.0 - d))
    return scores


def _parametrization(config: SupermaskConfig, module: nn.Module, name: str, seed: int, density: float) -> Supermask:
    shape, scores = module.weight.shape, _scores(config.method, module, name, seed, density)
    method = config.method
    if method == "edge-popup":
        return EdgePopup(shape, density, scores)
    if method == "biprop":
        return BiProp(shape, density, scores)
    sample_seed = derive_seed(seed, "sample", name)
    if method == "bernoulli":
        return Bernoulli(shape, density, scores, sample_seed)
    if method == "iterand":
        # generation g of this layer's weights: the same seeded draw from_ticket repeats
        redraw = partial(draw_weight, module, name, seed, config.init, density)
        return IteRand(shape, density, scores, sample_seed, redraw=lambda g: redraw(generation=g),
                       period=config.rerand_period, prob=config.rerand_prob)
    if method == "gem-miner":
        return GemMiner(shape, density, scores, score_l2=config.score_l2)
    raise AssertionError(method)  # SupermaskConfig validated the name


def apply_supermask(model: nn.Module, config: SupermaskConfig, seed: int) -> nn.Module:
    """Seed ``model``'s weights with ``config.init``, freeze every parameter, and mask every Linear/Conv2d
    weight with a ``config.method`` parametrization whose ``scores`` are the only trainable parameters."""
    densities = layer_densities(model, config.density, config.distribution)
    init_weights(model, seed, config.init, densities)
    for p in model.parameters():
        p.requires_grad_(False)
    for name, module in prunable_layers(model):
        parametrize.register_parametrization(
            module, "weight", _parametrization(config, module, name, seed, densities[name]), unsafe=True)
    return model


def build(model: str, input_shape, num_classes: int, *, seed: int, width: float = 1.0,
          supermask: SupermaskConfig | None = None, init: str = DENSE_INIT, **model_kwargs) -> nn.Module:
    """A registry model, seeded from ``seed``; with ``supermask`` its weights are frozen and masked.

    The model remembers how it was built (``model.slth_spec``) so :func:`slth.supermask.to_ticket` can
    write a ticket that rebuilds it.
    """
    from ..models import build_model

    kwargs = {"input_shape": list(input_shape), "num_classes": int(num_classes), "width": float(width), **model_kwargs}
    net = build_model(model, tuple(input_shape), num_classes, width=width, **model_kwargs)
    if supermask is None:
        init_weights(net, seed, init)
    else:
        apply_supermask(net, supermask, seed)
    net.slth_spec = {"model": model, "model_kwargs": kwargs, "seed": int(seed),
                     "supermask": None if supermask is None else asdict(supermask),
                     "init": init if supermask is None else supermask.init}
    return net


def supermask_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module, Supermask]]:
    """(layer name, layer, its supermask) for every masked layer of ``model``."""
    for name, module in model.named_modules():
        # == parametrize.is_parametrized(module, "weight"), without nn.Module.__getattr__'s failed lookup
        # on every plain module (the trainer walks the layers twice per step)
        plist = module._modules.get("parametrizations")
        if plist is not None and "weight" in plist:
            for p in plist["weight"]:
                if isinstance(p, Supermask):
                    yield name, module, p


def regularization(model: nn.Module) -> torch.Tensor | float:
    return sum((p.regularization() for _, _, p in supermask_layers(model)
                if type(p).regularization is not Supermask.regularization), 0.0)


def after_step(model: nn.Module, step: int) -> None:
    for _, module, p in supermask_layers(model):
        if type(p).after_step is not Supermask.after_step:  # skip the no-op hook (most methods)
            p.after_step(step, module.parametrizations.weight.original)


def after_epoch(model: nn.Module, epoch: int, epochs: int) -> None:
    for _, _, p in supermask_layers(model):
        p.after_epoch(epoch, epochs)


def final_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Boolean final mask per parameter name of the materialised model (``<layer>.weight``)."""
    return {f"{name}.weight": p.final_mask() for name, _, p in supermask_layers(model)}


def mask_counts(model: nn.Module) -> tuple[int, int]:
    """(kept, total) over the masked weights; a dense model counts every Linear/Conv2d weight as kept."""
    masks = final_masks(model)
    if masks:
        return sum(int(m.sum()) for m in masks.values()), sum(m.numel() for m in masks.values())
    total = sum(m.weight.numel() for _, m in prunable_layers(model))
    return total, total
