"""Batched PyTorch SubsetSum (``solve(..., device=...)``): the numba kernel's algorithm, vectorised.

Same split and the same float operations as the numba kernel, so the results are identical:

* sorted half = ``values[:, :b]`` (b = n // 2), query half = ``values[:, b:]``; both halves' subset
  sums are built by doubling (``s[m + 2^e] = s[m] + v_e``), i.e. left to right from +0.0, exactly the
  floats the numba merge produces;
* the sorted half is sorted stably (order: sum, then mask ascending -- the merge's order) and every
  run of equal sums is represented by its first fewest-element mask;
* for every query sum x, ``searchsorted`` gives the first sorted sum > r = t - x; the candidates are
  that sum and the one before it, scored by ``|(x + s) - t|``;
* the lexicographic minimum of (error, count, query index, candidate) is taken -- the order in which
  the numba kernel scans and breaks ties.

Rows are processed in chunks so that memory stays bounded (about 2^22 candidate pairs per chunk).
"""

from __future__ import annotations

import numpy as np

from .solution import Solution

_PAIRS_PER_CHUNK = 1 << 22


def _doubling(vals, torch):
    """(rows, k) values -> (rows, 2^k) left-to-right subset sums and (2^k,) cardinalities; index = mask."""
    rows, k = vals.shape
    sums = torch.zeros((rows, 1), dtype=vals.dtype, device=vals.device)
    counts = torch.zeros(1, dtype=torch.int64, device=vals.device)
    for e in range(k):
        sums = torch.cat([sums, sums + vals[:, e : e + 1]], dim=1)
        counts = torch.cat([counts, counts + 1])
    return sums, counts


def _solve_chunk(values, targets, torch):
    rows, n = values.shape
    b = n // 2
    dev = values.device
    s_all, c_s = _doubling(values[:, :b], torch)  # (rows, 2^b)
    q, c_q = _doubling(values[:, b:], torch)  # (rows, 2^a)
    size = s_all.shape[1]
    s, order = torch.sort(s_all, dim=1, stable=True)  # ties: mask ascending, as the merge orders them
    cnt = c_s[order]
    # every run of equal sums -> its first fewest-element mask
    pos = torch.arange(size, device=dev).expand(rows, size)
    new_run = torch.ones((rows, size), dtype=torch.bool, device=dev)
    new_run[:, 1:] = s[:, 1:] != s[:, :-1]
    run = torch.cumsum(new_run.to(torch.int64), dim=1) - 1
    rank = cnt * size + pos  # (count, position) lexicographic as one integer
    best = torch.full((rows, size), np.iinfo(np.int64).max, dtype=torch.int64, device=dev)
    best.scatter_reduce_(1, run, rank, reduce="amin")
    rep_pos = torch.gather(best, 1, run) % size
    rep_mask = torch.gather(order, 1, rep_pos)
    rep_cnt = c_s[rep_mask]
    # candidates around r = t - x: padded so that position p - 1 and p always exist (+-inf never win)
    t = targets[:, None]
    r = t - q
    p = torch.searchsorted(s, r, right=True)  # first sorted position with s > r, in [0, size]
    inf = torch.full((rows, 1), float("inf"), dtype=s.dtype, device=dev)
    s_pad = torch.cat([-inf, s, inf], dim=1)
    zero = torch.zeros((rows, 1), dtype=torch.int64, device=dev)
    mask_pad = torch.cat([zero, rep_mask, zero], dim=1)
    cnt_pad = torch.cat([zero, rep_cnt, zero], dim=1)
    idx = torch.stack([p, p + 1], dim=2)  # padded positions of sorted p - 1 and p: (rows, 2^a, 2)
    flat = idx.reshape(rows, -1)
    cand_s = torch.gather(s_pad, 1, flat).reshape(idx.shape)
    err = torch.abs((q[:, :, None] + cand_s) - t[:, :, None])
    count = c_q[None, :, None] + torch.gather(cnt_pad, 1, flat).reshape(idx.shape)
    err = err.reshape(rows, -1)
    count = count.reshape(rows, -1)
    e_min = err.amin(dim=1, keepdim=True)
    at_min = err == e_min
    c_min = torch.where(at_min, count, torch.full_like(count, 1 << 30)).amin(dim=1, keepdim=True)
    chosen = (at_min & (count == c_min)).to(torch.int8).argmax(dim=1)  # first: query index, then candidate
    i_q = chosen // 2
    mask_s = torch.gather(mask_pad, 1, torch.gather(flat, 1, chosen[:, None]))[:, 0]
    x = torch.gather(q, 1, i_q[:, None])[:, 0]
    s_chosen = torch.gather(s_pad, 1, torch.gather(flat, 1, chosen[:, None]))[:, 0]
    bits = torch.arange(n, device=dev)
    mask = torch.where(bits < b, (mask_s[:, None] >> bits.clamp(max=62)) & 1,
                       (i_q[:, None] >> (bits - b).clamp(min=0)) & 1)
    return mask.to(torch.bool), e_min[:, 0], s_chosen + x


def solve_torch(values: np.ndarray, targets: np.ndarray, device) -> Solution:
    """:func:`slth.subsetsum.solve` on a PyTorch device; ``values``/``targets`` already validated."""
    import torch

    dev = torch.device(device)
    rows, n = targets.shape[0], values.shape[-1]
    if values.ndim == 1:
        values = np.broadcast_to(values, (rows, n))
    a = n - n // 2
    per = max(1, _PAIRS_PER_CHUNK >> (a + 1))
    mask = np.zeros((rows, n), dtype=bool)
    error = np.zeros(rows)
    total = np.zeros(rows)
    for lo in range(0, rows, per):
        hi = min(rows, lo + per)
        v = torch.as_tensor(np.ascontiguousarray(values[lo:hi]), dtype=torch.float64, device=dev)
        t = torch.as_tensor(targets[lo:hi], dtype=torch.float64, device=dev)
        m, e, s = _solve_chunk(v, t, torch)
        mask[lo:hi] = m.cpu().numpy()
        error[lo:hi] = e.cpu().numpy()
        total[lo:hi] = s.cpu().numpy()
    return Solution(mask=mask, error=error, sum=total, feasible=np.ones(rows, dtype=bool))
