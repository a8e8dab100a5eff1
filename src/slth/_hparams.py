"""Training and construction settings, defined once and importable without torch (so ``slth --help`` stays fast).

:class:`MethodSettings` holds the supermask methods' own settings (IteRand's re-randomisation, Gem-Miner's
regulariser, the signed supermask's threshold, the multicoated coat schedule, the variant every method
follows); :class:`slth.supermask.SupermaskConfig` takes its defaults and checks from it.
:class:`TrainSettings` declares the fields of :class:`slth.train.TrainConfig` (its subclass, which adds the
checks and the per-method defaults), the method's fields taken from MethodSettings. ``slth train``'s
options are generated from TrainSettings' fields (help texts in their metadata; ``flag`` names a repeatable
KEY=VALUE option). Likewise :class:`ConstructSettings` and :class:`ExecutionSettings` declare the fields of
:class:`slth.construction.config.ConstructConfig` (what to build) and :class:`~slth.construction.config.Execution`
(how to run it), which add the checks; ``slth construct`` and ``slth.construct``'s keywords take their defaults
from them (``cli=False``: a field the command writes by hand).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from ._names import (
    CONSTRUCTION_METHOD_NAMES,
    DISTRIBUTION_NAMES,
    METHOD_NAMES,
    MODEL_NAMES,
    SOURCE_NAMES,
    VARIANT_NAMES,
)


@dataclass(frozen=True)
class MethodSettings:
    rerand_period: int = field(default=300, metadata={"help": "iterand: steps between re-randomisations"})
    rerand_prob: float = field(default=0.1, metadata={"help": "iterand: probability a pruned weight is re-drawn"})
    score_l2: float = field(default=1e-4, metadata={"help": "gem-miner: lambda of the score regulariser"})
    # signed, variant "reference" only: tau = sign_threshold * max|m_init| per layer, fixed after init
    # (kosnil/signed_supermasks' tanh_th: 0.4 in its sample config, 0.75 its code's default)
    sign_threshold: float = field(default=0.4, metadata={
        "help": "signed, variant reference: the fixed threshold tau as a fraction of the layer's max |initial "
                "score| (the kept fraction then comes out of training)"})
    # multicoated: the inner coats' kept fractions as fractions of the outermost coat's (= density); the
    # default is Okoshi et al.'s sparsities [0.7, 0.9212, 0.9685] (densities 0.3, 0.0788, 0.0315) relative to 0.3
    coats: tuple[float, ...] = field(default=(0.2627, 0.105), metadata={
        "help": "multicoated: the inner coats' kept fractions relative to the outermost coat's (density), "
                "decreasing, each in (0, 1), e.g. 0.2627,0.105 (empty: one coat)"})
    gate_l0: float = field(default=3e-4, metadata={
        "help": "l0-gauss, l0-hc: lambda of the L0 penalty lambda * sum P(gate > 0)"})
    gate_sigma: float = field(default=0.5, metadata={"help": "l0-gauss: standard deviation of the gates' noise"})
    variant: str = field(default="slth", metadata={
        "help": " | ".join(VARIANT_NAMES) + ": slth's semantics, or each method exactly as its reference code "
                "(and its defaults; docs/reference-code.md)"})
    # the random network the mask is searched in (docs/training.md, "Sparse random sources")
    source: str = field(default="dense", metadata={
        "help": " | ".join(SOURCE_NAMES) + ": the random network the mask is searched in: every weight, an "
                "Erdos-Renyi sparse one (arXiv 2210.02412), or one with random weights frozen pruned or locked "
                "(arXiv 2402.14029); the pattern is drawn from the seed"})
    source_density: float = field(default=1.0, metadata={
        "help": "fraction of the weights present in the source (1 - the frozen-pruned fraction); "
                "--density may not exceed it"})
    source_distribution: str = field(default="uniform", metadata={
        "help": "per-layer source density: " + " | ".join(DISTRIBUTION_NAMES)})
    source_locked: float = field(default=0.0, metadata={
        "help": "partially-frozen: fraction of the weights frozen as kept (locked); --density may not be below it"})

    def __post_init__(self) -> None:
        if self.variant not in VARIANT_NAMES:
            raise ValueError(f"unknown supermask variant {self.variant!r}; valid names: {', '.join(VARIANT_NAMES)}")
        if not is_real(self.rerand_period, numbers.Integral) or self.rerand_period < 1:
            raise ValueError(f"rerand_period (optimizer steps between re-draws) must be an integer >= 1, "
                             f"got {self.rerand_period!r}")
        if not is_real(self.rerand_prob) or not 0.0 <= self.rerand_prob <= 1.0:
            raise ValueError(f"rerand_prob (probability of a re-draw) must lie in [0, 1], got {self.rerand_prob!r}")
        if not is_real(self.score_l2) or not 0.0 <= self.score_l2 < math.inf:
            raise ValueError(f"score_l2 (the score penalty's lambda) must be a finite number >= 0, "
                             f"got {self.score_l2!r}")
        if not is_real(self.sign_threshold) or not 0.0 <= self.sign_threshold < 1.0:
            raise ValueError(f"sign_threshold (tau as a fraction of the largest initial |score|) must lie in [0, 1), "
                             f"got {self.sign_threshold!r}")
        check_coats(self.coats)
        if not is_real(self.gate_l0) or not 0.0 <= self.gate_l0 < math.inf:
            raise ValueError(f"gate_l0 (the L0 penalty's lambda) must be a finite number >= 0, got {self.gate_l0!r}")
        if not is_real(self.gate_sigma) or not 0.0 < self.gate_sigma < math.inf:
            raise ValueError(f"gate_sigma (the Gaussian gates' noise deviation) must be a finite number > 0, "
                             f"got {self.gate_sigma!r}")

        self._check_source()

    def _check_source(self) -> None:
        if self.source not in SOURCE_NAMES:
            raise ValueError(f"unknown source {self.source!r}; valid names: {', '.join(SOURCE_NAMES)}")
        if self.source_distribution not in DISTRIBUTION_NAMES:
            raise ValueError(f"unknown source distribution {self.source_distribution!r}; "
                             f"valid names: {', '.join(DISTRIBUTION_NAMES)}")
        if not is_real(self.source_density) or not 0.0 < self.source_density <= 1.0:
            raise ValueError(f"source_density (fraction of the weights present) must lie in (0, 1], "
                             f"got {self.source_density!r}")
        if not is_real(self.source_locked) or not 0.0 <= self.source_locked <= 1.0:
            raise ValueError(f"source_locked (fraction frozen as kept) must lie in [0, 1], got {self.source_locked!r}")
        if self.source == "dense" and (self.source_density != 1.0 or self.source_distribution != "uniform"
                                       or self.source_locked != 0.0):
            raise ValueError("source_density, source_distribution and source_locked describe a sparse source: "
                             "choose source 'erdos-renyi' or 'partially-frozen' (the dense source has every weight)")
        if self.source == "erdos-renyi" and self.source_locked != 0.0:
            raise ValueError("source_locked applies to the partially-frozen source, not to erdos-renyi")
        if self.source_locked > self.source_density:
            raise ValueError(f"source_locked ({self.source_locked}) exceeds source_density ({self.source_density}): "
                             "the locked weights are part of the source")
        if self.source != "dense" and self.variant == "reference":
            raise ValueError(f"the reference variant runs each method as its reference code, which has no sparse "
                             f"source; source {self.source!r} needs variant 'slth'")

MAX_COATS = 127  # a weight's coat count is stored as an int8 (tickets: extras "level/<name>")


def check_coats(coats) -> None:
    """Refuse a coat schedule that is not a tuple of decreasing fractions in (0, 1) (at most MAX_COATS coats)."""
    if not isinstance(coats, tuple) or not all(is_real(c) for c in coats):
        raise ValueError(f"coats must be a tuple of numbers (the inner coats' kept fractions relative to the "
                         f"outermost coat's), got {coats!r}")
    if not all(0.0 < c < 1.0 for c in coats):
        raise ValueError(f"each coat's kept fraction relative to the outermost coat must lie in (0, 1), got {coats!r}")
    if any(b >= a for a, b in zip(coats, coats[1:])):
        raise ValueError(f"coats must decrease (each coat nests inside the one before), got {coats!r}")
    if len(coats) + 1 > MAX_COATS:
        raise ValueError(f"at most {MAX_COATS} coats (a coat count is stored as an int8), got {len(coats) + 1}")


def is_real(value, kind: type = numbers.Real) -> bool:
    """``value`` is a number of ``kind`` (a bool is not: ``True`` would pass as 1)."""
    return isinstance(value, kind) and not isinstance(value, bool)


DEFAULTS = MethodSettings()
_META = {f.name: f.metadata for f in fields(MethodSettings)}
METHOD_FIELDS = tuple(_META)  # the methods' own settings, by name


def _f(default, help: str = "", **cli):  # noqa: A002
    return field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class TrainSettings:
    """The fields of :class:`slth.train.TrainConfig` (which adds their checks and the defaults per method), with
    their defaults and help texts, importable without torch: ``slth train``'s options are generated from them.
    ``None`` means "the method's default" (lr, weight_decay, init) or "the data set's" (augment, image_size)."""

    method: str = _f("edge-popup", " | ".join(("dense", *METHOD_NAMES)))
    model: str = _f("fc", " | ".join(MODEL_NAMES))
    data: str = _f("digits", "digits | mnist | fashion-mnist | cifar10 | pystdlib-chars (in memory) | cifar100 | "
                             "image-folder (streamed through DataLoader workers)")
    data_dir: str | None = _f(None, "directory with the dataset files (not needed for digits)")
    density: float = _f(0.5, "kept fraction of the Linear/Conv2d weights, in (0, 1]")
    width: float = _f(1.0, "width multiplier of the hidden layers")
    epochs: int = _f(10)
    seed: int = _f(0, "seeds the weights, scores, data order and sampling")
    batch_size: int = _f(128, "global batch, split evenly over torchrun's processes")
    lr: float | None = _f(None, "peak learning rate of the cosine schedule (default per method)")
    momentum: float = _f(0.9, "SGD momentum")
    weight_decay: float | None = _f(None, "default per method")
    init: str | None = _f(None, "kaiming-normal | scaled-kaiming-normal | signed-constant | scaled-signed-constant "
                                "(default: dense kaiming-normal, else signed-constant)")
    distribution: str = _f("uniform", "per-layer density: " + " | ".join(DISTRIBUTION_NAMES))
    normalize: bool = _f(True, "normalise the inputs by the data set's mean and std")
    augment: bool | None = _f(None, "random crop + flip (default: on for cifar10)")
    hidden: tuple[int, ...] | None = _f(None, "fc hidden sizes before the width multiplier, e.g. 300,100")
    # other model constructor arguments, as sorted (key, value) pairs: (("depth", 4), ("patch", 7)) for vit;
    # a mapping is accepted and normalised (slth.models.check_model_args checks keys and converts values)
    model_args: tuple[tuple[str, object], ...] = _f(
        (), "a model constructor argument, repeatable: --model-arg patch=7 --model-arg depth=4 (vit: patch, dim, "
            "depth, heads, mlp_ratio; gpt: dim, depth, heads, mlp_ratio, tie)", flag="--model-arg")
    # the data set's own options, as sorted (key, value) pairs: (("context", 32),) for pystdlib-chars
    # (slth.data.check_data_args checks keys and converts values)
    data_args: tuple[tuple[str, object], ...] = _f(
        (), "a data set option, repeatable: --data-arg context=32 (pystdlib-chars: context, max_bytes, test_every)",
        flag="--data-arg")
    # the supermask methods' own settings, flat here (checkpoints and metrics.json hold them so)
    rerand_period: int = field(default=DEFAULTS.rerand_period, metadata=_META["rerand_period"])
    rerand_prob: float = field(default=DEFAULTS.rerand_prob, metadata=_META["rerand_prob"])
    score_l2: float = field(default=DEFAULTS.score_l2, metadata=_META["score_l2"])
    sign_threshold: float = field(default=DEFAULTS.sign_threshold, metadata=_META["sign_threshold"])
    coats: tuple[float, ...] = field(default=DEFAULTS.coats, metadata=_META["coats"])
    gate_l0: float = field(default=DEFAULTS.gate_l0, metadata=_META["gate_l0"])
    gate_sigma: float = field(default=DEFAULTS.gate_sigma, metadata=_META["gate_sigma"])
    variant: str = field(default=DEFAULTS.variant, metadata=_META["variant"])
    source: str = field(default=DEFAULTS.source, metadata=_META["source"])
    source_density: float = field(default=DEFAULTS.source_density, metadata=_META["source_density"])
    source_distribution: str = field(default=DEFAULTS.source_distribution, metadata=_META["source_distribution"])
    source_locked: float = field(default=DEFAULTS.source_locked, metadata=_META["source_locked"])
    precision: str = _f("fp32", "fp32 | bf16 | fp16 (autocast; fp16 with loss scaling, needs a GPU)")
    image_size: int | None = _f(None, "image-folder: side of the square crops (default 224)")
    # where it runs, not what it computes: excluded from the identity a resumed run must match
    device: str = _f("auto", "auto (CUDA when available) | cpu | cuda | cuda:N | mps")
    workers: int = _f(0, "DataLoader worker processes (streamed data sets)")


MAX_REDRAW_ROUNDS = 8  # default bound on redraw rounds of the blocks that miss eps (construction)
CHUNK_INSTANCES = 1 << 18  # SubsetSum instances per chunk: about 34 MB of float64 values at n = 16


@dataclass(frozen=True)
class ConstructSettings:
    """The fields of :class:`slth.construction.config.ConstructConfig` (what a construction builds; it adds
    the checks), with their defaults and help texts, importable without torch."""

    eps: float = _f(0.01, "per-weight tolerance")
    seed: int = _f(0, "seed of the random network")
    method: str = _f("pensia", " | ".join(CONSTRUCTION_METHOD_NAMES) + ": SubsetSum of n random products per weight "
                               "(log width) | a single random product per weight (polynomial width)")
    n: int | Sequence[int] | None = _f(None, "random values per weight (default: chosen per layer from eps)",
                                       cli=False)
    p: float = _f(0.99, "per-weight success probability the chosen n reaches")
    sparse: bool = _f(True, "sparsest subsets within eps (else minimal-error subsets)", cli=False)
    nonnegative_input: bool = _f(False, "inputs are >= 0 (images in [0, 1])")
    input_range: tuple[float, float] | None = _f(
        None, "inputs lie in [LO, HI] (e.g. standardised images); LO < 0 shifts them to x - LO >= 0", cli=False)
    max_redraw_rounds: int = _f(MAX_REDRAW_ROUNDS, "redraw rounds of the blocks that miss eps (0: none)")
    attention: str = _f("projection", "MultiheadAttention construction: projection (W_q, W_k, W_v, W_o each a random "
                                      "pair) or product (one random attention pruned for W_q W_k^T and W_v W_o, "
                                      "Otsuka et al.)")
    construction: str = _f("auto", "auto (trace the model; if torch.fx cannot, replace its modules) | graph "
                                   "(traced only) | modules (module replacement)")
    fold: bool = _f(True, "with example inputs, fold a norm's affine into the Linear layers that alone read it "
                          "(module replacement; read from the torch.export graph)", cli=False)
    nonnegative_leaves: bool = _f(True, "with example inputs, build a Linear whose input is nonnegative in every call "
                                        "(after a ReLU, ...) with n first-layer units per input, not 2n (module "
                                        "replacement; read from the torch.export graph)", cli=False)
    # checks the target before any work; not stored in the ticket (a module-replacement ticket records what its
    # exported graph gave: its folds and its layouts)
    example_inputs: Any = field(default=None, compare=False, repr=False, metadata={"cli": False})


@dataclass(frozen=True)
class ExecutionSettings:
    """The fields of :class:`slth.construction.config.Execution` (how a construction runs; none changes the
    ticket), with their defaults and help texts, importable without torch."""

    workers: int = _f(1, "worker processes (local) or Ray tasks in flight / 2 (ray)")
    backend: str = _f("local", "local (processes on this machine) | ray (a Ray cluster)")
    address: str | None = _f(None, "Ray cluster address (ray backend; default: start a local one)")
    workdir: str | None = _f(None, "checkpoint directory: one file per finished chunk")
    resume: bool = _f(False, "reuse the finished chunks in --workdir")
    chunk_instances: int = _f(CHUNK_INSTANCES, "SubsetSum instances per chunk (bounds memory)")
    device: str | None = _f(None, "PyTorch device for the --min-error search, e.g. cuda")
    progress: bool = _f(False, "a progress bar", cli=False)
