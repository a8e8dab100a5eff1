"""Learning by pruning: train only masks over frozen random weights.

``build(model, input_shape, num_classes, seed=..., supermask=SupermaskConfig(method, density, ...))``
gives a registry model whose Linear/Conv2d weights are frozen seeded draws, each masked by a
``torch.nn.utils.parametrize`` parametrization (see :mod:`slth.supermask.methods`). Only the ``scores``
are trainable. ``to_ticket`` / ``from_ticket`` write and rebuild the learned ticket (seed + masks).

``density`` is always the kept fraction.
"""

from __future__ import annotations

from .apply import (after_epoch, after_step, apply_supermask, build, final_masks, mask_counts, regularization,
                    supermask_layers)
from .core import GetSubnet, kept_count, topk_mask
from .init import INITS, derive_seed, init_weights, layer_densities, prunable_layers
from .methods import METHODS, SupermaskConfig
from .ticket import from_ticket, load_ticket, materialize, to_ticket

__all__ = [
    "METHODS", "INITS", "SupermaskConfig", "GetSubnet", "build", "apply_supermask", "supermask_layers",
    "after_step", "after_epoch", "regularization", "final_masks", "mask_counts", "kept_count", "topk_mask",
    "derive_seed", "init_weights", "layer_densities", "prunable_layers", "to_ticket", "from_ticket",
    "load_ticket", "materialize",
]
