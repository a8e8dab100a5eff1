"""Seeded weight initialisation and per-layer densities.

Every random draw comes from its own ``torch.Generator`` (:func:`slth.seeding.generator`) seeded from the run seed
and a key naming what is drawn (``"weight"``, layer name, generation), so a layer's frozen weights do not
depend on global RNG state, on the order of construction, or on any other layer.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..seeding import derive_seed, generator
from .core import kept_count

GAIN = math.sqrt(2.0)  # ReLU gain, as torch.nn.init.calculate_gain("relu")


def _kaiming_normal(shape, fan_in, density, gen):
    return torch.randn(shape, generator=gen) * (GAIN / math.sqrt(fan_in))


def _scaled_kaiming_normal(shape, fan_in, density, gen):
    return torch.randn(shape, generator=gen) * (GAIN / math.sqrt(fan_in * density))


def _signed_constant(shape, fan_in, density, gen):
    sign = torch.where(torch.randn(shape, generator=gen) >= 0, 1.0, -1.0)
    return sign * (GAIN / math.sqrt(fan_in))


def _scaled_signed_constant(shape, fan_in, density, gen):
    sign = torch.where(torch.randn(shape, generator=gen) >= 0, 1.0, -1.0)
    return sign * (GAIN / math.sqrt(fan_in * density))


# "scaled" variants divide fan_in by the layer's density (kept fraction), as hidden-networks' scale_fan
# does with its kept fraction, so that the pruned layer keeps the variance of a dense Kaiming layer.
INITS: dict[str, Callable[..., torch.Tensor]] = {
    "kaiming-normal": _kaiming_normal,
    "scaled-kaiming-normal": _scaled_kaiming_normal,
    "signed-constant": _signed_constant,
    "scaled-signed-constant": _scaled_signed_constant,
}


def check_init(init: str) -> None:
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; valid names: {', '.join(sorted(INITS))}")


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers whose ``weight`` a supermask prunes: every Linear and Conv2d, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def fan_in(module: nn.Module) -> int:
    shape = _weight_shape(module)
    return math.prod(shape[1:])


def _weight_shape(module: nn.Module) -> tuple[int, ...]:
    if isinstance(module, nn.Linear):
        return (module.out_features, module.in_features)
    return (module.out_channels, module.in_channels // module.groups, *module.kernel_size)


def draw_weight(module: nn.Module, name: str, seed: int, init: str, density: float = 1.0,
                generation: int = 0) -> torch.Tensor:
    """The frozen weight of layer ``name``: generation 0 at build, IteRand re-draws are 1, 2, ..."""
    check_init(init)
    gen = generator(seed, "weight", name, generation)
    return INITS[init](_weight_shape(module), fan_in(module), density, gen)


@torch.no_grad()
def init_weights(model: nn.Module, seed: int, init: str = "kaiming-normal",
                 densities: dict[str, float] | None = None) -> nn.Module:
    """Seed every parameter of ``model`` deterministically; refuses parameters it does not know how to seed."""
    check_init(init)
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            density = 1.0 if densities is None else densities[name]
            module.weight.copy_(draw_weight(module, name, seed, init, density))
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.modules.batchnorm._NormBase):
            module.reset_parameters()  # deterministic: weight 1, bias 0, running statistics reset
        elif any(True for _ in module.parameters(recurse=False)):
            raise TypeError(f"init_weights does not know how to seed {type(module).__name__} at {name!r}")
    return model


DISTRIBUTIONS = ("uniform", "erk")


def layer_densities(model: nn.Module, density: float, distribution: str = "uniform") -> dict[str, float]:
    """Per-layer density (kept fraction) for an overall ``density`` over all prunable weights.

    ``uniform``: every layer keeps ``density``. ``erk`` (Erdos-Renyi-Kernel, Evci et al. 2020): layer l
    keeps a fraction proportional to sum(shape_l) / prod(shape_l), scaled so the total kept count equals
    ``density`` times the total; layers that would exceed 1 are kept dense and the rest re-scaled.
    """
    kept_count(1, density)  # validates the range
    layers = prunable_layers(model)
    if distribution == "uniform":
        return {name: float(density) for name, _ in layers}
    if distribution != "erk":
        raise ValueError(f"unknown density distribution {distribution!r}; valid names: {', '.join(DISTRIBUTIONS)}")
    shapes = {name: _weight_shape(m) for name, m in layers}
    numel = {name: math.prod(s) for name, s in shapes.items()}
    raw = {name: sum(s) / math.prod(s) for name, s in shapes.items()}
    budget = density * sum(numel.values())
    dense: set[str] = set()
    while True:
        free = [n for n in shapes if n not in dense]
        remaining = budget - sum(numel[n] for n in dense)
        eps = remaining / sum(raw[n] * numel[n] for n in free)
        over = {n for n in free if eps * raw[n] > 1.0}
        if not over:
            break
        dense |= over
    return {n: (1.0 if n in dense else float(eps * raw[n])) for n in shapes}
