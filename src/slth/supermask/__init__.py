"""Learning by pruning: train only masks over frozen random weights.

``build(model, input_shape, num_classes, seed=..., supermask=SupermaskConfig(method, density, ...))``
gives a registry model whose weights are frozen seeded draws, each masked by a
``torch.nn.utils.parametrize`` parametrization (see :mod:`slth.supermask.methods`). Only the ``scores``
are trainable. ``apply_supermask(model, config, seed)`` does the same to the user's own module (weights
in Linear, Conv1d, Conv2d, Embedding, MultiheadAttention, transformers' Conv1D; ``supermask_report`` says
what it masked and what it froze). ``to_ticket`` / ``from_ticket`` write and rebuild the learned ticket (seed + masks).

``density`` is always the kept fraction.

Names are imported lazily, so that ``slth --help`` does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "apply": ("FrozenTensor", "MaskedTensor", "SupermaskReport", "after_epoch", "after_step", "apply_supermask",
              "build", "final_masks", "mask_counts", "regularization", "supermask_layers", "supermask_report"),
    "core": ("GetSubnet", "kept_count", "topk_mask"),
    "init": ("INITS", "MASKABLE", "derive_seed", "freeze_plan", "init_weights", "is_library_norm",
             "is_transposed_linear", "layer_densities", "prunable_layers", "prunable_tensors", "tied_tensors"),
    "methods": ("METHODS", "Method", "SupermaskConfig"),
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
