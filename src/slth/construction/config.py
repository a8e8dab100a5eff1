"""What to build and how to run it: :class:`ConstructConfig` and :class:`Execution`, the two records
:func:`slth.construction.api.construct_with` takes (``slth.construct(target, eps=..., ...)`` builds them from its
keywords). A ticket depends on the config only: it records the config that ran, never the execution (the chunking,
workers, backend, work dir and device give the same ticket bit for bit). Both check their fields when made, so a bad
value is refused before any work. Their fields, defaults and help texts are declared once, without torch, in
:mod:`slth._hparams` (:class:`~slth._hparams.ConstructSettings`, :class:`~slth._hparams.ExecutionSettings`):
``slth construct``'s options and ``slth.construct``'s keywords take them from there."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .._hparams import ConstructSettings, ExecutionSettings
from .methods import METHODS
from .stream import BACKENDS
from .target import ATTENTION_MODES, input_range_of

CONSTRUCTIONS = ("auto", "graph", "modules")  # ConstructConfig.construction: docs/construction.md, "Any model"


@dataclass(frozen=True)
class ConstructConfig(ConstructSettings):
    """What to build: everything the ticket depends on (see :func:`slth.construct` for each field; the fields,
    defaults and help texts are declared in :class:`slth._hparams.ConstructSettings`, without torch, for
    ``slth construct``'s options). Refuses a bad value when made.

    ``n`` is None (chosen per layer from eps and ``p``), one int, or one per layer (kept as a tuple).
    ``example_inputs`` checks the target before any work; with ``fold`` (module replacement) the target is also
    exported on them to fold norm affines into their Linear readers (``config["folds"]`` of the ticket) and, with
    ``nonnegative_leaves``, to give a Linear whose input is nonnegative in every call n first-layer units per input.
    """

    def __post_init__(self):
        eps, seed, n, p, rounds = self.eps, self.seed, self.n, self.p, self.max_redraw_rounds
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"unknown attention construction {self.attention!r}; valid: {', '.join(ATTENTION_MODES)}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; valid: {', '.join(METHODS)}")
        if not (isinstance(eps, (int, float)) and np.isfinite(eps) and eps > 0):
            raise ValueError(f"eps must be a positive finite number, got {eps!r}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a nonnegative int, got {seed!r}")
        if not isinstance(self.fold, bool):
            raise ValueError(f"fold must be True or False, got {self.fold!r}")
        if not isinstance(self.nonnegative_leaves, bool):
            raise ValueError(f"nonnegative_leaves must be True or False, got {self.nonnegative_leaves!r}")
        if self.construction not in CONSTRUCTIONS:
            raise ValueError(f"unknown construction {self.construction!r}; valid: {', '.join(CONSTRUCTIONS)}")
        if not (isinstance(p, (int, float)) and 0 < p < 1):
            raise ValueError(f"p (per-weight success probability used to choose n) must be in (0, 1), got {p!r}")
        if not isinstance(rounds, int) or rounds < 0:
            raise ValueError(f"max_redraw_rounds must be an int >= 0, got {rounds!r}")
        if n is not None:
            ns = (int(n),) if isinstance(n, (int, np.integer)) else tuple(int(x) for x in n)
            max_n = METHODS[self.method].max_n
            if not all(1 <= x <= max_n for x in ns):
                shown = n if isinstance(n, (int, np.integer)) else list(ns)
                raise ValueError(f"n must be between 1 and {max_n} for method {self.method!r}, got {shown}")
            object.__setattr__(self, "n", int(n) if isinstance(n, (int, np.integer)) else ns)
        box = input_range_of(self.input_range, self.nonnegative_input)  # refuses a bad box
        if self.input_range is not None:
            assert box is not None
            object.__setattr__(self, "input_range", (box[0], box[1]))
        object.__setattr__(self, "eps", float(eps))
        object.__setattr__(self, "seed", int(seed))
        object.__setattr__(self, "sparse", bool(self.sparse))
        object.__setattr__(self, "nonnegative_input", bool(self.nonnegative_input))

    @property
    def box(self) -> tuple[float, float] | None:
        """The declared input box: ``input_range``, (0, 1) for ``nonnegative_input``, else None."""
        return input_range_of(self.input_range, self.nonnegative_input)

    def ns(self, layers: int) -> list[int | None]:
        """``n`` as one entry per layer (None: chosen from eps)."""
        if self.n is None:
            return [None] * layers
        if isinstance(self.n, int):
            return [self.n] * layers
        if len(self.n) != layers:
            raise ValueError(f"n has {len(self.n)} entries but the target has {layers} Linear/Conv2d layers")
        return list(self.n)


@dataclass(frozen=True)
class Execution(ExecutionSettings):
    """How to run a construction: none of it changes the ticket (only ``stats["seconds"]`` and ``ticket.run``);
    fields declared in :class:`slth._hparams.ExecutionSettings`. Refuses a bad value when made.

    The work is split into chunks (row blocks of a layer, at most ``chunk_instances`` SubsetSum instances each)
    run by ``workers`` local processes or, with ``backend="ray"``, on a Ray cluster (``address``); ``workdir``
    checkpoints every finished chunk and ``resume=True`` reuses them. ``device``: PyTorch device of the
    minimal-error search (``sparse=False``). ``progress``: a progress bar.
    """

    def __post_init__(self):
        if not isinstance(self.chunk_instances, int) or self.chunk_instances < 1:
            raise ValueError(f"chunk_instances must be an int >= 1, got {self.chunk_instances!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {self.workers!r}")
        if self.workdir is not None:
            object.__setattr__(self, "workdir", os.fspath(self.workdir))

    def check(self, config: ConstructConfig) -> None:
        """Refuse an execution that cannot run ``config``."""
        if self.device is not None and config.sparse and METHODS[config.method].subset_sum:
            raise ValueError("device= runs the minimal-error search (sparse=False); sparsest subsets run on the CPU")

