"""construct(): trained ReLU MLP -> ticket over a seeded random network (Pensia et al. / Malach et al.)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..subsetsum import Solution, required_n, solve, solve_sparsest
from ..subsetsum.core import MAX_N
from .network import LayerLayout, apply_redraws, layer_tensors, redraw_values
from .target import LinearSpec, parse_target

METHODS = ("pensia", "malach")
# Largest |target| (after rescaling) a block is asked to reach. n products of U[0,1]·U[-1,1] reach
# about ±n/8 on average, so 1 is comfortably inside for the n we use; rare misses are redrawn.
REACH = 1.0
MAX_REDRAW_ROUNDS = 8


@dataclass
class LayerResult:
    layout: LayerLayout
    scale: float  # this layer's weights were divided by `scale`
    bias_scale: float  # its bias was divided by the product of scales up to here
    masks: dict[str, np.ndarray]
    effective_pos: np.ndarray  # (d_out, d_in): realised weight on relu(x), target scale
    effective_neg: np.ndarray | None  # (d_out, d_in): realised weight on relu(-x) (≈ -W), target scale
    effective_bias: np.ndarray | None
    max_weight_error: float
    errors: np.ndarray  # every weight's (and bias's) |realised - target|, target scale
    failures: int
    redraws: list[tuple[int, int, int, int]] = field(default_factory=list)


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


def _solve(method: str, sparse: bool, values: np.ndarray, targets: np.ndarray, eps: np.ndarray) -> Solution:
    """One batch of instances with per-row tolerances; ``feasible`` = error <= eps."""
    if method == "malach":
        return single_pick(values, targets, eps)
    if sparse:
        return solve_sparsest(values, targets, eps)
    sol = solve(values, targets)
    return Solution(sol.mask, sol.error, sol.sum, sol.error <= eps)


def choose_n(method: str, eps: float, weights: np.ndarray, p: float) -> int:
    """n per instance from eps: the smallest n with P(error <= eps) >= p for this layer's weights."""
    if method == "malach":
        # one product must land within eps: P(miss) = (1 - q)^n with q = P(|vu - w| <= eps), by Monte Carlo
        rng = np.random.default_rng(0)
        w = rng.choice(weights.reshape(-1), 20_000)
        vu = rng.uniform(0, 1, (20_000, 64)) * rng.uniform(-1, 1, (20_000, 64))
        q = max(float((np.abs(vu - w[:, None]) <= eps).mean()), 1e-9)
        hit_free = np.abs(w) <= eps  # the empty set already works
        need = np.log(1 - p) / np.log1p(-q)
        return int(np.ceil(need)) if not hit_free.all() else 1
    return required_n(eps, p, weights.reshape(-1), values="product-relu", trials=4000, n_max=min(32, MAX_N))


def build_layer(index: int, spec: LinearSpec, layout: LayerLayout, seed: int, scale: float, bias_scale: float,
                eps: float, method: str, sparse: bool, max_redraw_rounds: int = MAX_REDRAW_ROUNDS) -> LayerResult:
    """Solve every (output, input, sign) block of one target layer and return masks and realised weights."""
    t = layer_tensors(seed, index, layout)
    a = np.abs(t["a.weight"].astype(np.float64))  # (d_in, units)
    b = t["b.weight"]  # (d_out, hidden) float32, edited in place by redraws
    d_out, d_in, g, n = layout.d_out, layout.d_in, layout.groups, layout.n
    w = spec.weight / scale
    eps_w = eps / scale
    # instances (k, j, group): values b[k, j*units + g*n + m] * |a[j, g*n + m]|, target ±w[k, j]
    signs = np.array([1.0, -1.0][:g])
    col = (np.arange(d_in)[:, None] * layout.units + np.arange(g)[None, :] * n)  # (d_in, g) block starts
    rows_k = np.repeat(np.arange(d_out), d_in * g)
    rows_col = np.tile(col.reshape(-1), d_out)
    a_blocks = a.reshape(d_in, g, n)
    values = (b[:, : d_in * layout.units].astype(np.float64).reshape(d_out, d_in, g, n) * a_blocks[None]).reshape(-1, n)
    targets = (w[:, :, None] * signs).reshape(-1)
    eps_rows = np.full(targets.shape, eps_w)
    if layout.bias:
        beta = t["a.bias"].astype(np.float64)
        bias_cols = d_in * layout.units
        values = np.concatenate([values, b[:, bias_cols:].astype(np.float64) * beta[None]])
        targets = np.concatenate([targets, spec.bias / bias_scale])
        eps_rows = np.concatenate([eps_rows, np.full(d_out, eps / bias_scale)])
        rows_k = np.concatenate([rows_k, np.arange(d_out)])
        rows_col = np.concatenate([rows_col, np.full(d_out, bias_cols)])
    sol = _solve(method, sparse, values, targets, eps_rows)
    mask, error, total, feasible = sol.mask.copy(), sol.error.copy(), sol.sum.copy(), sol.feasible.copy()
    redraws: list[tuple[int, int, int, int]] = []
    for round_ in range(1, max_redraw_rounds + 1):
        bad = np.flatnonzero(~feasible)
        if bad.size == 0:
            break
        new_values = np.empty((bad.size, n))
        for i, r in enumerate(bad):
            k, c = int(rows_k[r]), int(rows_col[r])
            b[k, c : c + n] = redraw_values(seed, index, round_, k, c, n)
            redraws.append((index, round_, k, c))
            if c >= d_in * layout.units:  # the bias block
                factor = beta
            else:
                factor = a[c // layout.units, c % layout.units : c % layout.units + n]
            new_values[i] = b[k, c : c + n].astype(np.float64) * factor
        re = _solve(method, sparse, new_values, targets[bad], eps_rows[bad])
        mask[bad], error[bad], total[bad], feasible[bad] = re.mask, re.error, re.sum, re.feasible
    failures = int((~feasible).sum())
    # masks of the two random layers
    b_mask = np.zeros(b.shape, dtype=bool)
    cols = rows_col[:, None] + np.arange(n)[None, :]
    b_mask[np.repeat(rows_k, n).reshape(-1, n)[mask], cols[mask]] = True
    used = b_mask.any(axis=0)
    a_mask = used[: d_in * layout.units].reshape(d_in, layout.units)
    masks = {"a.weight": a_mask, "b.weight": b_mask}
    if layout.bias:
        masks["a.bias"] = used[d_in * layout.units :]
    n_w = d_out * d_in * g
    realised = total[:n_w].reshape(d_out, d_in, g) * scale
    eff_pos = realised[:, :, 0]
    eff_neg = realised[:, :, 1] if g == 2 else None
    err = np.abs(eff_pos - spec.weight)
    if eff_neg is not None:
        err = np.maximum(err, np.abs(eff_neg + spec.weight))
    eff_bias = None
    errors = err.reshape(-1)
    if layout.bias:
        eff_bias = total[n_w:] * bias_scale
        errors = np.concatenate([errors, np.abs(eff_bias - spec.bias)])
    max_err = float(errors.max()) if errors.size else 0.0
    return LayerResult(layout, scale, bias_scale, masks, eff_pos, eff_neg, eff_bias, max_err, errors, failures, redraws)


def plan_scales(linears: list[LinearSpec]) -> tuple[list[float], list[float]]:
    """Per-layer weight scales s_l >= 1 (and cumulative bias scales) so every target fits in [-REACH, REACH].

    ReLU is positively homogeneous: dividing layer l by s_l divides everything downstream by s_l, so
    the ticket's output is multiplied back by prod(s_l) (a fixed :class:`Scale`, not a weight).
    """
    scales, cumulative = [], []
    prod = 1.0
    for spec in linears:
        biggest = float(np.abs(spec.weight).max()) if spec.weight.size else 0.0
        if spec.bias is not None and spec.bias.size:
            biggest = max(biggest, float(np.abs(spec.bias).max()) / prod)
        s = max(1.0, biggest / REACH)
        prod *= s
        scales.append(s)
        cumulative.append(prod)
    return scales, cumulative
