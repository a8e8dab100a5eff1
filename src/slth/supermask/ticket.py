"""Learned tickets on disk: seed + how the model was built + final masks, in the slth ticket format.

The frozen weights are not stored: :func:`from_ticket` re-draws them from the seed (the same seeded
generators as at build time) and applies the masks, so the result is bit-identical to
``materialize(trained_model)``. For IteRand the generation of each *kept* weight (which re-draw it holds)
is stored as ``extras["generation/<name>"]`` (int16, in mask order); buffers that training changes
(BatchNorm running statistics) as ``extras["buffer/<name>"]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import ticketfile
from .apply import supermask_layers
from .init import draw_weight, init_weights, layer_densities, prunable_layers
from .methods import METHODS, SupermaskConfig

KIND = "learned-supermask"


@torch.no_grad()
def materialize(model: nn.Module) -> nn.Module:
    """A plain registry model whose weights are ``model``'s effective weights under the final masks.

    Built afresh rather than by ``copy.deepcopy`` + ``remove_parametrizations``: copies of a parametrized
    module share its generated class, and removing the parametrization from one breaks the other.
    """
    spec = getattr(model, "slth_spec", None)
    if not spec:
        raise ValueError("materialize needs a model built by slth.supermask.build (it has no slth_spec)")
    plain = _plain_model(spec)
    was_training = model.training
    model.eval()
    try:
        effective = {f"{name}.weight": module.weight for name, module, _ in supermask_layers(model)}
        source = model.state_dict()
        plain.load_state_dict({k: effective[k] if k in effective else source[k] for k in plain.state_dict()})
    finally:
        model.train(was_training)
    plain.slth_spec = dict(spec)
    return plain.eval()


def _plain_model(spec: dict) -> nn.Module:
    from ..models import build_model

    kwargs = dict(spec["model_kwargs"])
    input_shape, num_classes = tuple(kwargs.pop("input_shape")), kwargs.pop("num_classes")
    return build_model(spec["model"], input_shape, num_classes, **kwargs)


def _model_buffers(model: nn.Module):
    """The model's own buffers (BatchNorm statistics), not those of the supermask parametrizations."""
    for name, buffer in model.named_buffers():
        if ".parametrizations." not in f".{name}":
            yield name, buffer


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
    for name, buffer in _model_buffers(model):
        extras[f"buffer/{name}"] = buffer.detach().cpu().numpy()
    config = {"kind": KIND, "model": spec["model"], "model_kwargs": spec["model_kwargs"],
              "init": spec["init"], "supermask": spec["supermask"]}
    ticket = ticketfile.TicketFile(seed=int(spec["seed"]), config=config, masks=masks, extras=extras)
    if path is not None:
        ticketfile.save(path, ticket)
    return ticket


@torch.no_grad()
def from_ticket(source: str | os.PathLike | ticketfile.TicketFile) -> nn.Module:
    """Rebuild the pruned network of a learned ticket: seeded frozen weights times the stored masks."""
    ticket = source if isinstance(source, ticketfile.TicketFile) else ticketfile.load(Path(source))
    config = ticket.config
    if config.get("kind") != KIND:
        raise ticketfile.TicketFileError(f"not a learned supermask ticket (kind {config.get('kind')!r})")
    sm = SupermaskConfig(**config["supermask"])
    model = _plain_model(config)
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
        module.weight.copy_(METHODS[sm.method].final_weight(weight, maskf, int(mask.sum())))
    buffers = dict(model.named_buffers())
    for key, value in ticket.extras.items():
        kind, _, name = key.partition("/")
        if kind == "buffer":
            if name not in buffers or value.size != buffers[name].numel():
                raise ticketfile.TicketFileError(f"ticket buffer {name!r} does not fit the model")
            buffers[name].copy_(torch.from_numpy(np.array(value)).reshape(buffers[name].shape))
    model.slth_spec = {"model": config["model"], "model_kwargs": config["model_kwargs"], "seed": ticket.seed,
                       "supermask": config["supermask"], "init": sm.init}
    return model.eval()


load_ticket = from_ticket
