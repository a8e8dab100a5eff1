"""Learned tickets on disk: seed + how the model was built + final masks, in the slth ticket format.

The frozen weights are not stored: :func:`from_ticket` re-draws them from the seed (the same seeded
generators as at build time) and applies the masks, so the result is bit-identical to
``materialize(trained_model)``. For IteRand the generation of each *kept* weight (which re-draw it holds)
is stored as ``extras["generation/<name>"]`` (int16, in mask order).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from .. import ticketfile
from .apply import supermask_layers
from .init import draw_weight, init_weights, layer_densities, prunable_layers
from .methods import SupermaskConfig, binarized_weight

KIND = "learned-supermask"


@torch.no_grad()
def materialize(model: nn.Module) -> nn.Module:
    """A plain copy of ``model`` whose weights are the effective (masked) weights of the final masks."""
    plain = copy.deepcopy(model).eval()
    for _, module, _ in list(supermask_layers(plain)):
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return plain


def to_ticket(model: nn.Module, path: str | os.PathLike | None = None) -> ticketfile.TicketFile:
    """The ticket of a supermasked model built by :func:`slth.supermask.build`; written to ``path`` if given."""
    spec = getattr(model, "slth_spec", None)
    if not spec or not spec.get("supermask"):
        raise ValueError("to_ticket needs a supermask model built by slth.supermask.build (it has no slth_spec)")
    masks, extras = {}, {}
    for name, module, p in supermask_layers(model):
        mask = p.final_mask()
        masks[f"{name}.weight"] = mask.cpu().numpy()
        generation = getattr(p, "generation", None)
        if generation is not None and bool((generation[mask] != 0).any()):
            extras[f"generation/{name}.weight"] = generation[mask].cpu().numpy().astype(np.int16)
    config = {"kind": KIND, "model": spec["model"], "model_kwargs": spec["model_kwargs"],
              "init": spec["init"], "supermask": spec["supermask"]}
    ticket = ticketfile.TicketFile(seed=int(spec["seed"]), config=config, masks=masks, extras=extras)
    if path is not None:
        ticketfile.save(path, ticket)
    return ticket


@torch.no_grad()
def from_ticket(source: str | os.PathLike | ticketfile.TicketFile) -> nn.Module:
    """Rebuild the pruned network of a learned ticket: seeded frozen weights times the stored masks."""
    from ..models import build_model

    ticket = source if isinstance(source, ticketfile.TicketFile) else ticketfile.load(Path(source))
    config = ticket.config
    if config.get("kind") != KIND:
        raise ticketfile.TicketFileError(f"not a learned supermask ticket (kind {config.get('kind')!r})")
    sm = SupermaskConfig(**config["supermask"])
    kwargs = dict(config["model_kwargs"])
    input_shape, num_classes = tuple(kwargs.pop("input_shape")), kwargs.pop("num_classes")
    model = build_model(config["model"], input_shape, num_classes, **kwargs)
    densities = layer_densities(model, sm.density, sm.distribution)
    init_weights(model, ticket.seed, sm.init, densities)
    layers = dict(prunable_layers(model))
    expected = {f"{name}.weight" for name in layers}
    if set(ticket.masks) != expected:
        raise ticketfile.TicketFileError(f"ticket masks {sorted(ticket.masks)} do not match the model's layers {sorted(expected)}")
    for key, mask_np in ticket.masks.items():
        name = key[: -len(".weight")]
        module = layers[name]
        if tuple(mask_np.shape) != tuple(module.weight.shape):
            raise ticketfile.TicketFileError(f"mask {key!r} has shape {mask_np.shape}, the layer {tuple(module.weight.shape)}")
        mask = torch.from_numpy(mask_np.copy())
        weight = module.weight.detach().clone()
        generations = ticket.extras.get(f"generation/{key}")
        if generations is not None:
            kept = weight[mask]
            for g in np.unique(generations):
                if g:
                    redraw = draw_weight(module, name, ticket.seed, sm.init, densities[name], generation=int(g))
                    sel = torch.from_numpy(generations == g)
                    kept[sel] = redraw[mask][sel]
            weight[mask] = kept
        maskf = mask.to(weight.dtype)
        # the same arithmetic as the parametrization in eval mode, hence bit-identical
        module.weight.copy_(binarized_weight(weight, maskf, int(mask.sum())) if sm.method == "biprop" else weight * maskf)
    model.slth_spec = {"model": config["model"], "model_kwargs": config["model_kwargs"], "seed": ticket.seed,
                       "supermask": config["supermask"], "init": sm.init}
    return model.eval()


load_ticket = from_ticket
