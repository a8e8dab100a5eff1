"""Learned tickets on disk: seed + how the model was built + final masks, in the slth ticket format.

The frozen weights are not stored: :func:`from_ticket` re-draws them from the seed (the same seeded
generators as at build time) and applies the masks, so the result is bit-identical to
``materialize(trained_model)``. For IteRand the generation of each *kept* weight (which re-draw it holds)
is stored as ``extras["generation/<name>"]`` (int16, in mask order). A method whose mask has more than two
levels (``Method.levels``: signed supermasks' -1 / +1, multicoated supermasks' coat count 1..K) stores the
kept set in ``masks`` as every method does and the level of each *kept* weight as ``extras["level/<name>"]``
(int8, nonzero, in mask order); the rebuilt weight is ``W * level``. Buffers that training changes
(BatchNorm running statistics) as ``extras["buffer/<name>"]``.

A ticket of a registry model (:func:`slth.supermask.build`) names the model and its arguments, so
``from_ticket(path)`` rebuilds it. A ticket of the user's own model (:func:`slth.supermask.apply_supermask`)
names the model's class and lists its parameter and buffer names and shapes, and which parameters share
one tensor (``config["ties"]``, present only for a model with ties); ``from_ticket(path,
model=fresh_instance)`` rebuilds it into a fresh instance after checking that they match. A tied tensor
has one mask, stored under its first name; the rebuilt instance keeps the tie.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import ticketfile
from .apply import _supermask_places, _supermasks
from .init import (
    ABSENT,
    draw_weight,
    init_fractions,
    init_weights,
    layer_densities,
    prunable_tensors,
    tied_tensors,
)
from .methods import METHODS, SupermaskConfig, unread_settings_dropped
from .source import check_mask, draw_sources, source_densities

KIND = "learned-supermask"


def _plain_layout(model: nn.Module) -> dict[str, list[int]]:
    """Name -> shape of every parameter and buffer of ``model`` as a plain (unparametrized) module."""
    layout = {}
    for name, module in model.named_modules():
        if ".parametrizations." in f".{name}.":
            continue
        prefix = f"{name}." if name else ""
        plist = module._modules.get("parametrizations")
        if plist is not None:
            for tensor, chain in plist._modules.items():
                layout[prefix + tensor] = list(chain.original.shape)
        for kind in (module._parameters, module._buffers):
            for tensor, value in kind.items():
                if value is not None:
                    layout[prefix + tensor] = list(value.shape)
    return layout


def _check_layout(expected: dict[str, list[int]], model: nn.Module, what: str) -> None:
    """Raise a :class:`ticketfile.TicketFileError` naming the first difference between the two layouts."""
    got = _plain_layout(model)
    for name, shape in got.items():  # in the model's order
        if name not in expected:
            raise ticketfile.TicketFileError(f"{type(model).__name__} has {name!r} {tuple(shape)}, which the "
                                             f"ticket ({what}) lacks: a ticket rebuilds into the architecture "
                                             "it was learned on")
        if list(expected[name]) != list(shape):
            raise ticketfile.TicketFileError(f"{name!r} has shape {tuple(expected[name])} in the ticket ({what}), "
                                             f"{tuple(shape)} in {type(model).__name__}")
    for name, shape in expected.items():
        if name not in got:
            raise ticketfile.TicketFileError(f"the ticket ({what}) has {name!r} {tuple(shape)}, which "
                                             f"{type(model).__name__} lacks")


def _check_ties(expected: dict[str, str], model: nn.Module, what: str) -> None:
    """Raise a :class:`ticketfile.TicketFileError` if ``model`` shares tensors other than ``expected`` says
    (a ticket of a tied model rebuilds into a tied instance, an untied one into an untied one)."""
    got = tied_tensors(model)
    if got != expected:
        def say(ties):
            return ", ".join(f"{a} = {b}" for a, b in ties.items()) or "none"

        raise ticketfile.TicketFileError(f"{type(model).__name__} ties {say(got)}; the {what} ties {say(expected)}: a "
                                         "ticket rebuilds into the architecture it was learned on")


@torch.no_grad()
def materialize(model: nn.Module, into: nn.Module | None = None) -> nn.Module:
    """A plain model whose weights are ``model``'s effective weights under the final masks: a fresh
    registry model, or ``into`` (a fresh instance of the user's class, for a model of
    :func:`slth.supermask.apply_supermask`).

    Its parameters are frozen, as :func:`from_ticket`'s. Built afresh rather than by ``copy.deepcopy`` +
    ``remove_parametrizations``: copies of a parametrized module share its generated class, and removing
    the parametrization from one breaks the other.
    """
    spec = getattr(model, "slth_spec", None)
    if not spec:
        raise ValueError("materialize needs a model of slth.supermask.build or apply_supermask (it has no slth_spec)")
    if into is None:
        if spec.get("model") is None:
            raise ValueError(f"this is a user's model ({spec.get('class')}): pass materialize(model, into=a fresh "
                             "instance of its class)")
        plain = _plain_model(spec)
    else:
        _check_layout(_plain_layout(model), into, "the supermasked model")
        _check_ties(tied_tensors(model), into, "supermasked model")
        plain = into
    was_training = model.training
    model.eval()
    try:
        effective = {f"{name}.{tensor}": getattr(module, tensor)
                     for name, module, tensor, _ in _supermask_places(model)}
        source = model.state_dict()
        plain.load_state_dict({k: effective[k] if k in effective else source[k] for k in plain.state_dict()})
    finally:
        model.train(was_training)
    plain.slth_spec = dict(spec)
    return plain.requires_grad_(False).eval()


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
    """The ticket of a supermasked model (:func:`slth.supermask.build` or ``apply_supermask``); written to
    ``path`` if given."""
    spec = getattr(model, "slth_spec", None)
    if not spec or not spec.get("supermask"):
        raise ValueError("to_ticket needs a supermask model of slth.supermask.build or apply_supermask "
                         "(it has no slth_spec)")
    masks, extras = {}, {}
    for name, _module, tensor, p in _supermasks(model):
        levels = p.final_levels()  # a multi-level mask (signed, multicoated): the levels of the kept weights
        mask = p.final_mask() if levels is None else levels != 0
        masks[f"{name}.{tensor}"] = mask.cpu().numpy()
        if levels is not None:
            extras[f"level/{name}.{tensor}"] = levels[mask].cpu().numpy().astype(np.int8)
        generation = getattr(p, "generation", None)
        if generation is not None and bool((generation[mask] != 0).any()):
            extras[f"generation/{name}.{tensor}"] = generation[mask].cpu().numpy().astype(np.int16)
    for name, buffer in _model_buffers(model):
        extras[f"buffer/{name}"] = buffer.detach().cpu().numpy()
    if spec.get("model") is None:  # the user's own model: its class and layout, checked when rebuilt
        config = {"kind": KIND, "model": None, "class": spec["class"], "layout": _plain_layout(model),
                  "init": spec["init"], "supermask": spec["supermask"]}
        ties = tied_tensors(model)
        if ties:  # only then: the tickets of untied models stay as they were
            config["ties"] = ties
    else:
        config = {"kind": KIND, "model": spec["model"], "model_kwargs": spec["model_kwargs"],
                  "init": spec["init"], "supermask": spec["supermask"]}
    ticket = ticketfile.TicketFile(seed=int(spec["seed"]), config=config, masks=masks, extras=extras)
    if path is not None:
        ticketfile.save(path, ticket)
    return ticket


@torch.no_grad()
def from_ticket(source: str | os.PathLike | ticketfile.TicketFile, model: nn.Module | None = None) -> nn.Module:
    """Rebuild the pruned network of a learned ticket: seeded frozen weights times the stored masks.

    ``model``: a fresh instance of the class the ticket was learned on (needed for a ticket of the user's
    own model, optional for a registry model); its parameter and buffer names and shapes must match the
    ticket's, else a :class:`slth.ticketfile.TicketFileError` names the first difference. It is rebuilt in
    place and returned in eval mode with its parameters frozen (``requires_grad_(True)`` to fine-tune).
    """
    ticket = source if isinstance(source, ticketfile.TicketFile) else ticketfile.load(Path(source))
    config = ticket.config
    if config.get("kind") != KIND:
        raise ticketfile.TicketFileError(f"not a learned supermask ticket (kind {config.get('kind')!r})")
    sm = SupermaskConfig(**unread_settings_dropped(config["supermask"].get("method"), config["supermask"]))
    if model is None:
        if config.get("model") is None:
            raise ValueError(f"this ticket was learned on a user's model ({config.get('class')}): rebuild it with "
                             "from_ticket(path, model=<a fresh instance of that class>)")
        model = _plain_model(config)
    else:
        if any(True for _ in _supermasks(model)):
            raise ValueError("from_ticket needs a fresh instance of the model, not one with supermasks")
        what = config.get("class") or f"registry model {config['model']!r}"
        _check_layout(config["layout"] if config.get("model") is None else _plain_layout(_plain_model(config)),
                      model, what)
        _check_ties(config.get("ties", {}), model, f"ticket ({what})")
    densities = layer_densities(model, sm.density, sm.distribution)
    present = source_densities(model, sm, densities)
    fractions = init_fractions(densities, METHODS[sm.method].init_variant(sm.variant))
    targets = {t.name: t for t in prunable_tensors(model)}
    targets_by_key = {t.key: t for t in targets.values()}
    if set(ticket.masks) != set(targets):
        raise ticketfile.TicketFileError(f"ticket masks {sorted(ticket.masks)} do not match the model's layers "
                                         f"{sorted(targets)}")
    # a sparse source: its pattern is drawn again from the seed; a mask outside it is a damaged ticket
    sources = draw_sources(list(targets.values()), sm, ticket.seed, present) if present else {}
    for key, mask_np in ticket.masks.items():
        pattern = sources.get(targets[key].key)
        if pattern is not None and tuple(mask_np.shape) == tuple(pattern.shape):
            why = check_mask(key, torch.from_numpy(np.asarray(mask_np, dtype=bool)), pattern)
            if why:
                raise ticketfile.TicketFileError(f"corrupted ticket: {why}")
    init_weights(model, ticket.seed, sm.init, fractions)
    for key, pattern in sources.items():  # the absent weights are zero, as in the supermasked model
        targets_by_key[key].raw().masked_fill_(pattern == ABSENT, 0.0)
    method = METHODS[sm.method]
    final_weight = method.final_weight
    for key, mask_np in ticket.masks.items():
        target = targets[key]
        raw = target.raw()
        if tuple(mask_np.shape) != tuple(raw.shape):
            raise ticketfile.TicketFileError(f"mask {key!r} has shape {mask_np.shape}, the layer {tuple(raw.shape)}")
        mask = torch.from_numpy(mask_np.copy())
        weight = raw.detach().clone()
        generations = ticket.extras.get(f"generation/{key}")
        if generations is not None:
            kept = weight[mask]
            for g in np.unique(generations):
                if g:
                    redraw = draw_weight(target, ticket.seed, sm.init, fractions[target.key], generation=int(g))
                    sel = torch.from_numpy(generations == g)
                    kept[sel] = redraw[mask][sel]
            weight[mask] = kept
        # the same arithmetic as the parametrization in eval mode, hence bit-identical
        count = int(mask.sum())
        if method.final_count is not None:  # biprop's alpha divisor (its reference variant: int(density * n))
            count = method.final_count(sm.variant, mask.numel(), densities[target.key], count)
        raw.copy_(final_weight(weight, _mask_factor(ticket, key, mask, count, method.levels, weight.dtype), count))
    buffers = dict(model.named_buffers())
    for key, value in ticket.extras.items():
        kind, _, name = key.partition("/")
        if kind == "buffer":
            if name not in buffers or value.size != buffers[name].numel():
                raise ticketfile.TicketFileError(f"ticket buffer {name!r} does not fit the model")
            buffers[name].copy_(torch.from_numpy(np.array(value)).reshape(buffers[name].shape))
    model.requires_grad_(False)  # frozen, as the supermasked model's weights (and torch takes the same
    # inference fast paths -- nn.TransformerEncoder's -- in both, so their outputs agree bit for bit)
    if config.get("model") is None:
        model.slth_spec = {"model": None, "class": config["class"], "seed": ticket.seed,
                           "supermask": config["supermask"], "init": sm.init}
    else:
        model.slth_spec = {"model": config["model"], "model_kwargs": config["model_kwargs"], "seed": ticket.seed,
                           "supermask": config["supermask"], "init": sm.init}
    return model.eval()


def _mask_factor(ticket: ticketfile.TicketFile, key: str, mask: torch.Tensor, kept: int, levels: bool,
                 dtype: torch.dtype) -> torch.Tensor:
    """The float mask ``final_weight`` multiplies by: the 0/1 mask, or for a method with levels (``levels``)
    the stored level of each kept weight (extras ``level/<key>``, int8, nonzero, in mask order)."""
    stored = ticket.extras.get(f"level/{key}")
    method = ticket.config["supermask"]["method"]
    if not levels:
        if stored is not None:
            raise ticketfile.TicketFileError(f"ticket holds levels for {key!r}, but a {method} mask is kept / "
                                             "pruned only: the ticket is damaged")
        return mask.to(dtype)
    if stored is None:
        raise ticketfile.TicketFileError(f"a {method} ticket needs the level of each kept weight of {key!r} "
                                         f"(extras 'level/{key}'), which this ticket lacks")
    stored = np.asarray(stored)
    if stored.dtype != np.int8 or stored.shape != (kept,) or not bool((stored != 0).all()):
        raise ticketfile.TicketFileError(f"ticket levels of {key!r} must be {kept} nonzero int8 values (one per "
                                         f"kept weight), got {stored.size} of {stored.dtype}")
    factor = torch.zeros(mask.shape, dtype=dtype)
    factor[mask] = torch.from_numpy(stored.astype(np.int64)).to(dtype)
    return factor


load_ticket = from_ticket
