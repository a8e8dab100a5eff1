"""Numba kernels: exact meet-in-the-middle SubsetSum, batched over rows.

Each row's n values are split into a low half (the first ``a = n // 2`` values) and a high half (the
other ``b = n - a``). The sums of all subsets of a half are generated *already sorted* by merging: the
sorted list L of sums over the first i values and the list L + v_i are both sorted, so one linear
merge gives the sorted list over i + 1 values (2^k work per half, no sort). Equal sums are then
collapsed onto the subset with the fewest elements, which makes "ties -> fewest elements" exact.

Search (``solve``): for each low sum s_a in ascending order the best partner for target t is the
high sum next to r = t - s_a; r decreases, so one pointer sweeps the high list once. Every candidate
is scored by ``|(s_a + s_b) - t|`` and compared lexicographically on (error, number of elements).

Search (``solve_sparsest``): the high sums are grouped by cardinality (each group stays sorted, with
its own sweeping pointer), and for each low sum the groups are tried in increasing cardinality, only
as far as a strictly better cardinality than the best so far is possible.

All kernels work on chunks of rows in ``prange`` so that scratch buffers are allocated once per chunk,
never per row.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# A row's half holds at most 2^20 sums; with two halves n <= 40.
MAX_N = 40


@njit(cache=True, inline="always")
def _popcount(x):
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    return (x * 0x0101010101010101) >> 56


@njit(cache=True)
def _half_sums(vals, start, count, s, m, ts, tm):
    """Sorted distinct subset sums of ``vals[start:start+count]``.

    ``s, m, ts, tm`` are buffers of length >= 2^count + 1 (sums, bit masks; bit e = vals[start+e]).
    Returns ``(size, sums, masks)`` where ``sums``/``masks`` is whichever buffer pair holds the result;
    ``sums[size]`` is an +inf sentinel. Equal sums keep the mask with the fewest elements.
    """
    s[0] = 0.0
    m[0] = 0
    size = 1
    for e in range(count):
        v = vals[start + e]
        bit = np.int64(1) << e
        s[size] = np.inf
        # merge s[:size] with s[:size] + v; both end in +inf, so 2*size steps never overrun.
        # Ties take the subset without v first.
        i = 0
        j = 0
        for k in range(2 * size):
            x = s[i]
            y = s[j] + v
            if x <= y:
                ts[k] = x
                tm[k] = m[i]
                i += 1
            else:
                ts[k] = y
                tm[k] = m[j] | bit
                j += 1
        size *= 2
        s, ts = ts, s
        m, tm = tm, m
    # collapse runs of equal sums in place onto their fewest-element mask
    out = 1
    for k in range(1, size):
        if s[k] == s[out - 1]:
            if _popcount(m[k]) < _popcount(m[out - 1]):
                m[out - 1] = m[k]
        else:
            s[out] = s[k]
            m[out] = m[k]
            out += 1
    s[out] = np.inf
    return out, s, m


@njit(cache=True, inline="always")
def _search_min_error(sa, ma, na, sb, mb, nb, t):
    """Lexicographic minimum of (|s_a + s_b - t|, |mask|) over all pairs; returns (err, mask_a, mask_b)."""
    best_e = np.inf
    best_c = 1 << 30
    best_ma = 0
    best_mb = 0
    j = nb - 1
    for i in range(na):
        x = sa[i]
        r = t - x
        while j >= 0 and sb[j] > r:
            j -= 1
        # candidates: the largest high sum <= r (index j) and the next one (j + 1)
        for jj in range(j, j + 2):
            if jj < 0 or jj >= nb:
                continue
            e = abs((x + sb[jj]) - t)
            if e <= best_e:
                c = _popcount(ma[i]) + _popcount(mb[jj])
                if e < best_e or c < best_c:
                    best_e = e
                    best_c = c
                    best_ma = ma[i]
                    best_mb = mb[jj]
    return best_e, best_ma, best_mb


@njit(cache=True, inline="always")
def _write_row(out_mask, out_err, out_sum, row, vals_row, a, n, err, mask_a, mask_b):
    total = 0.0
    # the reported sum is the exact left-to-right float sum of the chosen values
    for e in range(n):
        if e < a:
            bit = (mask_a >> e) & 1
        else:
            bit = (mask_b >> (e - a)) & 1
        out_mask[row, e] = bit == 1
    sa = 0.0
    for e in range(a):
        if (mask_a >> e) & 1:
            sa += vals_row[e]
    sb = 0.0
    for e in range(n - a):
        if (mask_b >> e) & 1:
            sb += vals_row[a + e]
    total = sa + sb
    out_err[row] = err
    out_sum[row] = total


@njit(cache=True, parallel=True)
def solve_rows(values, targets, chunks, out_mask, out_err, out_sum):
    """Minimal-error subset for every row of ``values`` (B, n) with its own target."""
    rows, n = values.shape
    a = n // 2
    b = n - a
    cap = (1 << b) + 1
    per = (rows + chunks - 1) // chunks
    for c in prange(chunks):
        lo = c * per
        hi = min(rows, lo + per)
        if lo >= hi:
            continue
        s1 = np.empty(cap)
        m1 = np.empty(cap, np.int64)
        t1 = np.empty(cap)
        u1 = np.empty(cap, np.int64)
        s2 = np.empty(cap)
        m2 = np.empty(cap, np.int64)
        t2 = np.empty(cap)
        u2 = np.empty(cap, np.int64)
        for row in range(lo, hi):
            v = values[row]
            na, sa, ma = _half_sums(v, 0, a, s1, m1, t1, u1)
            nb, sb, mb = _half_sums(v, a, b, s2, m2, t2, u2)
            err, bma, bmb = _search_min_error(sa, ma, na, sb, mb, nb, targets[row])
            _write_row(out_mask, out_err, out_sum, row, v, a, n, err, bma, bmb)


@njit(cache=True, parallel=True)
def solve_shared(values, targets, chunks, out_mask, out_err, out_sum):
    """Minimal-error subset of one shared value vector (n,) for every target."""
    n = values.shape[0]
    rows = targets.shape[0]
    a = n // 2
    b = n - a
    cap_a = (1 << a) + 1
    cap_b = (1 << b) + 1
    na, sa, ma = _half_sums(values, 0, a, np.empty(cap_a), np.empty(cap_a, np.int64),
                            np.empty(cap_a), np.empty(cap_a, np.int64))
    nb, sb, mb = _half_sums(values, a, b, np.empty(cap_b), np.empty(cap_b, np.int64),
                            np.empty(cap_b), np.empty(cap_b, np.int64))
    per = (rows + chunks - 1) // chunks
    for c in prange(chunks):
        lo = c * per
        hi = min(rows, lo + per)
        for row in range(lo, hi):
            err, bma, bmb = _search_min_error(sa, ma, na, sb, mb, nb, targets[row])
            _write_row(out_mask, out_err, out_sum, row, values, a, n, err, bma, bmb)


@njit(cache=True, inline="always")
def _group_by_count(sb, mb, nb, b, gs, gm, offsets):
    """Stable counting sort of the high half by cardinality: group c is gs[offsets[c]:offsets[c+1]]."""
    for c in range(b + 2):
        offsets[c] = 0
    for k in range(nb):
        offsets[_popcount(mb[k]) + 1] += 1
    for c in range(b + 1):
        offsets[c + 1] += offsets[c]
    fill = offsets.copy()
    for k in range(nb):
        c = _popcount(mb[k])
        gs[fill[c]] = sb[k]
        gm[fill[c]] = mb[k]
        fill[c] += 1


@njit(cache=True, inline="always")
def _search_sparsest(sa, ma, na, gs, gm, offsets, b, ptr, t, eps):
    """Fewest-element pair with error <= eps (ties -> smaller error); returns (found, err, ma, mb)."""
    best_c = 1 << 30
    best_e = np.inf
    best_ma = 0
    best_mb = 0
    for c in range(b + 1):
        ptr[c] = offsets[c + 1] - 1
    for i in range(na):
        x = sa[i]
        ca = _popcount(ma[i])
        if ca > best_c:
            continue
        r = t - x
        top = min(b, best_c - ca)
        for c in range(top + 1):
            lo = offsets[c]
            j = ptr[c]
            while j >= lo and gs[j] > r:
                j -= 1
            ptr[c] = j
            found = False
            for jj in range(j, j + 2):
                if jj < lo or jj >= offsets[c + 1]:
                    continue
                e = abs((x + gs[jj]) - t)
                if e <= eps:
                    k = ca + c
                    if k < best_c or e < best_e:
                        best_c = k
                        best_e = e
                        best_ma = ma[i]
                        best_mb = gm[jj]
                    found = True
            if found:
                # a larger group can only add elements; pointers of skipped groups catch up later
                break
    return best_c < (1 << 30), best_e, best_ma, best_mb


@njit(cache=True, parallel=True)
def solve_sparsest_rows(values, targets, eps, chunks, out_mask, out_err, out_sum, out_feasible):
    """Per row: fewest elements with error <= eps[row]; infeasible rows get the minimal-error subset."""
    rows, n = values.shape
    a = n // 2
    b = n - a
    cap = (1 << b) + 1
    per = (rows + chunks - 1) // chunks
    for c in prange(chunks):
        lo = c * per
        hi = min(rows, lo + per)
        if lo >= hi:
            continue
        s1 = np.empty(cap)
        m1 = np.empty(cap, np.int64)
        t1 = np.empty(cap)
        u1 = np.empty(cap, np.int64)
        s2 = np.empty(cap)
        m2 = np.empty(cap, np.int64)
        t2 = np.empty(cap)
        u2 = np.empty(cap, np.int64)
        gs = np.empty(cap)
        gm = np.empty(cap, np.int64)
        offsets = np.empty(b + 2, np.int64)
        ptr = np.empty(b + 1, np.int64)
        for row in range(lo, hi):
            v = values[row]
            na, sa, ma = _half_sums(v, 0, a, s1, m1, t1, u1)
            nb, sb, mb = _half_sums(v, a, b, s2, m2, t2, u2)
            _group_by_count(sb, mb, nb, b, gs, gm, offsets)
            ok, err, bma, bmb = _search_sparsest(sa, ma, na, gs, gm, offsets, b, ptr, targets[row], eps[row])
            if not ok:
                err, bma, bmb = _search_min_error(sa, ma, na, sb, mb, nb, targets[row])
            out_feasible[row] = ok
            _write_row(out_mask, out_err, out_sum, row, v, a, n, err, bma, bmb)
