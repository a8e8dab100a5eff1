"""Putting supermasks on a model: seeded build, parametrization, the trainer's hooks."""

from __future__ import annotations

import math
from dataclasses import asdict
from functools import partial
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..seeding import derive_seed, generator
from .init import draw_weight, init_weights, layer_densities, prunable_layers
from .methods import METHODS, Supermask, SupermaskConfig

DENSE_INIT = "kaiming-normal"


def _target(modules: dict[str, nn.Module], key: str) -> tuple[nn.Module, str]:
    """(module, tensor name) of ``key``: a module name (its ``weight``) or ``<module>.<tensor>``."""
    if key in modules:
        return modules[key], "weight"
    parent, _, tensor = key.rpartition(".")
    if parent in modules and tensor:
        return modules[parent], tensor
    raise KeyError(f"{key!r} names neither a module nor a module's tensor")


def mask_tensors(model: nn.Module, config: SupermaskConfig, densities: dict[str, float], seed: int, *,
                 redraw: Callable[[str, int], torch.Tensor] | None = None, fan_in: dict[str, int] | None = None,
                 divide_scores: bool = False) -> nn.Module:
    """Freeze every parameter of ``model`` and mask the tensor each key of ``densities`` names (a module
    name for its ``weight``) with ``config.method``'s parametrization at that density, leaving the
    weights as they are. Its scores are drawn from ``(seed, "scores", key)`` as :data:`METHODS` says;
    sampled masks from ``(seed, "sample", key)``. ``redraw(key, generation)`` gives re-drawn weights
    (IteRand); ``fan_in`` overrides the fan of a key's score scale (default: the product of the tensor's
    trailing dimensions); ``divide_scores`` see :func:`slth.supermask.methods.uniform_scores`.
    ``config.density``, ``init`` and ``distribution`` are not read here."""
    method = METHODS[config.method]
    if method.redraws and redraw is None:
        raise ValueError(f"{config.method} re-draws pruned weights: it needs redraw(name, generation)")
    modules = dict(model.named_modules())
    for p in model.parameters():
        p.requires_grad_(False)
    for key, density in densities.items():
        module, tensor = _target(modules, key)
        shape = getattr(module, tensor).shape
        fan = (fan_in or {}).get(key, math.prod(shape[1:]))
        u = torch.rand(shape, generator=generator(seed, "scores", key))
        scores = method.scores(u, fan, density, divide=divide_scores)
        p = method.make(shape, density, scores, config=config, sample_seed=derive_seed(seed, "sample", key),
                        redraw=None if redraw is None else partial(redraw, key))
        parametrize.register_parametrization(module, tensor, p, unsafe=True)
    return model


def apply_supermask(model: nn.Module, config: SupermaskConfig, seed: int) -> nn.Module:
    """Seed ``model``'s weights with ``config.init``, freeze every parameter, and mask every Linear/Conv2d
    weight with a ``config.method`` parametrization whose ``scores`` are the only trainable parameters."""
    densities = layer_densities(model, config.density, config.distribution)
    init_weights(model, seed, config.init, densities)
    modules = dict(model.named_modules())

    def redraw(name: str, generation: int) -> torch.Tensor:  # the same seeded draw from_ticket repeats
        return draw_weight(modules[name], name, seed, config.init, densities[name], generation=generation)

    return mask_tensors(model, config, densities, seed, redraw=redraw)


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
