"""The registries' names, importable without torch, so that ``slth train --help`` can list them and stay fast.

:data:`slth.models.MODELS`, :data:`slth.supermask.methods.METHODS` and :data:`slth.construction.methods.METHODS`
check at import that they hold exactly these names, in this order: a model or method added there must be named here
too.
"""

from __future__ import annotations

MODEL_NAMES = ("fc", "conv2", "conv4", "conv6", "conv8", "lenet5", "resnet20", "vit", "gpt")
# supermask methods ("dense": none)
METHOD_NAMES = ("edge-popup", "bernoulli", "biprop", "iterand", "gem-miner", "signed", "multicoated", "l0-gauss",
                "l0-hc")
# supermask variants (SupermaskConfig.variant): slth's own semantics, or each method as its reference code runs it
VARIANT_NAMES = ("slth", "reference")
CONSTRUCTION_METHOD_NAMES = ("pensia", "malach")  # construction methods (slth.construction.methods.METHODS)
# per-layer density distributions (slth.supermask.init.layer_densities): of the supermask and of a sparse source
DISTRIBUTION_NAMES = ("uniform", "erk", "balanced", "pyramidal")
# the random network a supermask searches (SupermaskConfig.source): every weight present, an Erdos-Renyi
# sparse one (Gadhikar et al. 2023), or one with some weights frozen pruned/locked (Otsuka et al. 2024)
SOURCE_NAMES = ("dense", "erdos-renyi", "partially-frozen")


def check_registry(what: str, registry, names: tuple[str, ...]) -> None:
    """Raise if ``registry``'s keys are not ``names`` (in order)."""
    if tuple(registry) != names:
        raise RuntimeError(f"the {what} registry holds {tuple(registry)} but slth._names lists {names}: "
                           "name a new entry in slth/_names.py too")
