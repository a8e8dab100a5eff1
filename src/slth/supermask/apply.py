"""Putting supermasks on a model: seeded build, parametrization, the trainer's hooks, the report.

:func:`apply_supermask` takes any ``nn.Module`` whose weights sit in Linear, Conv1d, Conv2d, Embedding and
MultiheadAttention layers (:data:`slth.supermask.init.MASKABLE`); :func:`supermask_report` says which
tensors it masked and at what value it froze every other one (:func:`slth.supermask.init.freeze_plan`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import partial
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..seeding import derive_seed, generator
from .init import (MASKABLE, draw_weight, freeze_plan, init_weights, layer_densities, prunable_tensors, raw_tensor)
from .methods import METHODS, Supermask, SupermaskConfig

DENSE_INIT = "kaiming-normal"


def _target(modules: dict[str, nn.Module], key: str) -> tuple[nn.Module, str]:
    """(module, tensor name) of ``key``: a module name (its ``weight``) or ``<module>.<tensor>``."""
    if key in modules:
        return modules[key], "weight"
    parent, _, tensor = key.rpartition(".")
    if parent in modules and tensor and isinstance(getattr(modules[parent], tensor, None), torch.Tensor):
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
    targets = {key: _target(modules, key) for key in densities}  # every key checked before anything changes
    for key, (module, tensor) in targets.items():
        if parametrize.is_parametrized(module, tensor):
            raise ValueError(f"{key!r} is already parametrized (a model takes one supermask)")
    for p in model.parameters():
        p.requires_grad_(False)
    for key, density in densities.items():
        module, tensor = targets[key]
        shape = getattr(module, tensor).shape
        fan = (fan_in or {}).get(key, math.prod(shape[1:]))
        u = torch.rand(shape, generator=generator(seed, "scores", key))
        scores = method.scores(u, fan, density, divide=divide_scores)
        p = method.make(shape, density, scores, config=config, sample_seed=derive_seed(seed, "sample", key),
                        redraw=None if redraw is None else partial(redraw, key))
        parametrize.register_parametrization(module, tensor, p, unsafe=True)
    return model


def apply_supermask(model: nn.Module, config: SupermaskConfig, seed: int) -> nn.Module:
    """Put a ``config.method`` supermask on ``model`` (in place; returned): its scores become its only
    trainable parameters, everything else is frozen at a value ``seed`` alone reproduces.

    ``model`` is any module whose weights sit in Linear, Conv1d, Conv2d, Embedding or MultiheadAttention
    layers: each such weight (MultiheadAttention: its input projection; ``out_proj`` is a Linear) is
    drawn from ``config.init`` and masked. Biases are frozen at 0, normalisation layers at weight 1 and
    bias 0, free parameters of the model's own modules (a positional embedding, a class token) at a
    seeded N(0, 1) draw; other layers holding parameters are refused with a ``TypeError`` naming them
    (:func:`slth.supermask.init.freeze_plan`). Buffers are left as constructed; a ticket stores them.
    :func:`supermask_report` lists what was masked and what frozen; :func:`slth.supermask.to_ticket`
    writes the learned ticket, :func:`slth.supermask.from_ticket` rebuilds it into a fresh instance.
    """
    if any(True for _ in _supermasks(model)):
        raise ValueError("this model already has supermasks")
    freeze_plan(model)  # refuses what it cannot place, before anything changes
    targets = {t.key: t for t in prunable_tensors(model)}
    if not targets:
        raise ValueError(f"{type(model).__name__} has no weights to mask: supermasks go on the weights of "
                         f"{', '.join(t.__name__ for t in MASKABLE)} layers")
    densities = layer_densities(model, config.density, config.distribution)
    init_weights(model, seed, config.init, densities)

    def redraw(key: str, generation: int) -> torch.Tensor:  # the same seeded draw from_ticket repeats
        return draw_weight(targets[key], seed, config.init, densities[key], generation=generation)

    mask_tensors(model, config, densities, seed, redraw=redraw)
    model.slth_spec = {"model": None, "class": f"{type(model).__module__}.{type(model).__qualname__}",
                       "seed": int(seed), "supermask": asdict(config), "init": config.init}
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


def _supermasks(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, Supermask]]:
    """(module name, module, tensor name, its supermask) for every masked tensor of ``model``."""
    for name, module in model.named_modules():
        # == parametrize.is_parametrized(module), without nn.Module.__getattr__'s failed lookup on every
        # plain module (the trainer walks the layers twice per step)
        plist = module._modules.get("parametrizations")
        if plist is not None:
            for tensor, chain in plist._modules.items():
                for p in chain:
                    if isinstance(p, Supermask):
                        yield name, module, tensor, p


def _supermask_hooks(model: nn.Module) -> Iterator[tuple[nn.Module, str, Supermask]]:
    """(module, tensor name, supermask) in :func:`_supermasks`' order, without building module names: the
    trainer walks the layers twice per step, and named_modules' prefix strings cost ~0.1 ms a step on a
    three-layer MLP (a tenth of the supermask step's overhead)."""
    stack, seen = [model], set()
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        plist = module._modules.get("parametrizations")
        if plist is not None:
            for tensor, chain in plist._modules.items():
                for p in chain:
                    if isinstance(p, Supermask):
                        yield module, tensor, p
        stack.extend(child for child in reversed(module._modules.values()) if child is not None)


def _key(name: str, tensor: str) -> str:
    if tensor == "weight":
        return name
    return f"{name}.{tensor}" if name else tensor


def supermask_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module, Supermask]]:
    """(key, layer, its supermask) for every masked tensor of ``model``; the key is the layer's name for
    its ``weight``, ``<layer>.<tensor>`` otherwise (MultiheadAttention's ``in_proj_weight``)."""
    for name, module, tensor, p in _supermasks(model):
        yield _key(name, tensor), module, p


def regularization(model: nn.Module) -> torch.Tensor | float:
    return sum((p.regularization() for _, _, p in _supermask_hooks(model)
                if type(p).regularization is not Supermask.regularization), 0.0)


def after_step(model: nn.Module, step: int) -> None:
    for module, tensor, p in _supermask_hooks(model):
        if type(p).after_step is not Supermask.after_step:  # skip the no-op hook (most methods)
            p.after_step(step, module.parametrizations[tensor].original)


def after_epoch(model: nn.Module, epoch: int, epochs: int) -> None:
    for _, _, _, p in _supermasks(model):
        p.after_epoch(epoch, epochs)


def final_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Boolean final mask per parameter name of the materialised model (``<layer>.weight``, ...)."""
    return {f"{name}.{tensor}": p.final_mask() for name, _, tensor, p in _supermasks(model)}


def mask_counts(model: nn.Module) -> tuple[int, int]:
    """(kept, total) over the masked weights; a dense model counts every maskable weight as kept."""
    masks = final_masks(model)
    if masks:
        return sum(int(m.sum()) for m in masks.values()), sum(m.numel() for m in masks.values())
    total = sum(math.prod(t.shape) for t in prunable_tensors(model))
    return total, total


@dataclass(frozen=True)
class MaskedTensor:
    name: str  # parameter name in the plain model's state_dict
    shape: tuple[int, ...]
    density: float  # kept fraction
    kept: int


@dataclass(frozen=True)
class FrozenTensor:
    name: str
    shape: tuple[int, ...]
    value: str  # "zero", "one", "normal" (seeded N(0, 1)): see slth.supermask.init.freeze_plan


@dataclass(frozen=True)
class SupermaskReport:
    """What :func:`apply_supermask` did to a model: the masked tensors (trained through their scores), the
    parameters it froze and at what, and the buffers it left as they were (a ticket stores those)."""

    method: str
    masked: tuple[MaskedTensor, ...]
    frozen: tuple[FrozenTensor, ...]
    buffers: tuple[str, ...]

    def __str__(self) -> str:
        values = {"zero": "frozen at 0", "one": "frozen at 1", "normal": "frozen at a seeded N(0, 1) draw"}
        kept, total = sum(m.kept for m in self.masked), sum(math.prod(m.shape) for m in self.masked)
        lines = [f"{self.method} supermask: {len(self.masked)} masked tensors, {kept:,} of {total:,} weights kept"]
        lines += [f"  masked  {m.name} {tuple(m.shape)} density {m.density:.4g}" for m in self.masked]
        lines += [f"  dense   {f.name} {tuple(f.shape)} {values[f.value]}" for f in self.frozen]
        lines += [f"  buffer  {b} (as constructed; stored in the ticket)" for b in self.buffers]
        return "\n".join(lines)


def supermask_report(model: nn.Module) -> SupermaskReport:
    """:class:`SupermaskReport` of a supermasked ``model``."""
    masks = list(_supermasks(model))
    if not masks:
        raise ValueError("this model has no supermasks (apply_supermask puts them on)")
    spec = getattr(model, "slth_spec", None) or {}
    method = (spec.get("supermask") or {}).get("method") or type(masks[0][3]).__name__
    masked = tuple(MaskedTensor(f"{n}.{t}", tuple(p.scores.shape), p.density, p.k) for n, _, t, p in masks)
    frozen = tuple(FrozenTensor(name, tuple(raw_tensor(module, tensor).shape), value)
                   for name, module, tensor, value in freeze_plan(model) if value != "masked")
    buffers = tuple(name for name, _ in model.named_buffers() if ".parametrizations." not in f".{name}")
    return SupermaskReport(method, masked, frozen, buffers)
