"""Putting supermasks on a model: seeded build, parametrization, the trainer's hooks, the report.

:func:`apply_supermask` takes any ``nn.Module`` whose weights sit in Linear, Conv1d, Conv2d, Embedding and
MultiheadAttention layers (:data:`slth.supermask.init.MASKABLE`) or transformers' Conv1D;
:func:`supermask_report` says which tensors it masked and at what value it froze every other one
(:func:`slth.supermask.init.freeze_plan`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..seeding import derive_seed, generator
from .init import (
    ABSENT,
    MASKABLE_NAMES,
    _own_modules,
    check_variant_init,
    draw_weight,
    freeze_plan,
    init_fractions,
    init_weights,
    is_norm,
    layer_densities,
    prunable_tensors,
    raw_tensor,
    tensor_fan_in,
    tied_tensors,
)
from .methods import METHODS, Supermask, SupermaskConfig
from .source import draw_sources, source_densities

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
                 sources: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Freeze every parameter of ``model`` and mask the tensor each key of ``densities`` names (a module
    name for its ``weight``) with ``config.method``'s parametrization at that density, leaving the
    weights as they are. Its scores are drawn from ``(seed, "scores", key)`` as :data:`METHODS` says;
    sampled masks from ``(seed, "sample", key)``. ``redraw(key, generation)`` gives re-drawn weights
    (IteRand); ``fan_in`` overrides the fan of a key's score scale (default:
    :func:`slth.supermask.init.tensor_fan_in`, the product of the tensor's trailing dimensions). A masked
    tensor that other places share (a tied output layer) gets the same parametrization there: one set of
    scores, one mask, and every place computes the same effective tensor. ``sources`` (by key) are sparse
    source patterns the masks stay inside (:meth:`slth.supermask.methods.Supermask.set_source`).
    ``config.density``, ``init`` and
    ``distribution`` are not read here."""
    method = METHODS[config.method]
    if method.redraws and redraw is None:
        raise ValueError(f"{config.method} re-draws pruned weights: it needs redraw(name, generation)")
    modules = dict(model.named_modules())
    targets = {key: _target(modules, key) for key in densities}  # every key checked before anything changes
    for key, (module, tensor) in targets.items():
        if parametrize.is_parametrized(module, tensor):
            raise ValueError(f"{key!r} is already parametrized (a model takes one supermask)")
    places: dict[int, list[tuple[nn.Module, str]]] = {}  # tensor -> every (module, name) holding it
    for _, m in _own_modules(model):
        for t, param in m._parameters.items():
            if param is not None:
                places.setdefault(id(param), []).append((m, t))
    for p in model.parameters():
        p.requires_grad_(False)
    for key, density in densities.items():
        module, tensor = targets[key]
        raw = getattr(module, tensor)
        shape = raw.shape
        fan = (fan_in or {}).get(key, tensor_fan_in(module, tensor, shape))
        u = torch.rand(shape, generator=generator(seed, "scores", key))
        scores = method.score_init(config.variant)(u, fan, density)
        p = method.make(shape, density, scores, config=config, sample_seed=derive_seed(seed, "sample", key),
                        redraw=None if redraw is None else partial(redraw, key))
        if sources:
            p.set_source(sources[key])
        parametrize.register_parametrization(module, tensor, p, unsafe=True)
        for other, name in places.get(id(raw), ()):  # the tensor's other places: the same parametrization
            if other is not module or name != tensor:
                parametrize.register_parametrization(other, name, p, unsafe=True)
    return model


def apply_supermask(model: nn.Module, config: SupermaskConfig, seed: int) -> nn.Module:
    """Put a ``config.method`` supermask on ``model`` (in place; returned): its scores become its only
    trainable parameters, everything else is frozen at a value ``seed`` alone reproduces.

    ``model`` is any module whose weights sit in Linear, Conv1d, Conv2d, Embedding or MultiheadAttention
    layers or transformers' Conv1D: each such weight (MultiheadAttention: its input projection;
    ``out_proj`` is a Linear) is drawn from ``config.init`` and masked. Biases are frozen at 0,
    normalisation layers (torch's, and other libraries' such as ``LlamaRMSNorm``:
    :func:`slth.supermask.init.is_library_norm`) at weight 1 and bias 0, free parameters of the model's
    own modules (a positional embedding, a class token) at a seeded N(0, 1) draw; other layers holding
    parameters are refused with a ``TypeError`` naming them (:func:`slth.supermask.init.freeze_plan`). A
    tensor shared by several layers (GPT-2's output layer tied to its token embedding) is masked once and
    stays shared (:func:`slth.supermask.init.tied_tensors`). Buffers are left as constructed; a ticket
    stores them.
    :func:`supermask_report` lists what was masked and what frozen; :func:`slth.supermask.to_ticket`
    writes the learned ticket, :func:`slth.supermask.from_ticket` rebuilds it into a fresh instance.
    """
    if any(True for _ in _supermasks(model)):
        raise ValueError("this model already has supermasks")
    freeze_plan(model)  # refuses what it cannot place, before anything changes
    targets = {t.key: t for t in prunable_tensors(model)}
    if not targets:
        raise ValueError(f"{type(model).__name__} has no weights to mask: supermasks go on the weights of "
                         f"{MASKABLE_NAMES} layers")
    densities = layer_densities(model, config.density, config.distribution)
    variant = METHODS[config.method].init_variant(config.variant)  # how the scaled inits scale the fan
    check_variant_init(config.init, variant, densities)
    present = source_densities(model, config, densities)  # refuses a mask that does not fit the source
    fractions = init_fractions(densities, variant)  # what the scaled inits scale the fan by
    init_weights(model, seed, config.init, fractions)
    sources = draw_sources(list(targets.values()), config, seed, present) if present else None
    with torch.no_grad():
        for key, pattern in (sources or {}).items():  # a sparse source: its absent weights are zero
            targets[key].raw().masked_fill_(pattern == ABSENT, 0.0)

    def redraw(key: str, generation: int) -> torch.Tensor:  # the same seeded draw from_ticket repeats
        return draw_weight(targets[key], seed, config.init, fractions[key], generation=generation)

    mask_tensors(model, config, densities, seed, redraw=redraw, sources=sources)
    model.slth_spec = {"model": None, "class": f"{type(model).__module__}.{type(model).__qualname__}",
                       "seed": int(seed), "supermask": config.record(), "init": config.init}
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
                     "supermask": None if supermask is None else supermask.record(),
                     "init": init if supermask is None else supermask.init}
    return net


def _supermask_places(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, Supermask]]:
    """(module name, module, tensor name, its supermask) for every place of a masked tensor of ``model``: a
    tied tensor's supermask at each of its places."""
    for name, module in model.named_modules():
        # == parametrize.is_parametrized(module), without nn.Module.__getattr__'s failed lookup on every
        # plain module (the trainer walks the layers twice per step)
        plist = module._modules.get("parametrizations")
        if plist is not None:
            for tensor, chain in plist._modules.items():
                for p in chain:
                    if isinstance(p, Supermask):
                        yield name, module, tensor, p


def _supermasks(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, Supermask]]:
    """(module name, module, tensor name, its supermask) for every masked tensor of ``model``, once: a tied
    tensor at its first place only."""
    seen = set()
    for name, module, tensor, p in _supermask_places(model):
        if id(p) not in seen:
            seen.add(id(p))
            yield name, module, tensor, p


def _supermask_hooks(model: nn.Module) -> list[tuple[nn.Module, str, Supermask]]:
    """(module, tensor name, supermask) in :func:`_supermasks`' order, without building module names: the
    trainer walks the layers twice per step (:func:`regularization`, :func:`after_step`). A list built by one
    loop over the modules' child dicts, not descending into the ``parametrizations`` containers (they hold the
    parametrizations, not layers): 4.5 us on FC where a generator over every module took 14 us, 26 against
    99 us on the ViT -- per step, for every method."""
    found: list[tuple[nn.Module, str, Supermask]] = []
    masks: set[int] = set()
    seen: set[int] = set()
    stack = [model]
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        children = module._modules
        if not children:
            continue
        plist = children.get("parametrizations")
        if plist is not None:
            for tensor, chain in plist._modules.items():
                for p in chain._modules.values():
                    if isinstance(p, Supermask) and id(p) not in masks:  # a tied tensor's: once
                        masks.add(id(p))
                        found.append((module, tensor, p))
        kids = [child for child in children.values() if child is not None and child is not plist]
        kids.reverse()  # popped in order: the modules' own order, depth first (as named_modules)
        stack += kids
    return found


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
    """The sum of the layers' regularisers (Gem-Miner's, the relaxed gates' L0 penalty; 0.0 where none acts),
    to add to the loss. The terms that are 0.0 are left out and the sum starts from the first tensor: no
    graph nodes for nothing (the same value and gradients as summing from 0.0)."""
    total: torch.Tensor | float = 0.0
    for _, _, p in _supermask_hooks(model):
        if type(p).regularization is not Supermask.regularization:
            term = p.regularization()
            if isinstance(term, float) and term == 0.0:
                continue
            total = term if isinstance(total, float) and total == 0.0 else total + term
    return total


def after_step(model: nn.Module, step: int) -> None:
    for module, tensor, p in _supermask_hooks(model):
        if type(p).after_step is not Supermask.after_step:  # skip the no-op hook (most methods)
            p.after_step(step, module.parametrizations[tensor].original)


def after_epoch(model: nn.Module, epoch: int, epochs: int) -> None:
    """Each supermask class's :meth:`Supermask.after_epoch_all` over the model's layers of that class (in
    model order): per layer, or across layers where a method acts globally."""
    layers: dict[type, list[Supermask]] = {}
    for _, _, _, p in _supermasks(model):
        layers.setdefault(type(p), []).append(p)
    for kind, group in layers.items():
        kind.after_epoch_all(group, epoch, epochs)


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
    role: str = ""  # "bias", "norm" (a normalisation layer's weight or bias), "free" (a free parameter)


@dataclass(frozen=True)
class SupermaskReport:
    """What :func:`apply_supermask` did to a model: the masked tensors (trained through their scores), the
    parameters it froze and at what, and the buffers it left as they were (a ticket stores those)."""

    method: str
    masked: tuple[MaskedTensor, ...]
    frozen: tuple[FrozenTensor, ...]
    buffers: tuple[str, ...]
    tied: tuple[tuple[str, str], ...] = ()  # (name, the name it is tied to): one tensor, masked or frozen once

    def __str__(self) -> str:
        values = {"zero": "frozen at 0", "one": "frozen at 1", "normal": "frozen at a seeded N(0, 1) draw"}
        kept, total = sum(m.kept for m in self.masked), sum(math.prod(m.shape) for m in self.masked)
        lines = [f"{self.method} supermask: {len(self.masked)} masked tensors, {kept:,} of {total:,} weights kept"]
        lines += [f"  masked  {m.name} {tuple(m.shape)} density {m.density:.4g}" for m in self.masked]
        lines += [f"  dense   {f.name} {tuple(f.shape)} {values[f.value]}{f' ({f.role})' if f.role else ''}"
                  for f in self.frozen]
        lines += [f"  tied    {name} is {first} (one tensor: one mask, one set of scores)" for name, first in self.tied]
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
    frozen = tuple(FrozenTensor(name, tuple(raw_tensor(module, tensor).shape), value, _role(module, value))
                   for name, module, tensor, value in freeze_plan(model) if value != "masked")
    buffers = tuple(name for name, _ in model.named_buffers() if ".parametrizations." not in f".{name}")
    return SupermaskReport(method, masked, frozen, buffers, tuple(tied_tensors(model).items()))


def _role(module: nn.Module, value: str) -> str:
    if value == "normal":
        return "free"
    return "norm" if is_norm(module) else "bias"
