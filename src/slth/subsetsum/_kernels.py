"""Numba kernels: exact meet-in-the-middle SubsetSum, batched over rows.

A row's n values are split in two: the *sorted half* (the first ``b = n // 2`` values) and the *query
half* (the other ``a = n - b``).

Sorted half.  The sums of all its subsets are generated already sorted by merging: the sorted list L
of the sums over the first i values and the list L + v_i are both sorted, so one linear merge gives the
sorted list over i + 1 values (2^b work, no sort).  The merge runs on integer keys (the float's bits
with the magnitude bits flipped for negatives, an order-preserving bijection; no sum is ever -0.0
because every sum starts from +0.0), carries values only (no masks), and compiles to
``cmp``/``cmov``/``adc`` without branches.  It runs as four independent dependency chains: from both
ends and, split by a merge-path binary search, both ways from the middle.  Runs of equal sums are
collapsed.  A bucket table over the sorted sums (``table[k]`` = first index whose bucket is >= k;
buckets are a monotone function of the value, one per sum) turns "first sum > r" into one load, three
independent compares and, rarely, a short forward scan: exact whatever the bucket function rounds to.

Query half.  Its sums are generated unsorted by doubling (``s[m + 2^e] = s[m] + v_e``, vectorised), so
the index of a sum *is* its subset's bit mask.  For each query sum x the best partners of target t are
the sorted-half sums on either side of r = t - x (the last <= r and the first > r), scored by
``|(x + s) - t|``.  The search keeps only a running minimum E (the queries are independent, so the
CPU overlaps them) and each query's error; ties are resolved afterwards, only among the pairs whose
error is exactly E: fewest elements, then the first query index, then the lower candidate.  The
fewest-element mask of a sorted-half sum is looked up by value among the 2^b doubling sums.

``solve_sparsest`` enumerates pairs of subsets by increasing total cardinality up to a small K (the
candidate answers of real use: eps ~ 0.01 needs 2-3 elements), stopping at the first feasible
cardinality; rows not settled there get the minimal-error search (infeasible rows keep its subset),
and only the rest run the general search (both halves sorted, the sorted half grouped by
cardinality, for each query sum the groups in increasing cardinality).

All kernels work on chunks of rows in ``prange`` so that scratch buffers are allocated once per chunk,
never per row.

Compile time (a cold start; numba caches the result on disk).  The ``prange`` loop only calls a
per-chunk function compiled on its own: numba's parfor passes (fusion, pre-lowering, gufunc lowering)
grow much faster than linearly with the loop body, and with every helper inlined into it they took
most of a first run (46 s for the sparsest kernel, 15 s for the minimal-error one, on 2 cores).  One
chunk function serves both searches (the minimal-error search is a part of the sparsest one), and the
per-row helpers are calls, compiled once, instead of numba-level inlined copies (``_sorted_sums``
alone was inlined three times): about 10 s for both.  Only the small per-element helpers stay
``inline="always"``.  ``error_model="numpy"`` (no ZeroDivisionError branches) is what numba's parfor
lowering gave the inlined bodies before, so the arithmetic is unchanged.

Warm speed of the calls.  A numba function increfs each array argument on entry and decrefs it on exit
(atomic operations, ~7 ns each); LLVM's refcount pruning removes such a pair only when the decref
post-dominates the incref with no other decref in between.  A per-row helper therefore has a single
exit: no ``return`` or ``break`` out of its loops, no array variable rebound (``a, b = b, a``), and no
call to a non-inlined njit function (its error check is another return path) -- rare work that needs
one is done by the caller.  Where that failed, the calls cost up to 36 atomic operations per row
(+0.2 us at n = 12, the regression of the first per-chunk version); the hot helpers now have none.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .._jit import ensure_cache

ensure_cache(__file__)  # before any cache=True decorator: a read-only install must not fail here

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


@njit(cache=True, inline="always", error_model="numpy")
def _key(f):
    """Order-preserving float64 -> int64 (for every pair of non-NaN floats except -0.0 vs +0.0)."""
    bits = _f2i(f)
    return bits ^ ((bits >> 63) & _LOW63)


@njit(cache=True, inline="always", error_model="numpy")
def _unkey(k):
    return _i2f(k ^ ((k >> 63) & _LOW63))


@njit(cache=True, inline="always", error_model="numpy")
def _popcount(x):
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    return (x * 0x0101010101010101) >> 56


@njit(cache=True, error_model="numpy")
def _sorted_sums(vals, start, count, s, m, tm, key, tkey, shifted):
    """Sorted distinct subset sums of ``vals[start:start+count]`` with their fewest-element masks
    (shared values, the general sparsest search, rows with many exact ties; the fast path is
    :func:`_sorted_values`).

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


@njit(cache=True, inline="always", error_model="numpy")
def _split(key, shifted, size):
    """Merge path: how many of key[1..size] are among the first ``size`` outputs of the merge."""
    lo = 0
    hi = size
    while lo < hi:
        mid = (lo + hi) >> 1
        if key[mid + 1] <= shifted[size - mid]:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, inline="always", error_model="numpy")
def _merge4(key, shifted, out, size):
    """out[1..2size] = merge of key[1..size] and shifted[1..size] (sentinels at 0 and size+1), as four
    independent branch-free chains: forward from the start, backward from the middle (split by merge
    path), forward from the middle, backward from the end.  Only the index into ``key`` is carried per
    chain; the index into ``shifted`` follows from the output position.  Values only (no masks), so
    ties need no order: equal keys are equal outputs."""
    one = np.uint64(1)
    n = np.uint64(size)
    isp = np.uint64(_split(key, shifted, size))
    ia = one
    ib = isp
    ic = isp + one
    idd = n
    k = np.uint64(0)
    h = n >> one
    while k < h:
        pa = one + k
        pb = n - k
        pc = n + one + k
        pd = n + n - k
        x = key[ia]
        y = shifted[pa + one - ia]
        t = np.uint64(x <= y)
        out[pa] = y ^ ((x ^ y) & -np.int64(t))
        ia += t
        x = key[ib]
        y = shifted[pb - ib]
        t = np.uint64(y >= x)
        out[pb] = x ^ ((x ^ y) & -np.int64(t))
        ib -= one - t
        x = key[ic]
        y = shifted[pc + one - ic]
        t = np.uint64(x <= y)
        out[pc] = y ^ ((x ^ y) & -np.int64(t))
        ic += t
        x = key[idd]
        y = shifted[pd - idd]
        t = np.uint64(y >= x)
        out[pd] = x ^ ((x ^ y) & -np.int64(t))
        idd -= one - t
        k += one


@njit(cache=True, inline="always", error_model="numpy")
def _merge2(key, shifted, out, size):
    """As :func:`_merge4` with two chains (front and back), for short lists."""
    one = np.uint64(1)
    n = np.uint64(size)
    ia = one
    idd = n
    k = np.uint64(0)
    while k < n:
        pa = one + k
        pd = n + n - k
        x = key[ia]
        y = shifted[pa + one - ia]
        t = np.uint64(x <= y)
        out[pa] = y ^ ((x ^ y) & -np.int64(t))
        ia += t
        x = key[idd]
        y = shifted[pd - idd]
        t = np.uint64(y >= x)
        out[pd] = x ^ ((x ^ y) & -np.int64(t))
        idd -= one - t
        k += one


@njit(cache=True, inline="always", error_model="numpy")
def _shift(key, shifted, size, v):
    """shifted[1..size] = key[1..size] + v as keys, with sentinels (a separate, vectorised pass)."""
    shifted[0] = _IMIN
    for k in range(1, size + 1):
        shifted[k] = _key(_unkey(key[k]) + v)
    shifted[size + 1] = _IMAX


@njit(cache=True, error_model="numpy")
def _sorted_values(vals, start, count, key, tkey, shifted, s):
    """Sorted *distinct* subset sums of ``vals[start:start+count]``, without masks.

    Buffers have length >= 2^count + 4.  Returns ``size``: ``s[1:size+1]`` ascending, ``s[0] = -inf``,
    ``s[size+1:size+4] = +inf``.  The same floats, in the same positions, as :func:`_sorted_sums`.

    The merges alternate key -> tkey -> key in pairs (an odd count starts from the two sums 0 and
    v_0 written directly), so the list always ends in ``key`` and no array variable is rebound: then
    LLVM prunes the refcount operations on the arguments (a swap ``key, tkey = tkey, key`` left three
    incref/decref pairs per call).
    """
    key[0] = _IMIN
    e0 = count & 1
    if e0:
        k0 = np.int64(0)  # _key(+0.0)
        k1 = _key(0.0 + vals[start])
        key[1] = min(k0, k1)
        key[2] = max(k0, k1)
        key[3] = _IMAX
        size = 2
    else:
        key[1] = 0
        key[2] = _IMAX
        size = 1
    for e in range(e0, count, 2):
        _shift(key, shifted, size, vals[start + e])
        if size >= 16:
            _merge4(key, shifted, tkey, size)
        else:
            _merge2(key, shifted, tkey, size)
        size *= 2
        tkey[0] = _IMIN
        tkey[size + 1] = _IMAX
        _shift(tkey, shifted, size, vals[start + e + 1])
        if size >= 16:
            _merge4(tkey, shifted, key, size)
        else:
            _merge2(tkey, shifted, key, size)
        size *= 2
        key[0] = _IMIN
        key[size + 1] = _IMAX
    s[0] = -np.inf
    dups = 0
    for k in range(1, size + 1):  # vectorised
        s[k] = _unkey(key[k])
        dups += key[k] == key[k - 1]
    if dups:  # rare with real data: collapse runs of equal sums (keeps the queries' scans short)
        out = 1
        for k in range(2, size + 1):
            out += s[k] != s[out]
            s[out] = s[k]
        size = out
    s[size + 1] = np.inf
    s[size + 2] = np.inf
    s[size + 3] = np.inf
    key[0] = _IMIN  # (already so) a use of key after the branch: its decref joins the single exit
    return size


# buckets per sorted sum in the lookup table
_BUCKETS_PER_SUM = 1


@njit(cache=True, inline="always", error_model="numpy")
def _bucket(x, lo, scale, top):
    """Monotone bucket index of x in [0, top]; the same function builds and queries the table."""
    return np.int32(min(max((x - lo) * scale, 0.0), top))


@njit(cache=True, inline="always", error_model="numpy")
def _imin(a, b):
    return b ^ ((a ^ b) & -np.int64(a < b))


@njit(cache=True, error_model="numpy")
def _build_table(s, size, table, kb):
    """table[k] = first position p in s[1:size+1] with bucket(s[p]) >= k (size + 1 if none).

    ``table`` has nb + 1 entries with nb a multiple of 4.  Buckets of the sorted sums in a vectorised
    pass, a scatter (descending, so the first position of each bucket wins), then empty buckets take
    the next non-empty one's position: a suffix minimum run as four interleaved branch-free chains
    over the four quarters, then each quarter is capped by the minimum of the quarters above it.
    """
    nb = table.shape[0] - 1
    lo = s[1]
    span = s[size] - lo
    scale = nb / span if span > 0.0 else 0.0
    if not scale < 1e300:  # a subnormal span
        scale = 0.0
    top = nb - 1.0
    past = size + 1
    for p in range(1, size + 1):  # vectorised
        kb[p] = _bucket(s[p], lo, scale, top)
    for k in range(nb + 1):
        table[k] = past
    # unsigned indices: numba adds a negative-index wrap-around select to every signed one, which
    # here costs more than the store itself
    one = np.uint64(1)
    p = np.uint64(size)
    while p > 0:
        table[np.uint64(kb[p])] = np.int32(p)
        p -= one
    q = np.uint64(nb >> 2)
    q2 = q + q
    q3 = q2 + q
    c0 = past
    c1 = past
    c2 = past
    c3 = past
    k = q
    while k > 0:
        k -= one
        c0 = _imin(c0, np.int64(table[k]))
        table[k] = c0
        c1 = _imin(c1, np.int64(table[k + q]))
        table[k + q] = c1
        c2 = _imin(c2, np.int64(table[k + q2]))
        table[k + q2] = c2
        c3 = _imin(c3, np.int64(table[k + q3]))
        table[k + q3] = c3
    c2 = _imin(c2, c3)
    c1 = _imin(c1, c2)
    for k in range(q2, q3):
        table[k] = _imin(np.int64(table[k]), c3)
    for k in range(q, q2):
        table[k] = _imin(np.int64(table[k]), c2)
    for k in range(q):
        table[k] = _imin(np.int64(table[k]), c1)
    return lo, scale, top


@njit(cache=True, error_model="numpy")
def _query_sums(vals, start, count, q):
    """Unsorted subset sums of ``vals[start:start+count]`` by doubling: q[mask] = sum (left to right)."""
    q[0] = 0.0
    size = 1
    for e in range(count):
        v = vals[start + e]
        for k in range(size):
            q[size + k] = q[k] + v
        size *= 2


@njit(cache=True, inline="always", error_model="numpy")
def _query_sums_inl(vals, start, count, q):
    """:func:`_query_sums` inlined (in :func:`_resolve` a call would add an exit: see there)."""
    q[0] = 0.0
    size = 1
    for e in range(count):
        v = vals[start + e]
        for k in range(size):
            q[size + k] = q[k] + v
        size *= 2


@njit(cache=True, error_model="numpy")
def _fill_rank(count, rank):
    """rank[mask] = popcount(mask) * 2^count + mask: (fewest elements, then smallest mask) as one integer."""
    for m in range(1 << count):
        rank[m] = (_popcount(np.int64(m)) << count) + m


@njit(cache=True, inline="always", error_model="numpy")
def _fewest_mask(d, rank, count, value):
    """Fewest-element mask (then the smallest) among the masks whose sum d[mask] is exactly ``value``."""
    best = _IMAX
    for m in range(1 << count):  # vectorised: compare, select, integer min
        r = rank[m] if d[m] == value else _IMAX
        best = min(best, r)
    return best & ((np.int64(1) << count) - 1)


@njit(cache=True, inline="always", error_model="numpy")
def _first_above(s, table, k, r):
    """First position p with s[p] > r, from p0 = table[k] (a lower bound; s[p0 - 1] <= r)."""
    one = np.uint64(1)
    p0 = np.uint64(table[np.uint64(k)])
    # three independent loads instead of a chain; s is sorted, so the count is the offset
    c = np.uint64(s[p0] <= r) + np.uint64(s[p0 + one] <= r) + np.uint64(s[p0 + np.uint64(2)] <= r)
    p = p0 + c
    if c == np.uint64(3):  # rare: a crowded bucket
        while s[p] <= r:
            p += one
    return p


@njit(cache=True, error_model="numpy")
def _search_min(q, nq, s, table, lo, scale, top, t, kq, eb, bmin, blk):
    """Minimal error E over all pairs (and the empty subset); eb[i] = query i's best error, bmin its
    block minimum.  Queries are independent: no best-so-far comparison in the loop, only a running min."""
    for i in range(nq):  # bucket of r = t - q_i: a separate pass, vectorised
        kq[i] = _bucket(t - q[i], lo, scale, top)
    E = abs(t)  # the empty subset
    one = np.uint64(1)
    ublk = np.uint64(blk)
    for j in range(nq // blk):
        bm = np.inf
        i = np.uint64(j) * ublk  # unsigned: no wrap-around select per index (about 12% here)
        end = i + ublk
        while i < end:
            x = q[i]
            r = t - x
            p = _first_above(s, table, kq[i], r)
            # s[0] = -inf gives inf, never chosen; so does s[size+1] = inf
            e = min(abs((x + s[p - one]) - t), abs((x + s[p]) - t))
            eb[i] = e
            bm = min(bm, e)
            i += one
        bmin[j] = bm
        E = min(E, bm)
    return E


# per row, at most this many fewest-mask look-ups (each O(2^b)); beyond, the masked merge is run once
_MAX_LOOKUPS = 8


@njit(cache=True, error_model="numpy")
def _masks_into(vals, count, s2, m, tm, key, tkey, shifted):
    """:func:`_sorted_sums` of ``vals[:count]`` with the masks left in ``m``, whichever buffer the merges
    ended in."""
    size, res = _sorted_sums(vals, 0, count, s2, m, tm, key, tkey, shifted)
    if count & 1:  # an odd number of merges ends in tm
        for k in range(size + 2):
            m[k] = res[k]


@njit(cache=True, error_model="numpy")
def _resolve(vals, b, q, nq, s, table, lo, scale, top, t, E, eb, bmin, blk, d, rank, ms, max_lookups, has_ms):
    """Among the pairs with error exactly E: fewest elements, then the first query index, then the
    lower candidate -- the order of a sequential scan.  Returns ``(mask_q, mask_s, done)``.

    Masks of sorted-half sums are found only here: the first ``max_lookups`` by value among the 2^b
    doubling sums (``d``; ``rank`` from :func:`_fill_rank`), the rest, with ``has_ms``, at the same
    positions in ``ms`` (the masks of :func:`_sorted_sums`).  Without ``has_ms`` a row that needs more
    look-ups returns ``done = False`` (its answer unused): the caller fills ``ms`` with one masked merge
    (:func:`_masks_into`) and calls again with ``has_ms`` -- the masks of the previous single pass.

    Warm speed: numba increfs each array argument on entry and decrefs it on exit, and LLVM's refcount
    pruning removes such a pair only if the decref post-dominates the incref with no other decref in
    between.  So nothing here may add an exit: no non-inlined njit call (its error check is a return
    path), no ``return`` or ``break`` out of the scan, no array variable bound to a new value.  With
    the masked merge called from here (as before) 15 pairs stayed: 30 atomic operations per row,
    about 0.2 us, a fifth of a row at n = 12."""
    best_c = 1 << 30
    best_q = np.int64(0)
    best_s = np.int64(0)
    done = True
    if E < abs(t):  # else the empty subset (error |t|, no elements) wins: no tie beats it
        filled = False
        lookups = 0
        one = np.uint64(1)
        for j in range(nq // blk):
            if bmin[j] != E:
                continue
            for i in range(j * blk, j * blk + blk):
                if eb[i] != E:
                    continue
                x = q[i]
                r = t - x
                p = _first_above(s, table, _bucket(r, lo, scale, top), r)
                cq = _popcount(np.int64(i))
                for w in range(2):
                    cand = p - one + np.uint64(w)
                    if abs((x + s[cand]) - t) != E:
                        continue
                    if lookups < max_lookups:
                        if not filled:
                            _query_sums_inl(vals, 0, b, d)
                            filled = True
                        mask = _fewest_mask(d, rank, b, s[cand])
                        lookups += 1
                    elif has_ms:
                        mask = ms[cand]
                    else:  # the scan runs on (no early exit: see above), its answer is not used
                        done = False
                        mask = np.int64(0)
                    c = cq + _popcount(mask)
                    if c < best_c:
                        best_c = c
                        best_q = np.int64(i)
                        best_s = mask
    return best_q, best_s, done


@njit(cache=True, error_model="numpy")
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


@njit(cache=True, error_model="numpy")
def _shared_setup(values):
    """The target-independent half of :func:`solve_shared`: the sorted half's sums with their masks, its
    bucket table and the query half's sums.  Returns ``(s, ms, table, t_lo, scale, top, q)``."""
    n = values.shape[0]
    b = n // 2
    a = n - b
    cap = (1 << b) + 4
    s = np.empty(cap)
    size, ms = _sorted_sums(values, 0, b, s, np.empty(cap, np.int64), np.empty(cap, np.int64),
                           np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int64))
    for k in range(size + 1, size + 4):
        s[k] = np.inf
    table = np.empty(max(4, _BUCKETS_PER_SUM << b) + 1, np.int32)
    t_lo, scale, top = _build_table(s, size, table, np.empty(cap, np.int32))
    q = np.empty(1 << a)
    _query_sums(values, b, a, q)
    return s, ms, table, t_lo, scale, top, q


@njit(cache=True, error_model="numpy")
def _shared_chunk(values, targets, lo, hi, s, ms, table, t_lo, scale, top, q, out_mask, out_err, out_sum):
    """:func:`solve_shared` on targets ``lo:hi``."""
    n = values.shape[0]
    b = n // 2
    nq = q.shape[0]
    blk = min(32, nq)
    kq = np.empty(nq, np.int32)
    eb = np.empty(nq)
    bmin = np.empty(nq // blk)
    dummy = np.empty(1)
    idummy = np.empty(1, np.int64)
    for row in range(lo, hi):
        t = targets[row]
        E = _search_min(q, nq, s, table, t_lo, scale, top, t, kq, eb, bmin, blk)
        mq, mss, _ = _resolve(values, b, q, nq, s, table, t_lo, scale, top, t, E, eb, bmin, blk, dummy, idummy, ms,
                              0, True)
        _write_row(out_mask, out_err, out_sum, row, values, b, n, E, mss, mq)


@njit(cache=True, parallel=True)
def solve_shared(values, targets, chunks, out_mask, out_err, out_sum):
    """Minimal-error subset of one shared value vector (n,) for every target."""
    rows = targets.shape[0]
    s, ms, table, t_lo, scale, top, q = _shared_setup(values)
    per = (rows + chunks - 1) // chunks
    for c in prange(chunks):
        lo = c * per
        hi = min(rows, lo + per)
        if lo < hi:
            _shared_chunk(values, targets, lo, hi, s, ms, table, t_lo, scale, top, q, out_mask, out_err, out_sum)


@njit(cache=True, error_model="numpy")
def _popcount_order(count):
    """The masks 0 .. 2^count - 1 grouped by popcount (ascending within a group) and group offsets."""
    nm = 1 << count
    off = np.zeros(count + 2, np.int64)
    for mm in range(nm):
        off[_popcount(mm) + 1] += 1
    for c in range(count + 1):
        off[c + 1] += off[c]
    order = np.empty(nm, np.int64)
    fill = off.copy()
    for mm in range(nm):
        c = _popcount(mm)
        order[fill[c]] = mm
        fill[c] += 1
    return order, off


@njit(cache=True, error_model="numpy")
def _direct_max_count(n, b):
    """Largest K with sum_{k <= K} C(n, k) <= 16 * 2^b: subsets up to K elements are enumerated directly."""
    budget = 16 << b
    total = 0
    binom = 1
    for k in range(n + 1):
        total += binom
        if total > budget:
            return k - 1
        binom = binom * (n - k) // (k + 1)
    return n


@njit(cache=True, inline="always", error_model="numpy")
def _min_err_run(x, gs, lo, hi, t):
    """min over j in [lo, hi) of |(x + gs[j]) - t|, with four independent accumulators."""
    m0 = np.inf
    m1 = np.inf
    m2 = np.inf
    m3 = np.inf
    j = lo
    while j + 4 <= hi:
        m0 = min(m0, abs((x + gs[j]) - t))
        m1 = min(m1, abs((x + gs[j + 1]) - t))
        m2 = min(m2, abs((x + gs[j + 2]) - t))
        m3 = min(m3, abs((x + gs[j + 3]) - t))
        j += 4
    while j < hi:
        m0 = min(m0, abs((x + gs[j]) - t))
        j += 1
    return min(min(m0, m1), min(m2, m3))


@njit(cache=True, error_model="numpy")
def _sparsest_direct(q, d, gsb, ord_a, off_a, ord_b, off_b, a, b, kmax, t, eps):
    """Fewest elements with error <= eps among subsets of at most ``kmax`` elements, by enumerating
    every pair (query-half subset with c_q elements, sorted-half subset with k - c_q) for k = 0, 1, ...
    and stopping at the first k with a feasible pair; among those the smallest error (ties: first in
    enumeration order).  Returns (found, err, mask_q, mask_s)."""
    nsb = off_b[min(kmax, b) + 1]
    for j in range(nsb):
        gsb[j] = d[ord_b[j]]
    # one exit (a return or break inside the loop kept LLVM from pruning the refcount operations on the
    # seven array arguments: 14 atomic operations per row)
    found = False
    res_e = np.inf
    res_q = np.int64(0)
    res_s = np.int64(0)
    k = 0
    while k <= kmax and not found:
        best_e = np.inf
        best_q = np.int64(0)
        best_s = np.int64(0)
        for cq in range(max(0, k - b), min(k, a) + 1):
            cs = k - cq
            s_lo = off_b[cs]
            s_hi = off_b[cs + 1]
            for ii in range(off_a[cq], off_a[cq + 1]):
                mq = ord_a[ii]
                x = q[mq]
                e = _min_err_run(x, gsb, s_lo, s_hi, t)
                if e <= eps and e < best_e:
                    for j in range(s_lo, s_hi):
                        if abs((x + gsb[j]) - t) == e:
                            best_s = ord_b[j]
                            break
                    best_e = e
                    best_q = mq
        if best_e <= eps:
            found = True
            res_e = best_e
            res_q = best_q
            res_s = best_s
        k += 1
    return found, res_e, res_q, res_s


@njit(cache=True, error_model="numpy")
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


@njit(cache=True, error_model="numpy")
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


@njit(cache=True, error_model="numpy")
def _chunk(values, targets, eps, sparsest, lo, hi, out_mask, out_err, out_sum, out_feasible):
    """Rows ``lo:hi`` of :func:`solve_batch`; scratch buffers allocated once for the chunk.

    One function serves both searches (the minimal-error one is a part of the sparsest one), so a
    process that needs both compiles that part once."""
    n = values.shape[1]
    b = n // 2
    a = n - b
    cap_s = (1 << b) + 4
    cap_q = (1 << a) + 4
    cap_k = cap_q if sparsest else cap_s  # the merge buffers sort the query half only in the sparsest search
    cap_x = cap_s if sparsest else 1  # buffers of the sparsest search alone
    cap_y = cap_q if sparsest else 1
    nq = 1 << a
    blk = min(32, nq)
    ntab = max(4, _BUCKETS_PER_SUM << b) + 1
    kmax = _direct_max_count(n, b)
    ord_a, off_a = _popcount_order(a if sparsest else 0)
    ord_b, off_b = _popcount_order(b if sparsest else 0)
    q = np.empty(nq)
    d = np.empty(1 << b)
    rank = np.empty(1 << b, np.int64)
    _fill_rank(b, rank)
    gsb = np.empty(cap_x)
    s = np.empty(cap_s)
    kb = np.empty(cap_s, np.int32)
    table = np.empty(ntab, np.int32)
    kq = np.empty(nq, np.int32)
    eb = np.empty(nq)
    bmin = np.empty(nq // blk)
    key = np.empty(cap_k, np.int64)
    tkey = np.empty(cap_k, np.int64)
    shifted = np.empty(cap_k, np.int64)
    s2 = np.empty(cap_s)
    m = np.empty(cap_s, np.int64)
    tm_s = np.empty(cap_s, np.int64)
    sq = np.empty(cap_y)
    m2 = np.empty(cap_y, np.int64)
    tm = np.empty(cap_y, np.int64)
    gs = np.empty(cap_x)
    gm = np.empty(cap_x, np.int64)
    offsets = np.empty(b + 2, np.int64)
    ptr = np.empty(b + 1, np.int64)
    for row in range(lo, hi):
        v = values[row]
        t = targets[row]
        _query_sums(v, b, a, q)
        ok = False
        err = np.inf
        ep = np.inf
        bq = np.int64(0)
        bs = np.int64(0)
        if sparsest:
            ep = eps[row]
            _query_sums(v, 0, b, d)
            ok, err, bq, bs = _sparsest_direct(q, d, gsb, ord_a, off_a, ord_b, off_b, a, b, kmax, t, ep)
        if not ok:
            size = _sorted_values(v, 0, b, key, tkey, shifted, s)
            t_lo, scale, top = _build_table(s, size, table, kb)
            err = _search_min(q, nq, s, table, t_lo, scale, top, t, kq, eb, bmin, blk)
            if sparsest and err <= ep:
                # an answer with more than kmax elements: the general search
                size_s, ms = _sorted_sums(v, 0, b, s2, m, tm_s, key, tkey, shifted)
                _group_by_count(s2, ms, size_s, b, gs, gm, offsets)
                size_q, mq = _sorted_sums(v, b, a, sq, m2, tm, key, tkey, shifted)
                ok, err, bq, bs = _search_sparsest(sq, mq, size_q, gs, gm, offsets, b, ptr, t, ep)
            else:
                bq, bs, done = _resolve(v, b, q, nq, s, table, t_lo, scale, top, t, err, eb, bmin, blk, d, rank, m,
                                        _MAX_LOOKUPS, False)
                if not done:  # many exact ties: their masks from one masked merge
                    _masks_into(v, b, s2, m, tm_s, key, tkey, shifted)
                    bq, bs, done = _resolve(v, b, q, nq, s, table, t_lo, scale, top, t, err, eb, bmin, blk, d, rank, m,
                                            _MAX_LOOKUPS, True)
        if sparsest:
            out_feasible[row] = ok
        _write_row(out_mask, out_err, out_sum, row, v, b, n, err, bs, bq)


@njit(cache=True, parallel=True)
def solve_batch(values, targets, eps, sparsest, chunks, out_mask, out_err, out_sum, out_feasible):
    """Per row of ``values`` (B, n) with its own target: with ``sparsest`` False the minimal-error subset
    (ties -> fewest elements; ``eps`` and ``out_feasible`` are not read or written), else the fewest
    elements with error <= eps[row]; infeasible rows get the minimal-error subset.

    Sparsest search:

    1. Subsets of at most K elements (K from :func:`_direct_max_count`; 4 at n = 12 .. 20) are
       enumerated directly by increasing cardinality, stopping at the first feasible one.
    2. Otherwise the minimal error: rows where it exceeds eps are infeasible and carry that subset; the
       rest (answers with more than K elements) run the general search (:func:`_search_sparsest` over
       both halves sorted, the sorted half grouped by cardinality).
    """
    rows = values.shape[0]
    per = (rows + chunks - 1) // chunks
    for c in prange(chunks):
        lo = c * per
        hi = min(rows, lo + per)
        if lo < hi:
            _chunk(values, targets, eps, sparsest, lo, hi, out_mask, out_err, out_sum, out_feasible)
