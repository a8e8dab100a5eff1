"""Seeded weight initialisation and per-layer densities.

Every random draw comes from its own ``torch.Generator`` (:func:`slth.seeding.generator`) seeded from the run seed
and a key naming what is drawn (``"weight"``, layer name, generation), so a layer's frozen weights do not
depend on global RNG state, on the order of construction, or on any other layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .._names import DISTRIBUTION_NAMES, VARIANT_NAMES
from ..seeding import derive_seed as derive_seed  # re-exported: slth.supermask.derive_seed
from ..seeding import generator
from .core import kept_count

GAIN = math.sqrt(2.0)  # ReLU gain, as torch.nn.init.calculate_gain("relu")


def _kaiming_normal(shape, fan_in, density, gen):
    return torch.randn(shape, generator=gen) * (GAIN / math.sqrt(fan_in))


def _scaled_kaiming_normal(shape, fan_in, density, gen):
    return torch.randn(shape, generator=gen) * (GAIN / math.sqrt(fan_in * density))


def _signs(shape, gen) -> torch.Tensor:
    """+-1.0 with the sign of a seeded N(0, 1) draw (0 counts as +). Arithmetic on the comparison, not
    ``torch.where(..., 1.0, -1.0)``: the same values, 3.6x faster (IteRand re-draws a layer every few
    hundred steps)."""
    return (torch.randn(shape, generator=gen) >= 0).to(torch.get_default_dtype()).mul_(2.0).sub_(1.0)


def _signed_constant(shape, fan_in, density, gen):
    return _signs(shape, gen).mul_(GAIN / math.sqrt(fan_in))


def _scaled_signed_constant(shape, fan_in, density, gen):
    return _signs(shape, gen).mul_(GAIN / math.sqrt(fan_in * density))


# "scaled" variants multiply fan_in by the layer's density (kept fraction), so that the pruned layer keeps
# the variance of a dense Kaiming layer. hidden-networks' scale_fan (utils/builder.py) multiplies the fan by
# (1 - prune_rate), and its prune_rate is the KEPT fraction (GetSubnet keeps n - int((1 - prune_rate) n)):
# it scales by the pruned fraction. The two agree at density 0.5 only; variant="reference" draws the scaled
# inits as hidden-networks does (:func:`init_fractions`).
INITS: dict[str, Callable[..., torch.Tensor]] = {
    "kaiming-normal": _kaiming_normal,
    "scaled-kaiming-normal": _scaled_kaiming_normal,
    "signed-constant": _signed_constant,
    "scaled-signed-constant": _scaled_signed_constant,
}


def check_init(init: str) -> None:
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; valid names: {', '.join(sorted(INITS))}")


VARIANTS = VARIANT_NAMES


def init_fractions(densities: dict[str, float], variant: str) -> dict[str, float]:
    """The fraction a scaled init multiplies each tensor's fan_in by: its density, or in the reference variant
    1 - density (hidden-networks' ``fan * (1 - prune_rate)``, its prune_rate the kept fraction)."""
    if variant == "reference":
        return {key: 1.0 - d for key, d in densities.items()}
    return dict(densities)


def check_variant_init(init: str, variant: str, densities: dict[str, float]) -> None:
    """Refuse a scaled init at density 1 in the reference variant (hidden-networks' fan * (1 - 1) = 0)."""
    if variant == "reference" and init.startswith("scaled-"):
        full = [key or "the model" for key, d in densities.items() if not d < 1.0]
        if full:
            raise ValueError(f"variant 'reference' draws {init} with fan_in * (1 - density), which is 0 at density 1 "
                             f"({', '.join(full)}): choose an unscaled init or a density below 1")


MASKABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding, nn.MultiheadAttention)
"""The module types whose weights a supermask masks (``MultiheadAttention``: ``in_proj_weight``, or
``q/k/v_proj_weight`` when the key and value sizes differ; its ``out_proj`` is a Linear). transformers'
``Conv1D`` is masked too (:func:`is_transposed_linear`)."""

MASKABLE_NAMES = ", ".join(t.__name__ for t in MASKABLE) + " or transformers' Conv1D"

NORMS = tuple(t for t in (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, getattr(nn, "RMSNorm", None))
              if t is not None)
"""Normalisation layers: their affine weight and bias are frozen at 1 and 0 (``reset_parameters``). Those
of other libraries and of the user's own code are frozen the same way (:func:`is_library_norm`)."""


def is_transposed_linear(module: nn.Module) -> bool:
    """Whether ``module`` is transformers' ``Conv1D`` (GPT-2, GPT, ...): ``y = x @ weight + bias`` with
    ``weight`` of shape (nx, nf), a Linear that stores its weight transposed, so its fan-in is
    ``weight.shape[0]``. Recognised without importing transformers: a class named ``Conv1D`` (torch's own
    is ``Conv1d``) with integer attributes ``nx`` and ``nf`` and a 2-D ``weight`` of shape (nx, nf)."""
    if not any(c.__name__ == "Conv1D" for c in type(module).__mro__):
        return False
    nx, nf = getattr(module, "nx", None), getattr(module, "nf", None)
    try:
        weight = raw_tensor(module, "weight")
    except AttributeError:
        return False
    return (isinstance(nx, int) and isinstance(nf, int) and isinstance(weight, torch.Tensor)
            and tuple(weight.shape) == (nx, nf))


def _elementwise(t: torch.Tensor) -> bool:
    """One value per feature: at most one dimension longer than 1 ((C,), (1, C, 1, 1), ...)."""
    return t.dim() >= 1 and sum(d > 1 for d in t.shape) <= 1


def is_library_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a normalisation layer defined outside torch (transformers' ``LlamaRMSNorm``,
    ``T5LayerNorm``, your own ``RMSNorm``), frozen like torch's own at weight 1 and bias 0. The rule: a
    class outside ``torch`` whose name contains ``Norm``, whose own parameters are a ``weight`` and/or a
    ``bias``, each elementwise (:func:`_elementwise`: one value per feature, never a matrix) and of one
    shape, and none of whose submodules holds a parameter."""
    cls = type(module)
    if cls.__module__.split(".")[0] == "torch" or "norm" not in cls.__name__.lower():
        return False
    params = {k: v for k, v in module._parameters.items() if v is not None}
    if not params or set(params) - {"weight", "bias"} or len({tuple(v.shape) for v in params.values()}) != 1:
        return False
    if not all(_elementwise(v) for v in params.values()):
        return False
    return not any(True for child in module.children() for _ in child.parameters())


def is_norm(module: nn.Module) -> bool:
    """A normalisation layer, torch's (:data:`NORMS`) or another library's (:func:`is_library_norm`)."""
    return isinstance(module, NORMS) or is_library_norm(module)


@dataclass(frozen=True, eq=False)
class Target:
    """One masked tensor: ``tensor`` (``"weight"``, ``"in_proj_weight"``, ...) of the module ``module_name``.

    ``key`` names it in densities and seeds: the module's name for a ``weight``, else
    ``<module>.<tensor>``; ``name`` is its parameter name in the model's ``state_dict`` (and a ticket).
    """

    module_name: str
    tensor: str
    module: nn.Module
    shape: tuple[int, ...]

    @property
    def key(self) -> str:
        if self.tensor == "weight":
            return self.module_name
        return f"{self.module_name}.{self.tensor}" if self.module_name else self.tensor

    @property
    def name(self) -> str:
        return f"{self.module_name}.{self.tensor}"

    @property
    def fan_in(self) -> int:
        return tensor_fan_in(self.module, self.tensor, self.shape)

    def raw(self) -> torch.Tensor:
        """The stored tensor (under a parametrization: its ``original``)."""
        return raw_tensor(self.module, self.tensor)


def tensor_fan_in(module: nn.Module, tensor: str, shape) -> int:
    """Fan-in of a masked tensor, for its init and its score scale: the product of its trailing dimensions
    (Linear, Conv, Embedding), ``shape[0]`` for transformers' transposed ``Conv1D``."""
    if tensor == "weight" and is_transposed_linear(module):
        return int(shape[0])
    return math.prod(shape[1:])


def raw_tensor(module: nn.Module, tensor: str) -> torch.Tensor:
    plist = module._modules.get("parametrizations")
    if plist is not None and tensor in plist:
        return plist[tensor].original
    return getattr(module, tensor)


def _maskable_tensors(module: nn.Module) -> tuple[str, ...]:
    if isinstance(module, nn.MultiheadAttention):
        if module._qkv_same_embed_dim:
            return ("in_proj_weight",)
        return ("q_proj_weight", "k_proj_weight", "v_proj_weight")
    if isinstance(module, MASKABLE) or is_transposed_linear(module):
        return ("weight",)
    return ()


def prunable_tensors(model: nn.Module) -> list[Target]:
    """The tensors a supermask masks, in module order: the weight of every Linear, Conv1d, Conv2d,
    Embedding and transformers' Conv1D, and MultiheadAttention's input projection (:data:`MASKABLE`). A
    tensor that several layers share (a tied output layer) is listed once, at its first layer
    (:func:`tied_tensors`)."""
    targets, seen = [], set()
    for name, module in _own_modules(model):
        for tensor in _maskable_tensors(module):
            raw = raw_tensor(module, tensor)
            if id(raw) not in seen:
                seen.add(id(raw))
                targets.append(Target(name, tensor, module, tuple(raw.shape)))
    return targets


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of the layers whose ``weight`` a supermask masks (:func:`prunable_tensors` also lists
    MultiheadAttention's input projections)."""
    return [(t.key, t.module) for t in prunable_tensors(model) if t.tensor == "weight"]


def _own_modules(model: nn.Module):
    """``model.named_modules()`` without the modules of parametrizations (a supermask's own tensors)."""
    for name, module in model.named_modules():
        if ".parametrizations." in f".{name}.":
            continue
        yield name, module


def draw_weight(target: Target, seed: int, init: str, density: float = 1.0, generation: int = 0) -> torch.Tensor:
    """The frozen value of ``target``: generation 0 at build, IteRand re-draws are 1, 2, ..."""
    check_init(init)
    gen = generator(seed, "weight", target.key, generation)
    w = INITS[init](target.shape, target.fan_in, density, gen)
    if isinstance(target.module, nn.Embedding) and target.module.padding_idx is not None:
        w[target.module.padding_idx] = 0.0  # as nn.Embedding: the padding row is zero
    return w


FREE_STD = 1.0  # a free parameter (positional embedding, class token) ~ N(0, 1), as nn.Embedding's default


def _frozen_value(name: str, module: nn.Module, tensor: str) -> str:
    """How :func:`freeze_plan` freezes parameter ``tensor`` of ``module`` (not a masked one), or a
    ``TypeError`` saying why it cannot."""
    if isinstance(module, MASKABLE) or is_transposed_linear(module):
        if tensor.endswith("bias") or tensor in ("bias_k", "bias_v"):
            return "zero"
        raise TypeError(f"{type(module).__name__} at {name!r} has a parameter {tensor!r} slth does not know")
    if is_norm(module):
        return "one" if tensor == "weight" else "zero"
    if type(module).__module__.split(".")[0] == "torch":
        raise TypeError(f"{type(module).__name__} at {name!r} holds parameters ({', '.join(module._parameters)}) "
                        f"that slth can neither mask nor freeze: supermasks go on {MASKABLE_NAMES} weights; "
                        "normalisation layers (BatchNorm, InstanceNorm, LayerNorm, GroupNorm, RMSNorm) are frozen "
                        "at weight 1, bias 0")
    if tensor == "weight" or tensor.endswith("_weight"):
        shape = tuple(module._parameters[tensor].shape)
        raise TypeError(f"{type(module).__name__} at {name!r} holds a weight {tensor!r} {shape} that slth cannot "
                        f"mask: put it in one of {MASKABLE_NAMES}. A normalisation layer -- a class named *Norm* "
                        "whose only parameters are an elementwise weight and bias (one value per feature) and "
                        "whose submodules hold none -- is frozen at weight 1, bias 0; other free parameters, such "
                        "as a positional embedding, at a seeded N(0, 1) draw")
    return "normal"


def _tensor_places(model: nn.Module):
    """(name, module, tensor, value) for every place that holds a parameter of ``model``, in module order
    (masked tensors first within a module): a tensor that several places share is listed at each."""
    for name, module in _own_modules(model):
        maskable = _maskable_tensors(module)
        for tensor in maskable:
            yield f"{name}.{tensor}", module, tensor, "masked"
        for tensor, param in module._parameters.items():
            if param is not None and tensor not in maskable:
                yield (f"{name}.{tensor}" if name else tensor), module, tensor, _frozen_value(name, module, tensor)


_VERBS = {"masked": "mask", "zero": "freeze at 0", "one": "freeze at 1", "normal": "freeze at a seeded N(0, 1) draw"}


def _places(model: nn.Module) -> tuple[list[tuple[str, nn.Module, str, str]], dict[str, str]]:
    """(:func:`freeze_plan`, :func:`tied_tensors`) in one walk; refuses ties it cannot keep."""
    plan, ties, first = [], {}, {}
    for full, module, tensor, value in _tensor_places(model):
        raw = raw_tensor(module, tensor)
        fan = tensor_fan_in(module, tensor, raw.shape) if value == "masked" else None
        if id(raw) in first:
            other, other_value, other_fan = first[id(raw)]
            if (value, fan) != (other_value, other_fan):
                why = (f"fan-in {fan} there, {other_fan} at the first" if value == other_value
                       else f"slth would {_VERBS[value]} the one and {_VERBS[other_value]} the other")
                raise TypeError(f"{full!r} is the same tensor as {other!r} ({why}): slth keeps a tie only between "
                                "places it treats alike (masked weights of one fan-in, biases, norm weights); "
                                "untie them")
            ties[full] = other
            continue
        first[id(raw)] = (full, value, fan)
        plan.append((full, module, tensor, value))
    return plan, ties


def freeze_plan(model: nn.Module) -> list[tuple[str, nn.Module, str, str]]:
    """How :func:`init_weights` sets every parameter of ``model``: (parameter name, module, tensor, value)
    with value one of ``"masked"`` (a :func:`prunable_tensors` entry: drawn from ``init``), ``"zero"``
    (biases), ``"one"`` (normalisation weights: :func:`is_norm`), ``"normal"`` (free parameters of the
    user's own modules, such as a positional embedding or class token: seeded N(0, 1), keyed by the
    parameter's name).

    A tensor that several places share (tied parameters, such as GPT-2's output layer and token embedding)
    is listed once, at its first place in module order: it is set once and stays shared
    (:func:`tied_tensors` lists the other places). Raises ``TypeError`` for a parameter it cannot place:
    one of a torch.nn module other than :data:`MASKABLE` and :data:`NORMS` (an LSTM, Conv3d, ...), a
    ``weight`` of another module that is no normalisation layer (:func:`is_library_norm`), or a tie
    between places treated differently (a masked weight shared with a free parameter).
    """
    return _places(model)[0]


def tied_tensors(model: nn.Module) -> dict[str, str]:
    """``{name: first name}`` for every parameter place of ``model`` that holds the same tensor as an
    earlier one (GPT-2: ``{"lm_head.weight": "transformer.wte.weight"}``); names as in ``state_dict``."""
    return _places(model)[1]


@torch.no_grad()
def init_weights(model: nn.Module, seed: int, init: str = "kaiming-normal",
                 densities: dict[str, float] | None = None) -> nn.Module:
    """Set every parameter of ``model`` from ``seed`` alone, as :func:`freeze_plan` says: maskable weights
    from ``init`` (at their density of ``densities``, for the scaled inits), biases 0, normalisation layers
    weight 1 and bias 0 (running statistics reset), free parameters seeded N(0, 1). Torch's global RNG is
    not used. Buffers other than normalisation statistics are left as constructed."""
    check_init(init)
    plan = freeze_plan(model)
    targets = {t.name: t for t in prunable_tensors(model)}
    for module in {id(m): m for _, m, _, v in plan if isinstance(m, NORMS)}.values():
        module.reset_parameters()  # deterministic: weight 1, bias 0, running statistics reset
    for full, module, tensor, value in plan:
        target = raw_tensor(module, tensor)
        if value == "masked":
            t = targets[full]
            density = 1.0 if densities is None else densities[t.key]
            target.copy_(draw_weight(t, seed, init, density))
        elif value == "zero":
            target.zero_()
        elif value == "one":
            target.fill_(1.0)
        else:
            target.copy_(torch.randn(target.shape, generator=generator(seed, "free", full)) * FREE_STD)
    return model


DISTRIBUTIONS = DISTRIBUTION_NAMES


def layer_densities(model: nn.Module, density: float, distribution: str = "uniform") -> dict[str, float]:
    """Per-tensor density (kept fraction), keyed by :attr:`Target.key`, for an overall ``density`` over all
    prunable weights (:func:`prunable_tensors`).

    ``uniform``: every layer keeps ``density``. ``erk`` (Erdos-Renyi-Kernel, Evci et al. 2020): layer l
    keeps a fraction proportional to sum(shape_l) / prod(shape_l), scaled so the total kept count equals
    ``density`` times the total; layers that would exceed 1 are kept dense and the rest re-scaled.
    ``balanced`` (Gadhikar et al. 2023, arXiv 2210.02412): every layer keeps the same number of weights,
    ``density * N / L``; a layer smaller than that is kept dense and its unused share goes to the others
    (so the total is ``density * N`` here too). ``pyramidal`` (the same paper): layer l (1-based, in module
    order) keeps ``r ** l``, r in (0, 1] solving ``sum_l n_l r ** l = density * N`` (bisection).
    """
    kept_count(1, density)  # validates the range
    targets = prunable_tensors(model)
    if distribution == "uniform":
        return {t.key: float(density) for t in targets}
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown density distribution {distribution!r}; valid names: {', '.join(DISTRIBUTIONS)}")
    shapes = {t.key: t.shape for t in targets}
    numel = {name: math.prod(s) for name, s in shapes.items()}
    budget = density * sum(numel.values())
    if distribution == "pyramidal":
        return _pyramidal(list(numel.values()), list(numel), budget)
    # erk: kept_l = eps * sum(shape_l); balanced: kept_l = eps (the same count per layer)
    raw = {name: (sum(s) / math.prod(s) if distribution == "erk" else 1.0 / math.prod(s))
           for name, s in shapes.items()}
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


def _pyramidal(sizes: list[int], names: list[str], budget: float) -> dict[str, float]:
    """Layer l keeps r ** l (l = 1, 2, ...), r in (0, 1] with sum_l sizes_l r ** l = budget."""
    def kept(r: float) -> float:
        return sum(n * r ** (i + 1) for i, n in enumerate(sizes))

    lo, hi = 0.0, 1.0  # kept(0) = 0 < budget <= kept(1) = N
    for _ in range(200):  # to float precision
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if kept(mid) < budget else (lo, mid)
    return {name: float(hi ** (i + 1)) for i, name in enumerate(names)}


ABSENT, FREE, LOCKED = 0, 1, 2  # a source pattern's entries (draw_source)


def source_counts(numel: int, density: float, locked: float) -> tuple[int, int]:
    """(present, locked) weight counts of a layer of ``numel`` weights at source ``density`` with a ``locked``
    fraction frozen as kept: ``kept_count(numel, density)`` present, of them round-half-up ``locked * numel``
    locked (at most the present count)."""
    present = kept_count(numel, density)
    return present, min(present, math.floor(numel * locked + 0.5))


def draw_source(target: Target, seed: int, density: float, locked: float = 0.0) -> torch.Tensor:
    """A sparse source's pattern of ``target`` (int8 of its shape: :data:`ABSENT`, :data:`FREE` or
    :data:`LOCKED`), drawn from ``(seed, "source", key)`` alone: a uniformly random set of exactly
    :func:`source_counts` present weights (an Erdos-Renyi G(n, M) graph: every set of that size equally
    likely), the first ``locked`` of them in the draw's order locked. One ``torch.randperm`` on a seeded CPU
    generator; the same seed gives the same bits."""
    n = math.prod(target.shape)
    present, n_locked = source_counts(n, density, locked)
    order = torch.randperm(n, generator=generator(seed, "source", target.key))
    pattern = torch.zeros(n, dtype=torch.int8)
    pattern[order[:present]] = FREE
    pattern[order[:n_locked]] = LOCKED
    return pattern.view(target.shape)
