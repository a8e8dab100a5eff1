"""One target layer's masks: its :class:`LayerJob` (layout, scales, eps, method), solved chunk by chunk by SubsetSum
(Pensia et al., arXiv 2006.07990) or a single pick (Malach et al., arXiv 2002.00585), with redraws of the blocks
that miss eps, and the chunks merged into a :class:`LayerResult`. ``construct`` (:mod:`.api`) plans the jobs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._hparams import MAX_REDRAW_ROUNDS
from ..ticketfile import BitPacker, PackedMask
from .graph import Graph, LayerNode
from .graph import plan_scales as plan_graph_scales
from .methods import METHODS
from .network import LayerLayout, a_tensors, b_rows, bias_tap, redraw_values
from .target import LinearSpec


@dataclass
class LayerResult:
    layout: LayerLayout
    scale: float  # this layer's weights were divided by `scale`
    bias_scale: float  # its bias was divided by the product of scales up to here
    masks: dict[str, PackedMask]
    max_weight_error: float
    errors: np.ndarray | None  # every weight's (and bias's) |realised - target|, target scale; None once merged
    failures: int
    redraws: list[tuple[int, int, int, int]] = field(default_factory=list)


def choose_n(method: str, eps: float, weights: np.ndarray, p: float) -> int:
    """n per instance from eps: the smallest n with P(error <= eps) >= p for this layer's weights (the method's
    rule, :attr:`ConstructionMethod.choose_n`).

    Weights with |w| <= eps are met by the empty subset whatever n is, so the estimate is taken over
    the others: a layer of mostly tiny weights (a trained first layer at eps = 0.1, say) would
    otherwise reach p with n = 1 while its few large weights all fail, and no redraw of one value helps.
    """
    weights = weights.reshape(-1)
    weights = weights[np.abs(weights) > eps]
    if weights.size == 0:
        return 1
    return METHODS[method].choose_n(eps, weights, p)


@dataclass(frozen=True)
class LayerJob:
    """What a worker needs to solve any block of rows of one target layer (small and picklable; the
    target's weight rows travel with each chunk)."""

    index: int
    layout: LayerLayout
    seed: int
    scale: float
    bias_scale: float
    eps: float
    method: str
    sparse: bool
    max_redraw_rounds: int = MAX_REDRAW_ROUNDS
    device: str | None = None  # PyTorch device of the minimal-error search (sparse=False)


@dataclass
class ChunkResult:
    """The solved rows ``start:stop`` of one layer: a function of (job, rows, target rows) only, so chunk
    results can be computed anywhere, in any order, checkpointed and merged into the same ticket."""

    layer: int
    start: int
    stop: int
    b_mask: PackedMask  # (rows, hidden, taps), as bits: 1/8 of the memory while chunks wait to be merged
    used: np.ndarray  # (hidden,) bool: the hidden units (columns of b) this chunk keeps any entry of
    weight_errors: np.ndarray  # (rows * d_in * taps,) float64, target scale
    bias_errors: np.ndarray  # (rows,) or (0,)
    failures: int
    redraws: np.ndarray  # (R, 4) int64: layer, round, row, col


def solve_chunk(job: LayerJob, start: int, stop: int, weight: np.ndarray, bias: np.ndarray | None) -> ChunkResult:
    """Solve every (output, input, sign, tap) block of output rows ``start:stop`` (and their biases).

    ``weight``: the target's rows ``start:stop`` ((rows, d_in) or (rows, c_in, kh, kw), float64);
    ``bias``: its bias rows or None. Only this block of ``b.weight`` is drawn (:func:`b_rows`).
    """
    layout, seed, index, n, g = job.layout, job.seed, job.index, job.layout.n, job.layout.groups
    rows, d_in, taps, units, hidden = stop - start, layout.d_in, layout.taps, layout.units, layout.hidden
    a_t = a_tensors(seed, index, layout)
    a = np.abs(a_t["a.weight"].astype(np.float64))  # (d_in, units)
    b3 = b_rows(seed, index, layout, start, stop).reshape(rows, hidden, taps)  # edited in place by redraws
    w = np.asarray(weight, dtype=np.float64).reshape(rows, d_in, taps) / job.scale
    eps_w = job.eps / job.scale
    # instances (k, j, group, tap): values b[k, j*units + g*n + m, tap] * |a[j, g*n + m]|, target ±w[k, j, tap]
    signs = np.array([1.0, -1.0][:g])
    unit = np.arange(d_in)[:, None] * units + np.arange(g)[None, :] * n  # (d_in, g) block starts
    rows_k = np.repeat(np.arange(start, stop), d_in * g * taps)
    rows_unit = np.tile(np.repeat(unit.reshape(-1), taps), rows)
    rows_tap = np.tile(np.arange(taps), rows * d_in * g)
    blocks = b3[:, : d_in * units, :].astype(np.float64).reshape(rows, d_in, g, n, taps)
    values = (blocks.transpose(0, 1, 2, 4, 3) * a.reshape(d_in, g, 1, n)[None]).reshape(-1, n)
    del blocks
    targets = (w[:, :, None, :] * signs[None, None, :, None]).reshape(-1)
    eps_rows = np.full(targets.shape, eps_w)
    n_w = targets.size
    if layout.bias:
        beta = a_t["a.bias"].astype(np.float64)
        bias_unit, tap_c = d_in * units, bias_tap(layout)
        values = np.concatenate([values, b3[:, bias_unit:, tap_c].astype(np.float64) * beta[None]])
        targets = np.concatenate([targets, np.asarray(bias, dtype=np.float64) / job.bias_scale])
        eps_rows = np.concatenate([eps_rows, np.full(rows, job.eps / job.bias_scale)])
        rows_k = np.concatenate([rows_k, np.arange(start, stop)])
        rows_unit = np.concatenate([rows_unit, np.full(rows, bias_unit)])
        rows_tap = np.concatenate([rows_tap, np.full(rows, tap_c)])
    solve = METHODS[job.method].solve
    sol = solve(job.sparse, values, targets, eps_rows, job.device)
    del values
    mask, total, feasible = sol.mask.copy(), sol.sum.copy(), sol.feasible.copy()
    redraws: list[tuple[int, int, int, int]] = []
    for round_ in range(1, job.max_redraw_rounds + 1):
        bad = np.flatnonzero(~feasible)
        if bad.size == 0:
            break
        new_values = np.empty((bad.size, n))
        for i, r in enumerate(bad):
            k, u, tap = int(rows_k[r]), int(rows_unit[r]), int(rows_tap[r])
            col = tap * hidden + u
            b3[k - start, u : u + n, tap] = redraw_values(seed, index, round_, k, col, n)
            redraws.append((index, round_, k, col))
            factor = beta if u >= d_in * units else a[u // units, u % units : u % units + n]
            new_values[i] = b3[k - start, u : u + n, tap].astype(np.float64) * factor
        re = solve(job.sparse, new_values, targets[bad], eps_rows[bad], job.device)
        mask[bad], total[bad], feasible[bad] = re.mask, re.sum, re.feasible
    b_mask = np.zeros((rows, hidden, taps), dtype=bool)
    hit_row, hit_m = np.nonzero(mask)
    b_mask[rows_k[hit_row] - start, rows_unit[hit_row] + hit_m, rows_tap[hit_row]] = True
    realised = total[:n_w].reshape(rows, d_in, g, taps) * job.scale
    err = np.abs(realised[:, :, 0, :] - w * job.scale)
    if g == 2:
        err = np.maximum(err, np.abs(realised[:, :, 1, :] + w * job.scale))
    bias_err = np.abs(total[n_w:] * job.bias_scale - bias) if layout.bias else np.zeros(0)
    return ChunkResult(index, start, stop, PackedMask.pack(b_mask), b_mask.any(axis=(0, 2)), err.reshape(-1),
                       bias_err, int((~feasible).sum()), np.array(redraws, dtype=np.int64).reshape(-1, 4))


def merge_layer(job: LayerJob, chunks: list[ChunkResult]) -> LayerResult:
    """One layer's masks and errors from its chunks (any order; they must cover rows 0..d_out once)."""
    layout = job.layout
    chunks = sorted(chunks, key=lambda c: c.start)
    if [c.start for c in chunks] != [0, *(c.stop for c in chunks[:-1])] or chunks[-1].stop != layout.d_out:
        raise ValueError(f"chunks of layer {job.index} do not cover its {layout.d_out} rows exactly once")
    b_mask = BitPacker(layout.b_shape)  # row blocks in order: b's rows are its leading dim
    used = np.zeros(layout.hidden, dtype=bool)
    for c in chunks:
        b_mask.add(c.b_mask.unpack())
        used |= c.used
    a_mask = used[: layout.d_in * layout.units].reshape(layout.d_in, layout.units)
    masks = {"a.weight": PackedMask.pack(a_mask), "b.weight": b_mask.done()}
    if layout.bias:
        masks["a.bias"] = PackedMask.pack(used[layout.d_in * layout.units :])
    errors = np.concatenate([c.weight_errors for c in chunks] + [c.bias_errors for c in chunks])
    redraws = np.concatenate([c.redraws for c in chunks]) if chunks else np.zeros((0, 4), np.int64)
    max_err = float(errors.max()) if errors.size else 0.0
    return LayerResult(layout, job.scale, job.bias_scale, masks, max_err, errors,
                       int(sum(c.failures for c in chunks)), [tuple(int(v) for v in r) for r in redraws])


def plan_scales(linears: list[LinearSpec]) -> tuple[list[float], list[float]]:
    """Per-layer weight scales s_l >= 1 and cumulative bias scales of a chain of layers (see
    :func:`slth.construction.graph.plan_scales`, which plans any construction graph)."""
    chain = Graph(tuple(LayerNode((i - 1,), i) for i in range(len(linears))), chain=True)
    p = plan_graph_scales(chain, linears)
    return list(p.layer_scales), list(p.bias_scales)
