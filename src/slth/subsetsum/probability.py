"""How many random values n give P(|best subset sum - target| <= eps) >= p (Monte Carlo, exact solver)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .core import MAX_N, solve

VALUE_DISTRIBUTIONS = {
    # products of two independent uniforms: what one random two-layer path a -> b contributes
    "product": "U[-1,1] * U[-1,1]",
    # the ReLU-active half: the first-layer factor is the positive part, U[0,1] * U[-1,1]
    "product-relu": "U[0,1] * U[-1,1]",
    "uniform": "U[-1,1]",
}
TARGET_DISTRIBUTIONS = {"uniform": "U[-1,1]", "uniform-half": "U[-1/2,1/2]"}


def sample_values(rng: np.random.Generator, shape: tuple[int, ...], distribution: str = "product") -> np.ndarray:
    """Random SubsetSum values from a named distribution (see ``VALUE_DISTRIBUTIONS``)."""
    if distribution == "product":
        return rng.uniform(-1, 1, shape) * rng.uniform(-1, 1, shape)
    if distribution == "product-relu":
        return rng.uniform(0, 1, shape) * rng.uniform(-1, 1, shape)
    if distribution == "uniform":
        return rng.uniform(-1, 1, shape)
    raise ValueError(f"unknown value distribution {distribution!r}; valid: {sorted(VALUE_DISTRIBUTIONS)}")


def _sample_targets(rng: np.random.Generator, size: int, distribution) -> np.ndarray:
    if isinstance(distribution, str):
        if distribution == "uniform":
            return rng.uniform(-1, 1, size)
        if distribution == "uniform-half":
            return rng.uniform(-0.5, 0.5, size)
        raise ValueError(
            f"unknown target distribution {distribution!r}; valid: {sorted(TARGET_DISTRIBUTIONS)} "
            "or an array of samples"
        )
    samples = np.asarray(distribution, dtype=np.float64).reshape(-1)
    if samples.size == 0 or not np.isfinite(samples).all():
        raise ValueError("target samples must be a non-empty array of finite numbers")
    return rng.choice(samples, size=size, replace=True)


def required_n(eps: float, p: float = 0.99, distribution="uniform", *, values: str = "product",
               trials: int = 20_000, seed: int = 0, n_max: int = 32) -> int:
    """Smallest n with P(error <= eps) >= p, for targets from ``distribution``.

    ``distribution``: ``"uniform"`` (U[-1,1]), ``"uniform-half"`` (U[-1/2,1/2]) or an array of target
    samples (e.g. a layer's weights) drawn with replacement. ``values``: ``"product"`` (U[-1,1]·U[-1,1]),
    ``"product-relu"`` (U[0,1]·U[-1,1]) or ``"uniform"``. The estimate uses ``trials`` instances whose
    values are nested in n (instance i uses the first n of one fixed draw of ``n_max``), so the
    empirical success rate grows with n; n is scanned upwards. Raises ``ValueError`` if even ``n_max``
    is not enough.
    """
    if not isinstance(distribution, str):
        distribution = tuple(np.asarray(distribution, dtype=np.float64).reshape(-1).tolist())
    table = required_n_table([eps], [p], distribution, values=values, trials=trials, seed=seed, n_max=n_max)
    n = table[(float(eps), float(p))]
    if n is None:
        raise ValueError(f"n_max={n_max} values do not reach P(error <= {eps}) >= {p}; raise n_max or eps")
    return n


def required_n_table(eps_values, p_values, distribution="uniform", *, values: str = "product",
                     trials: int = 20_000, seed: int = 0, n_max: int = 32) -> dict:
    """:func:`required_n` for every (eps, p) at once from one sample: ``{(eps, p): n or None}``.

    None marks a cell that ``n_max`` values do not reach. Same samples as :func:`required_n` with the
    same ``trials``, ``seed`` and ``n_max``, so the cells equal its answers.
    """
    eps_values = [float(e) for e in eps_values]
    p_values = [float(q) for q in p_values]
    for eps in eps_values:
        if not (eps > 0 and np.isfinite(eps)):
            raise ValueError(f"eps must be a positive finite number, got {eps}")
    for q in p_values:
        if not (0 < q < 1):
            raise ValueError(f"p must be in (0, 1), got {q}")
    if not (1 <= n_max <= MAX_N):
        raise ValueError(f"n_max must be between 1 and {MAX_N}, got {n_max}")
    if trials < 1:
        raise ValueError("trials must be >= 1")
    if values not in VALUE_DISTRIBUTIONS:
        raise ValueError(f"unknown value distribution {values!r}; valid: {sorted(VALUE_DISTRIBUTIONS)}")
    if not isinstance(distribution, str):
        distribution = tuple(np.asarray(distribution, dtype=np.float64).reshape(-1).tolist())
    cells = {(e, q): None for e in eps_values for q in p_values}
    found = _scan(tuple(sorted(set(eps_values))), tuple(sorted(set(p_values))), distribution, values,
                  int(trials), int(seed), int(n_max))
    cells.update({k: found.get(k) for k in cells})
    return cells


@lru_cache(maxsize=64)
def _scan(eps_values, p_values, distribution, values, trials, seed, n_max) -> dict:
    rng = np.random.default_rng(seed)
    targets = _sample_targets(rng, trials, distribution if isinstance(distribution, str) else np.array(distribution))
    vals = sample_values(rng, (trials, n_max), values)
    found = {}
    todo = {(e, q) for e in eps_values for q in p_values}
    for n in range(1, n_max + 1):
        if not todo:
            break
        err = solve(vals[:, :n], targets).error
        for e, q in list(todo):
            if float((err <= e).mean()) >= q:
                found[(e, q)] = n
                todo.discard((e, q))
    return found
