"""Construction methods: one :class:`ConstructionMethod` entry per method in :data:`METHODS`.

==========  ===========================================================  ================================
method      a weight w is realised by                                    n (values per weight)
==========  ===========================================================  ================================
pensia      a subset of n random products b_i |a_i| (SubsetSum; the      log width; chosen so that
            sparsest within eps, or the minimal-error one)               P(error <= eps) >= p, at most 32
malach      at most one of n random products (the nearest, or none)      poly width; 1/eps-like growth
==========  ===========================================================  ================================

Both build the same random pairs (:mod:`slth.construction.network`), so tickets, redraws, streaming and the
certified bound (which reads the kernels a pruned pair realises, whatever chose its mask) are shared.

**Adding a method** touches this file and one line of :mod:`slth._names` (its name, which ``slth construct
--help`` lists without importing numpy): a function solving one batch of instances, a rule choosing n, and one
:class:`ConstructionMethod` entry in :data:`METHODS`. ``slth.construct``, the layer jobs, the CLI and the
experiments all read the entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .._names import CONSTRUCTION_METHOD_NAMES, check_registry
from ..subsetsum import Solution, required_n, solve, solve_sparsest
from ..subsetsum.core import MAX_N

PENSIA_CHOSEN_N_MAX = min(32, MAX_N)  # the largest n Pensia's rule chooses from eps (n given by hand: MAX_N)


@dataclass(frozen=True)
class ConstructionMethod:
    """Everything slth knows about one construction method; :data:`METHODS` holds one per method.

    ``solve(sparse, values, targets, eps, device)`` solves a batch of instances (rows of ``values``, one target
    and tolerance per row): the chosen values as a mask, the error and ``feasible = error <= eps``.
    ``choose_n(eps, weights, p)`` is the smallest n with P(error <= eps) >= p for ``weights`` (all > eps in
    magnitude; :func:`slth.construction.build.choose_n` drops the others). ``max_n``: the largest n accepted
    (``construct(n=...)``); ``chosen_n_max``: the largest n ``choose_n`` returns (None: unbounded, so a caller
    sizes the network before building it). ``subset_sum``: n values per weight are summed (the numba SubsetSum
    kernels are compiled before the clock starts, and ``sparse``/``device`` choose the search); False: at most
    one value per weight is kept.
    """

    name: str
    label: str  # for plots and tables
    solve: Callable[[bool, np.ndarray, np.ndarray, np.ndarray, str | None], Solution]
    choose_n: Callable[[float, np.ndarray, float], int]
    max_n: int
    chosen_n_max: int | None
    subset_sum: bool
    width: str  # the width factor its theorem gives
    paper: str
    doc: str = ""


def single_pick(values: np.ndarray, targets: np.ndarray, eps) -> Solution:
    """Malach et al.'s rule: at most one random value per target (the nearest), or none."""
    err_one = np.abs(values - targets[:, None])
    best = np.argmin(err_one, axis=1) if values.shape[1] else np.zeros(len(targets), int)
    e1 = err_one[np.arange(len(targets)), best]
    e0 = np.abs(targets)
    take = e1 < e0  # ties -> fewer elements (the empty set)
    mask = np.zeros(values.shape, dtype=bool)
    mask[np.arange(len(targets))[take], best[take]] = True
    total = np.where(take, values[np.arange(len(targets)), best], 0.0)
    error = np.where(take, e1, e0)
    return Solution(mask=mask, error=error, sum=total, feasible=error <= eps)


def _subset_sum(sparse: bool, values: np.ndarray, targets: np.ndarray, eps: np.ndarray,
                device: str | None = None) -> Solution:
    """Pensia et al.: the sparsest subset within eps (numba) or the minimal-error subset (numba, or the PyTorch
    search on ``device``: the same results)."""
    if sparse:
        return solve_sparsest(values, targets, eps)
    if len(targets) == 0:
        device = None
    sol = solve(values, targets, device=device)
    return Solution(sol.mask, sol.error, sol.sum, sol.error <= eps)


def _single_pick(sparse: bool, values: np.ndarray, targets: np.ndarray, eps: np.ndarray,
                 device: str | None = None) -> Solution:
    return single_pick(values, targets, eps)  # one value or none: sparse and the device change nothing


def _pensia_n(eps: float, weights: np.ndarray, p: float) -> int:
    if weights.size > 1_000_000:  # the estimate resamples 4000 targets; a strided subset is as good and cheap
        weights = weights[:: weights.size // 250_000]
    return required_n(eps, p, weights, values="product-relu", trials=4000, n_max=PENSIA_CHOSEN_N_MAX)


def _malach_n(eps: float, weights: np.ndarray, p: float) -> int:
    # one product must land within eps: P(miss) = (1 - q)^n with q = P(|vu - w| <= eps), by Monte Carlo
    rng = np.random.default_rng(0)
    w = rng.choice(weights, 20_000)
    vu = rng.uniform(0, 1, (20_000, 64)) * rng.uniform(-1, 1, (20_000, 64))
    q = max(float((np.abs(vu - w[:, None]) <= eps).mean()), 1e-9)
    return max(1, int(np.ceil(np.log(1 - p) / np.log1p(-q))))


METHODS: dict[str, ConstructionMethod] = {m.name: m for m in (
    ConstructionMethod(
        "pensia", "Pensia", _subset_sum, _pensia_n, max_n=MAX_N, chosen_n_max=PENSIA_CHOSEN_N_MAX, subset_sum=True,
        width="O(log(d l / eps)) random values per weight",
        paper="Pensia et al. 2020, Optimal Lottery Tickets via SubsetSum: Logarithmic Over-Parameterization is "
              "Sufficient, arXiv 2006.07990",
        doc="SubsetSum of n random products per weight, log width"),
    ConstructionMethod(
        # Malach's single pick only needs memory for its n candidates
        "malach", "Malach", _single_pick, _malach_n, max_n=100_000, chosen_n_max=None, subset_sum=False,
        width="polynomial (O(d^4 l^2) in Pensia et al.'s summary)",
        paper="Malach et al. 2020, Proving the Lottery Ticket Hypothesis: Pruning is All You Need, arXiv 2002.00585",
        doc="a single random product per weight (the nearest, or none), polynomial width"),
)}
check_registry("construction method", METHODS, CONSTRUCTION_METHOD_NAMES)
