"""Sparse random sources: the random network a supermask searches, when not every weight is present.

``SupermaskConfig(source="erdos-renyi", source_density=q)`` searches the mask inside an Erdos-Renyi random
network (Gadhikar, Mukherjee & Burkholz, ICML 2023, arXiv 2210.02412): each layer has a uniformly random
set of exactly ``kept_count(n_l, q_l)`` present weights, q_l from ``source_distribution`` (uniform, erk,
balanced, pyramidal: :func:`slth.supermask.init.layer_densities`) with overall density q; the others are
frozen at zero. ``source="partially-frozen"`` (Otsuka et al. 2024, arXiv 2402.14029) also locks a random
``source_locked`` fraction of every layer's weights: always kept. The method's mask (any method of
:data:`slth.supermask.METHODS`) keeps every locked weight, no absent one, and its top-k of the free ones:
``density`` stays the kept fraction of the full layer, so it lies between source_locked and source_density.

The pattern is drawn from ``(seed, "source", layer)`` alone (:func:`slth.supermask.init.draw_source`), so a
ticket stores nothing for it: :func:`slth.supermask.from_ticket` draws it again and refuses a mask that keeps
an absent weight or drops a locked one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .core import kept_count
from .init import ABSENT, LOCKED, Target, draw_source, layer_densities, prunable_tensors, source_counts
from .methods import SupermaskConfig


def source_densities(model: nn.Module, config: SupermaskConfig, densities: dict[str, float]) -> dict[str, float]:
    """Per-layer source densities of ``config`` on ``model`` (empty for the dense source), after checking that
    every layer's mask (``densities``, the kept fraction of each layer) fits its source: no more weights than
    are present, no fewer than are locked. Raises ``ValueError`` naming the first layer that does not fit;
    changes nothing."""
    if config.source == "dense":
        return {}
    present = layer_densities(model, config.source_density, config.source_distribution)
    for t in prunable_tensors(model):
        n = math.prod(t.shape)
        k = kept_count(n, densities[t.key])
        have, locked = source_counts(n, present[t.key], config.source_locked)
        if not locked <= k <= have:
            raise ValueError(
                f"layer {t.key!r}: a mask of {k} of its {n} weights (density {densities[t.key]:.4g}, distribution "
                f"{config.distribution!r}) does not fit its {config.source} source of {have} present weights "
                f"(source density {present[t.key]:.4g}, distribution {config.source_distribution!r}), {locked} of "
                "them locked: choose a density between source_locked and source_density, or distributions whose "
                "layers agree")
    return present


def draw_sources(targets: list[Target], config: SupermaskConfig, seed: int,
                 present: dict[str, float]) -> dict[str, torch.Tensor]:
    """The source pattern of every target (:func:`slth.supermask.init.draw_source`), by key."""
    return {t.key: draw_source(t, seed, present[t.key], config.source_locked) for t in targets}


def check_mask(name: str, mask: torch.Tensor, pattern: torch.Tensor) -> str | None:
    """Why ``mask`` cannot be a mask over the source ``pattern`` (a kept absent weight, a dropped locked one),
    or None."""
    outside = int((mask & (pattern == ABSENT)).sum())
    if outside:
        return f"mask {name!r} keeps {outside} weights outside the source drawn from the seed"
    dropped = int((~mask & (pattern == LOCKED)).sum())
    if dropped:
        return f"mask {name!r} drops {dropped} locked weights of the source drawn from the seed"
    return None
