"""Learning by pruning: train only masks over frozen random weights.

``build(model, input_shape, num_classes, seed=..., supermask=SupermaskConfig(method, density, ...))``
gives a registry model whose Linear/Conv2d weights are frozen seeded draws, each masked by a
``torch.nn.utils.parametrize`` parametrization (see :mod:`slth.supermask.methods`). Only the ``scores``
are trainable. ``to_ticket`` / ``from_ticket`` write and rebuild the learned ticket (seed + masks).

``density`` is always the kept fraction.

Names are imported lazily, so that ``slth --help`` does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "apply": ("after_epoch", "after_step", "apply_supermask", "build", "final_masks", "mask_counts",
              "regularization", "supermask_layers"),
    "core": ("GetSubnet", "kept_count", "topk_mask"),
    "init": ("INITS", "derive_seed", "init_weights", "layer_densities", "prunable_layers"),
    "methods": ("METHODS", "SupermaskConfig"),
    "ticket": ("from_ticket", "load_ticket", "materialize", "to_ticket"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
