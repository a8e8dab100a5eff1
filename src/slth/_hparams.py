"""The supermask methods' own hyper-parameters, defined once and importable without torch.

:class:`MethodSettings` holds what only some methods read (IteRand's re-randomisation, Gem-Miner's
regulariser) and the variant every method follows. :class:`slth.supermask.SupermaskConfig`,
:class:`slth.train.TrainConfig` and ``slth train``'s options take their defaults, help texts and checks from
here (the options are generated from the fields, so ``slth train --help`` needs no torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._names import VARIANT_NAMES


@dataclass(frozen=True)
class MethodSettings:
    rerand_period: int = field(default=300, metadata={"help": "iterand: steps between re-randomisations"})
    rerand_prob: float = field(default=0.1, metadata={"help": "iterand: probability a pruned weight is re-drawn"})
    score_l2: float = field(default=1e-4, metadata={"help": "gem-miner: lambda of the score regulariser"})
    variant: str = field(default="slth", metadata={
        "help": " | ".join(VARIANT_NAMES) + ": slth's semantics, or each method exactly as its reference code "
                "(and its defaults; docs/reference-code.md)"})

    def __post_init__(self) -> None:
        if self.variant not in VARIANT_NAMES:
            raise ValueError(f"unknown supermask variant {self.variant!r}; valid names: {', '.join(VARIANT_NAMES)}")
        if self.rerand_period < 1 or not 0.0 <= self.rerand_prob <= 1.0 or self.score_l2 < 0:
            raise ValueError("need rerand_period >= 1, rerand_prob in [0, 1] and score_l2 >= 0")


DEFAULTS = MethodSettings()
