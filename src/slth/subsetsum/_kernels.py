"""Numba kernels: exact meet-in-the-middle SubsetSum, batched over rows.

A row's n values are split in two: the *sorted half* (the first ``b = n // 2`` values) and the *query
half* (the other ``a = n - b``).

Sorted half.  The sums of all its subsets are generated already sorted by merging: the sorted list L
of the sums over the first i values and the list L + v_i are both sorted, so one linear merge gives the
sorted list over i + 1 values (2^b work, no sort).  The merge runs on integer keys (the float's bits
with the magnitude bits flipped for negatives, an order-preserving bijection; no sum is ever -0.0
because every sum starts from +0.0), so the compare-and-select compiles to ``cmp``/``cmov``/``adc``
without branches, and it runs from both ends at once: two independent dependency chains.  Equal sums
are then collapsed onto the subset with the fewest elements (the first such in merge order), which
makes "ties -> fewest elements" exact.  A bucket table over the sorted sums (``table[k]`` = first
index whose bucket is >= k; buckets are a monotone function of the value) turns "first sum > r" into
one load plus a short forward scan that is exact whatever the bucket function rounds to.

Query half.  Its sums are generated unsorted by doubling (``s[m + 2^e] = s[m] + v_e``, vectorised), so
the index of a sum *is* its subset's bit mask.  For each query sum x the best partners of target t are
the sorted-half sums on either side of r = t - x (the last <= r and the first > r); every candidate is
scored by ``|(x + s) - t|`` and compared lexicographically on (error, number of elements); among exact
ties the first query index wins.  Queries are independent, so the CPU overlaps them (the bucket
indices are computed in a separate vectorised pass).

``solve_sparsest`` sorts both halves, groups the sorted-half sums by cardinality (each group sorted,
with its own sweeping pointer) and, for each query-half sum in ascending order, tries the groups in
increasing cardinality only as far as a strictly better total cardinality is possible.

All kernels work on chunks of rows in ``prange`` so that scratch buffers are allocated once per chunk,
never per row.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

# A row's half holds at most 2^20 sums; with two halves n <= 40.
MAX_N = 40

_IMIN = np.int64(-(2**63))
_IMAX = np.int64(2**63 - 1)
_LOW63 = np.int64(0x7FFFFFFFFFFFFFFF)


@intrinsic
def _f2i(typingctx, x):
    """Reinterpret a float64's bits as int64 (no conversion)."""

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _i2f(typingctx, x):
    """Reinterpret an int64's bits as float64 (no conversion)."""

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@njit(cache=True, inline="always")
def _key(f):
    """Order-preserving float64 -> int64 (for every pair of non-NaN floats except -0.0 vs +0.0)."""
    bits = _f2i(f)
    return bits ^ ((bits >> 63) & _LOW63)


@njit(cache=True, inline="always")
def _unkey(k):
    return _i2f(k ^ ((k >> 63) & _LOW63))


@njit(cache=True, inline="always")
def _popcount(x):
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    return (x * 0x0101010101010101) >> 56


@njit(cache=True, inline="always")
def _sorted_sums(vals, start, count, s, m, tm, key, tkey, shifted):
    """Sorted distinct subset sums of ``vals[start:start+count]`` with their fewest-element masks.

    Buffers have length >= 2^count + 2.  Returns ``(size, masks)``: ``s[1:size+1]`` holds the sums in
    ascending order, ``s[0] = -inf`` and ``s[size+1] = +inf`` are sentinels, ``masks`` (``m`` or ``tm``)
    holds the bit masks (bit e = vals[start+e]) at the same positions.
    """
    key[0] = _IMIN
    key[1] = 0  # _key(+0.0)
    key[2] = _IMAX
    m[1] = 0
    size = 1
    one = np.uint64(1)
    for e in range(count):
        v = vals[start + e]
        bit = np.int64(1) << e
        # L + v as keys, in a separate (vectorisable) pass so the add leaves the merge's chain
        shifted[0] = _IMIN
        for k in range(1, size + 1):
            shifted[k] = _key(_unkey(key[k]) + v)
        shifted[size + 1] = _IMAX
        # merge key[1:size+1] with shifted[1:size+1] from the front and from the back at once; ties
        # put the subset without v first (front: take x on x <= y; back: take y on y >= x), so the two
        # chains agree and the order is (sum, mask) ascending.  Selects are written as masked xors
        # on integers: LLVM keeps them branch-free (cmov), where a float select would become a branch.
        i = one
        j = one
        i2 = np.uint64(size)
        j2 = np.uint64(size)
        lo = one
        hi = np.uint64(2 * size)
        for _ in range(size):
            x = key[i]
            y = shifted[j]
            mx = m[i]
            my = m[j] | bit
            sel = -np.int64(x <= y)
            tkey[lo] = y ^ ((x ^ y) & sel)
            tm[lo] = my ^ ((mx ^ my) & sel)
            take = np.uint64(x <= y)
            i += take
            j += one - take
            x2 = key[i2]
            y2 = shifted[j2]
            mx2 = m[i2]
            my2 = m[j2] | bit
            sel2 = -np.int64(y2 >= x2)
            tkey[hi] = x2 ^ ((x2 ^ y2) & sel2)
            tm[hi] = mx2 ^ ((mx2 ^ my2) & sel2)
            take2 = np.uint64(y2 >= x2)
            j2 -= take2
            i2 -= one - take2
            lo += one
            hi -= one
        size *= 2
        tkey[0] = _IMIN
        tkey[size + 1] = _IMAX
        key, tkey = tkey, key
        m, tm = tm, m
    # back to floats, collapsing runs of equal sums onto their (first) fewest-element mask
    s[0] = -np.inf
    s[1] = _unkey(key[1])
    out = 1
    for k in range(2, size + 1):
        x = _unkey(key[k])
        if x == s[out]:
            if _popcount(m[k]) < _popcount(m[out]):
                m[out] = m[k]
        else:
            out += 1
            s[out] = x
            m[out] = m[k]
    s[out + 1] = np.inf
    return out, m


@njit(cache=True, inline="always")
def _bucket(x, lo, scale, top):
    """Monotone bucket index of x in [0, top]; the same function builds and queries the table."""
    return np.int64(min(max((x - lo) * scale, 0.0), top))


@njit(cache=True, inline="always")
def _build_table(s, size, table):
    """table[k] = first position p in s[1:size+1] with bucket(s[p]) >= k (size + 1 if none)."""
    nbuckets = table.shape[0] - 1
    lo = s[1]
    span = s[size] - lo
    scale = nbuckets / span if span > 0.0 else 0.0
    if not scale < 1e300:  # a subnormal span
        scale = 0.0
    top = nbuckets - 1.0
    past = size + 1
    for k in range(nbuckets + 1):
        table[k] = past
    for p in range(size, 0, -1):  # descending, so the first position of each bucket wins
        table[_bucket(s[p], lo, scale, top)] = p
    cur = past
    for k in range(nbuckets - 1, -1, -1):  # empty buckets point at the next non-empty one
        cur = min(cur, table[k])
        table[k] = cur
    return lo, scale, top


@njit(cache=True, inline="always")
def _query_sums(vals, start, count, q):
    """Unsorted subset sums of ``vals[start:start+count]`` by doubling: q[mask] = sum (left to right)."""
    q[0] = 0.0
    size = 1
    for e in range(count):
        v = vals[start + e]
        for k in range(size):
            q[size + k] = q[k] + v
        size *= 2


@njit(cache=True, inline="always")
def _search_table(q, nq, s, ms, table, lo, scale, top, t, kq):
    """Lexicographic minimum of (|q_i + s_j - t|, |mask|) over all pairs; returns (err, mask_q, mask_s)."""
    for i in range(nq):  # bucket of r = t - q_i: a separate pass, vectorised
        kq[i] = _bucket(t - q[i], lo, scale, top)
    best_e = abs(t)  # the empty subset
    best_c = 0
    best_q = 0
    best_s = 0
    one = np.uint64(1)
    for i in range(nq):
        x = q[i]
        r = t - x
        # first position with s > r: the table gives a lower bound, the scan is exact; s[size+1] = inf
        p = np.uint64(table[kq[i]])
        p += np.uint64(s[p] <= r)
        p += np.uint64(s[p] <= r)
        while s[p] <= r:
            p += one
        e1 = abs((x + s[p - one]) - t)  # s[0] = -inf gives inf, never chosen
        e2 = abs((x + s[p]) - t)
        if min(e1, e2) <= best_e:  # rare: the running minimum improves or ties
            cq = _popcount(np.int64(i))
            c1 = cq + _popcount(ms[p - one])
            if e1 < best_e or (e1 == best_e and c1 < best_c):
                best_e = e1
                best_c = c1
                best_q = i
                best_s = ms[p - one]
            c2 = cq + _popcount(ms[p])
            if e2 < best_e or (e2 == best_e and c2 < best_c):
                best_e = e2
                best_c = c2
                best_q = i
                best_s = ms[p]
    return best_e, best_q, best_s


@njit(cache=True, inline="always")
def _write_row(out_mask, out_err, out_sum, row, vals_row, b, n, err, mask_s, mask_q):
    """Store a row's subset; mask_s covers values[:b] (sorted half), mask_q values[b:] (query half)."""
    for e in range(n):
        if e < b:
            bit = (mask_s >> e) & 1
        else:
            bit = (mask_q >> (e - b)) & 1
        out_mask[row, e] = bit == 1
    # the reported sum is each half's left-to-right float sum, added: exactly what the search scored
    ss = 0.0
    for e in range(b):
        if (mask_s >> e) & 1:
            ss += vals_row[e]
    sq = 0.0
    for e in range(n - b):
        if (mask_q >> e) & 1:
            sq += vals_row[b + e]
    out_err[row] = err
    out_sum[row] = ss + sq


@njit(cache=True, parallel=True)
def solve_rows(values, targets, chunks, out_mask, out_err, out_sum):
    """Minimal-error subset for every row of ``values`` (B, n) with its own target."""
    rows, n = values.shape
    b = n // 2
    a = n - b
    cap = (1 << b) + 2
    nq = 1 << a
    per = (rows + chunks - 1) // chunks
    for c in prange(chunks):
        lo = c * per
        hi = min(rows, lo + per)
        if lo >= hi:
            continue
        s = np.empty(cap)
        m = np.empty(cap, np.int64)
        tm = np.empty(cap, np.int64)
        key = np.empty(cap, np.int64)
        tkey = np.empty(cap, np.int64)
        shifted = np.empty(cap, np.int64)
        table = np.empty(2 * (1 << b) + 1, np.int64)
        q = np.empty(nq)
        kq = np.empty(nq, np.int64)
        for row in range(lo, hi):
            v = values[row]
            size, ms = _sorted_sums(v, 0, b, s, m, tm, key, tkey, shifted)
            t_lo, scale, top = _build_table(s, size, table)
            _query_sums(v, b, a, q)
            err, mq, mss = _search_table(q, nq, s, ms, table, t_lo, scale, top, targets[row], kq)
            _write_row(out_mask, out_err, out_sum, row, v, b, n, err, mss, mq)


@njit(cache=True, parallel=True)
def solve_shared(values, targets, chunks, out_mask, out_err, out_sum):
    """Minimal-error subset of one shared value vector (n,) for every target."""
    n = values.shape[0]
    rows = targets.shape[0]
    b = n // 2
    a = n - b
    cap = (1 << b) + 2
    nq = 1 << a
    s = np.empty(cap)
    size, ms = _sorted_sums(values, 0, b, s, np.empty(cap, np.int64), np.empty(cap, np.int64),
                           np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int64))
    table = np.empty(2 * (1 << b) + 1, np.int64)
    t_lo, scale, top = _build_table(s, size, table)
    q = np.empty(nq)
    _query_sums(values, b, a, q)
    per = (rows + chunks - 1) // chunks
    for c in prange(chunks):
        lo = c * per
        hi = min(rows, lo + per)
        if lo >= hi:
            continue
        kq = np.empty(nq, np.int64)
        for row in range(lo, hi):
            err, mq, mss = _search_table(q, nq, s, ms, table, t_lo, scale, top, targets[row], kq)
            _write_row(out_mask, out_err, out_sum, row, values, b, n, err, mss, mq)


@njit(cache=True, inline="always")
def _group_by_count(s, ms, size, b, gs, gm, offsets):
    """Stable counting sort of s[1:size+1] by cardinality: group c is gs[offsets[c]:offsets[c+1]]."""
    for c in range(b + 2):
        offsets[c] = 0
    for k in range(1, size + 1):
        offsets[_popcount(ms[k]) + 1] += 1
    for c in range(b + 1):
        offsets[c + 1] += offsets[c]
    fill = offsets.copy()
    for k in range(1, size + 1):
        c = _popcount(ms[k])
        gs[fill[c]] = s[k]
        gm[fill[c]] = ms[k]
        fill[c] += 1


@njit(cache=True, inline="always")
def _search_sparsest(sq, mq, nq, gs, gm, offsets, b, ptr, t, eps):
    """Fewest-element pair with error <= eps (ties -> smaller error); returns (found, err, mask_q, mask_s).

    ``sq[1:nq+1]`` ascending with masks ``mq``; the other half grouped by cardinality (``gs``, ``gm``).
    """
    best_c = 1 << 30
    best_e = np.inf
    best_q = 0
    best_s = 0
    for c in range(b + 1):
        ptr[c] = offsets[c + 1] - 1
    for i in range(1, nq + 1):
        x = sq[i]
        cq = _popcount(mq[i])
        if cq > best_c:
            continue
        r = t - x
        top = min(b, best_c - cq)
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
                    k = cq + c
                    if k < best_c or e < best_e:
                        best_c = k
                        best_e = e
                        best_q = mq[i]
                        best_s = gm[jj]
                    found = True
            if found:
                # a larger group can only add elements; pointers of skipped groups catch up later
                break
    return best_c < (1 << 30), best_e, best_q, best_s


@njit(cache=True, parallel=True)
def solve_sparsest_rows(values, targets, eps, chunks, out_mask, out_err, out_sum, out_feasible):
    """Per row: fewest elements with error <= eps[row]; infeasible rows get :func:`solve_rows`' subset."""
    rows, n = values.shape
    b = n // 2
    a = n - b
    cap_s = (1 << b) + 2
    cap_q = (1 << a) + 2
    nq = 1 << a
    per = (rows + chunks - 1) // chunks
    for c in prange(chunks):
        lo = c * per
        hi = min(rows, lo + per)
        if lo >= hi:
            continue
        s = np.empty(cap_s)
        m = np.empty(cap_s, np.int64)
        tm_s = np.empty(cap_s, np.int64)
        sq = np.empty(cap_q)
        m2 = np.empty(cap_q, np.int64)
        tm = np.empty(cap_q, np.int64)
        key = np.empty(cap_q, np.int64)
        tkey = np.empty(cap_q, np.int64)
        shifted = np.empty(cap_q, np.int64)
        gs = np.empty(cap_s)
        gm = np.empty(cap_s, np.int64)
        offsets = np.empty(b + 2, np.int64)
        ptr = np.empty(b + 1, np.int64)
        table = np.empty(2 * (1 << b) + 1, np.int64)
        q = np.empty(nq)
        kq = np.empty(nq, np.int64)
        for row in range(lo, hi):
            v = values[row]
            size_s, ms = _sorted_sums(v, 0, b, s, m, tm_s, key, tkey, shifted)
            _group_by_count(s, ms, size_s, b, gs, gm, offsets)
            size_q, mq = _sorted_sums(v, b, a, sq, m2, tm, key, tkey, shifted)
            ok, err, bq, bs = _search_sparsest(sq, mq, size_q, gs, gm, offsets, b, ptr, targets[row], eps[row])
            if not ok:
                # the minimal-error subset exactly as solve() finds it (same search, same tie order)
                t_lo, scale, top = _build_table(s, size_s, table)
                _query_sums(v, b, a, q)
                err, bq, bs = _search_table(q, nq, s, ms, table, t_lo, scale, top, targets[row], kq)
            out_feasible[row] = ok
            _write_row(out_mask, out_err, out_sum, row, v, b, n, err, bs, bq)
