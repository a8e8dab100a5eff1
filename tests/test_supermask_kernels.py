"""The supermask CPU kernels against brute-force references: the banded exact top-k threshold (over
sequences of moving scores, so the band both hits and misses), the fused masked weight with ties, and the
straight-through gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slth.supermask import core

torch.set_num_threads(1)


def _reference_mask(values: np.ndarray, k: int) -> np.ndarray:
    """Top-k of ``values``, ties kept in index order: a stable sort by (-value, index)."""
    order = sorted(range(len(values)), key=lambda i: (-float(values[i]), i))
    mask = np.zeros(len(values), dtype=bool)
    mask[order[:k]] = True
    return mask


@st.composite
def score_sequences(draw):
    n = draw(st.integers(1, 300))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    grid = draw(st.sampled_from([0, 4, 64]))  # 0: continuous; otherwise values on a coarse grid (many ties)
    seed = draw(st.integers(0, 2**32 - 1))
    steps = draw(st.integers(1, 6))
    moves = draw(st.lists(st.sampled_from([0.0, 1e-6, 1e-3, 0.1, 3.0]), min_size=steps, max_size=steps))
    k = draw(st.integers(1, n))
    return n, dtype, grid, seed, moves, k


def _sequence(n, dtype, grid, seed, moves):
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal(n)
    for move in moves:
        scores = scores + move * rng.standard_normal(n)
        values = np.round(scores * grid) / grid if grid else scores
        yield values.astype(dtype)


@settings(max_examples=150, deadline=None)
@given(score_sequences())
def test_tracked_topk_and_masked_weight_equal_brute_force(case):
    n, dtype, grid, seed, moves, k = case
    weight = np.random.default_rng(seed + 1).standard_normal(n).astype(dtype)
    w = torch.from_numpy(weight)
    tracker_mask, state = core.ThresholdTracker(), core.KernelState()
    for values in _sequence(n, dtype, grid, seed, moves):
        s = torch.from_numpy(values)
        expected = _reference_mask(values, k)
        got = core.topk_mask(s, k, tracker=tracker_mask).numpy()
        assert np.array_equal(got, expected)
        expected_abs = _reference_mask(np.abs(values), k)
        fused = core.MaskedWeight.apply(w, s, k, state).numpy()
        assert np.array_equal(fused, weight * expected_abs)
        assert np.count_nonzero(fused != 0) <= k


def test_tracker_threshold_is_the_kth_largest_while_the_band_adapts():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal(50_000).astype(np.float32)
    tracker = core.ThresholdTracker()
    hits = 0
    for step in range(40):
        scores += (0.3 if step % 13 == 12 else 1e-4) * rng.standard_normal(scores.shape).astype(np.float32)
        center_before = tracker.center
        thr = tracker.threshold(scores, 20_000, absolute=True)
        assert thr == np.sort(np.abs(scores))[-20_000]
        hits += center_before is not None and abs(thr - center_before) <= tracker.width
    assert hits >= 25  # the band is doing its job: most steps select within it


def test_the_band_follows_a_drifting_threshold_narrowly():
    """Under weight decay the scores shrink every step and the threshold falls by about the same amount:
    the band is centred on the predicted threshold, so it stays narrow (few values to revisit) and hits.
    Centred on the last threshold instead, it held about 1,000 values here (each a second look at its block)."""
    rng = np.random.default_rng(0)
    n, k = 50_000, 20_000
    scores = rng.standard_normal(n).astype(np.float32)
    tracker = core.ThresholdTracker()
    population, hits = [], 0
    for _step in range(60):
        scores = scores * np.float32(0.995) + np.float32(1e-4) * rng.standard_normal(n).astype(np.float32)
        center, width = tracker.center, tracker.width
        if center is not None:
            population.append(int(np.count_nonzero(np.abs(np.abs(scores) - center) <= width)))
        thr = tracker.threshold(scores, k, absolute=True)
        assert thr == np.sort(np.abs(scores))[-k]
        hits += center is not None and abs(thr - center) <= width
    assert hits >= 55
    assert np.median(population[-30:]) < 300


def test_nan_scores_are_refused_inside_the_predicted_band_and_on_the_torch_path():
    good = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    bad = good.clone()
    bad[10] = float("nan")
    tracker = core.ThresholdTracker()
    core.topk_mask(good, 300, tracker=tracker)  # predicts a band that holds the next threshold
    with pytest.raises(ValueError, match="cannot rank scores that contain NaN"):
        core.topk_mask(bad, 300, tracker=tracker)
    for dtype in (torch.bfloat16, torch.float16):  # no numba kernel: torch's kthvalue would rank NaN
        with pytest.raises(ValueError, match="cannot rank scores that contain NaN"):
            core.topk_mask(bad.to(dtype), 300)


def test_nan_scores_are_refused_on_every_path():
    state = core.KernelState()
    s = torch.tensor([0.5, -1.0, 2.0, 0.1])
    w = torch.ones(4)
    core.MaskedWeight.apply(w, s, 2, state)  # sets a band
    bad = torch.tensor([0.5, float("nan"), 2.0, 0.1])
    with pytest.raises(ValueError, match="NaN"):
        core.MaskedWeight.apply(w, bad, 2, state)
    with pytest.raises(ValueError, match="NaN"):
        core.topk_mask(bad, 2, tracker=core.ThresholdTracker())
    with pytest.raises(ValueError, match="NaN"):
        core.MaskedWeight.apply(w, bad, 2)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 200), st.integers(0, 2**32 - 1), st.sampled_from([torch.float32, torch.float64]))
def test_fused_gradients_match_autograd_of_the_unfused_reference(n, seed, dtype):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(n, generator=gen, dtype=dtype)
    grad = torch.randn(n, generator=gen, dtype=dtype)
    scores = torch.randn(n, generator=gen, dtype=dtype)
    scores[0] = 0.0  # sign(0) = 0 on both paths
    k = 1 + seed % n
    ref_s = scores.clone().requires_grad_(True)
    (weight * core.GetSubnet.apply(ref_s.abs(), k) * grad).sum().backward()
    fused_s = scores.clone().requires_grad_(True)
    (core.MaskedWeight.apply(weight, fused_s, k) * grad).sum().backward()
    assert torch.equal(ref_s.grad, fused_s.grad)
    from slth.supermask.methods import binarized_weight

    ref_b = scores.clone().requires_grad_(True)
    reference = binarized_weight(weight, core.GetSubnet.apply(ref_b.abs(), k), k)
    fused_b = scores.clone().requires_grad_(True)
    fused = core.BinarizedWeight.apply(weight, fused_b, k)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.equal(reference != 0, fused != 0)  # the same kept weights
    assert torch.allclose(reference, fused, rtol=tol, atol=0)
    (reference * grad).sum().backward()
    (fused * grad).sum().backward()
    assert torch.allclose(ref_b.grad, fused_b.grad, rtol=tol, atol=tol)


def test_tracker_survives_infinite_thresholds():
    tracker = core.ThresholdTracker()
    values = torch.tensor([0.5, -float("inf"), 0.2, -float("inf")])
    for _ in range(3):  # the k-th largest is -inf: no band is kept, every call is exact
        assert core.topk_mask(values, 3, tracker=tracker).tolist() == [True, True, True, False]
    assert core.topk_mask(torch.tensor([0.5, 0.1, 0.2, 0.3]), 2, tracker=tracker).tolist() == [True, False, False, True]


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 200), st.integers(0, 2**32 - 1), st.sampled_from([torch.float32, torch.float64]))
def test_biprop_on_a_signed_constant_weight_matches_the_unfused_reference(n, seed, dtype):
    """Every |w| = c: the fused forward is edge-popup's W * m (alpha = c exactly) and the backward pass
    reads sign(w) and m from that output; both agree with autograd of the unfused formula."""
    from slth.supermask.methods import binarized_weight

    gen = torch.Generator().manual_seed(seed)
    c = float(torch.rand((), generator=gen)) + 0.01
    weight = (torch.randint(0, 2, (n,), generator=gen) * 2 - 1).to(dtype) * c
    grad = torch.randn(n, generator=gen, dtype=dtype)
    scores = torch.randn(n, generator=gen, dtype=dtype)
    scores[0] = 0.0
    k = 1 + seed % n
    state = core.KernelState()
    assert state.magnitude(weight) == abs(float(weight[0]))
    ref_s = scores.clone().requires_grad_(True)
    reference = binarized_weight(weight, core.GetSubnet.apply(ref_s.abs(), k), k)
    fused_s = scores.clone().requires_grad_(True)
    fused = core.BinarizedWeight.apply(weight, fused_s, k, state)
    assert torch.equal(fused, weight * core.topk_mask(scores.abs(), k, dtype=dtype))  # edge-popup's W * m
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(reference, fused, rtol=tol, atol=0)
    (reference * grad).sum().backward()
    (fused * grad).sum().backward()
    assert torch.allclose(ref_s.grad, fused_s.grad, rtol=tol, atol=tol)


def test_signed_constant_detection_follows_in_place_changes():
    weight = torch.tensor([0.5, -0.5, 0.5, -0.5])
    scores = torch.tensor([0.4, -0.3, 0.2, 0.1], requires_grad=True)
    state = core.KernelState()
    core.BinarizedWeight.apply(weight, scores, 2, state)
    assert state.magnitude(weight) == 0.5
    with torch.no_grad():
        weight[3] = -2.0  # bumps the version counter: the cache must notice
    assert state.magnitude(weight) == 0.0
    from slth.supermask.methods import binarized_weight

    fused = core.BinarizedWeight.apply(weight, scores, 2, state)
    mask = core.topk_mask(scores.detach().abs(), 2, dtype=weight.dtype)
    assert torch.allclose(fused, binarized_weight(weight, mask, 2))
    assert state.magnitude(torch.zeros(3)) == 0.0 and state.magnitude(torch.tensor([1.0, float("inf")])) == 0.0


@pytest.mark.parametrize("fn", [core.MaskedWeight, core.BinarizedWeight])
def test_reused_buffers_never_overwrite_an_output_still_held(fn):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(40, 30, generator=gen)
    scores = torch.randn(40, 30, generator=gen, requires_grad=True)
    state = core.KernelState()
    first = fn.apply(weight, scores, 600, state)
    kept_first = first.clone()
    first.sum().backward()
    grad_first = scores.grad
    kept_grad = grad_first.clone()
    with torch.no_grad():
        scores.mul_(-1.0).add_(torch.randn(40, 30, generator=gen))
    scores.grad = None
    second = fn.apply(weight, scores, 600, state)
    (second * 2).sum().backward()
    assert torch.equal(first, kept_first) and torch.equal(grad_first, kept_grad)  # still what they were
    assert first.data_ptr() != second.data_ptr() and grad_first.data_ptr() != scores.grad.data_ptr()
    del first, grad_first, second
    scores.grad = None
    third = fn.apply(weight, scores, 600, state)  # the released arrays are handed out again
    assert third.data_ptr() in {a.ctypes.data for a in state.pool._arrays["weight"]}


@pytest.mark.parametrize("fn", [core.MaskedWeight, core.BinarizedWeight])
def test_a_retained_graph_gives_correct_gradients_twice_and_in_place_edits_are_caught(fn):
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(50, generator=gen)
    scores = torch.randn(50, generator=gen, requires_grad=True)
    g1, g2 = torch.randn(50, generator=gen), torch.randn(50, generator=gen)
    expected = []
    for g in (g1, g2):
        s = scores.detach().clone().requires_grad_(True)
        fn.apply(weight, s, 20, core.KernelState()).backward(g)
        expected.append(s.grad)
    out = fn.apply(weight, scores, 20, core.KernelState())
    out.backward(g1, retain_graph=True)
    assert torch.allclose(scores.grad, expected[0])
    out.backward(g2)  # through the retained graph: must not overwrite the first gradient's array
    assert torch.allclose(scores.grad, expected[0] + expected[1], rtol=1e-6, atol=1e-7)
    out = fn.apply(weight, scores, 20, core.KernelState())
    with torch.no_grad():
        scores.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 200), st.integers(0, 2**32 - 1), st.sampled_from([torch.float32, torch.float64]))
def test_gem_miner_fused_weight_and_regulariser_match_the_unfused_reference(n, seed, dtype):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(n, generator=gen, dtype=dtype)
    scores = torch.rand(n, generator=gen, dtype=dtype)
    scores[0] = 0.5  # exactly at the rounding threshold: off on both paths
    alive = torch.rand(n, generator=gen) < 0.7
    grad = torch.randn(n, generator=gen, dtype=dtype)
    ref_s = scores.clone().requires_grad_(True)
    reference = weight * (core.StraightThroughRound.apply(ref_s) * alive)
    state = core.KernelState()
    fused_s = scores.clone().requires_grad_(True)
    fused = core.RoundedMaskedWeight.apply(weight, fused_s, alive, state)
    assert torch.equal(reference, fused) and torch.equal(reference.signbit(), fused.signbit())
    assert state.last_count[1] == int(((scores > 0.5) & alive).sum())
    (reference * grad).sum().backward()
    (fused * grad).sum().backward()
    assert torch.equal(ref_s.grad, fused_s.grad)
    ref_s.grad = fused_s.grad = None
    ref_l2 = 1e-3 * (ref_s * alive).pow(2).sum()
    fused_l2 = core.AliveSquareSum.apply(fused_s, alive, 1e-3, state)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(ref_l2, fused_l2, rtol=tol)
    (3.0 * ref_l2).backward()
    (3.0 * fused_l2).backward()
    assert torch.equal(ref_s.grad, fused_s.grad)


def test_gem_miner_regulariser_switches_off_at_the_target_and_counts_fresh_after_a_step():
    from slth.supermask.methods import GemMiner

    gm = GemMiner(torch.Size([10, 10]), 0.5, torch.linspace(0.0, 1.0, 100), score_l2=1e-2).train()
    weight = torch.ones(10, 10)
    gm(weight)  # forward: 50 of the 100 linspace scores are above 0.5, k = 50
    assert gm.regularization() == 0.0
    with torch.no_grad():
        gm.scores.add_(0.2)  # an optimizer step between forward and regularization: the count is redone
    reg = gm.regularization()
    assert isinstance(reg, torch.Tensor)
    assert torch.allclose(reg, 1e-2 * gm.scores.detach().pow(2).sum())


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.int32 if a.dtype == np.float32 else np.int64)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 700), st.integers(1, 5), st.integers(0, 2**32 - 1), st.sampled_from([np.float32, np.float64]),
       st.sampled_from([0, 4]), st.sampled_from([0.0, 0.05, 0.3, 1.0]))
def test_parallel_kernels_equal_the_serial_ones_bit_for_bit(n, chunks, seed, dtype, grid, band):
    """Every ``*_parallel`` kernel splits its serial kernel's loops into contiguous chunks: the same outputs
    (signed zeros included), counts and statuses, for any number of chunks, on tails shorter than a block,
    with ties (values on a coarse grid), a NaN, and bands that hit, miss or hold everything."""
    from slth.supermask import _kernels as kernels

    rng = np.random.default_rng(seed)
    scores = rng.standard_normal(n)
    if grid:
        scores = np.round(scores * grid) / grid
    scores = scores.astype(dtype)
    if seed % 7 == 0:
        scores[seed % n] = np.nan
    weight = (rng.standard_normal(n) * (rng.random(n) < 0.9)).astype(dtype)
    grad = rng.standard_normal(n).astype(dtype)
    k = 1 + seed % n
    magnitude = np.sort(np.abs(scores[~np.isnan(scores)]))
    center = magnitude[len(magnitude) // 2] if len(magnitude) else 0.0
    width = band * (magnitude[-1] - magnitude[0] if len(magnitude) else 1.0)
    lo, hi = float(center - width), float(center + width)
    outs, idx = [np.full(n, 7.0, dtype) for _ in range(2)], [np.zeros(n, np.int64) for _ in range(2)]
    a = kernels.masked_weight_banded(weight, scores, k, lo, hi, idx[0], outs[0])
    b = kernels.masked_weight_banded_parallel(weight, scores, k, lo, hi, idx[1], outs[1], chunks)
    assert a[0] == b[0] and a[2] == b[2]  # status and band size
    assert a[0] != 0 or _bits(np.array([a[1]], dtype)) == _bits(np.array([b[1]], dtype))  # the threshold
    if a[0] == 0:  # done: the whole output is defined
        assert np.array_equal(_bits(outs[0]), _bits(outs[1]))
    assert np.array_equal(idx[0][: a[2]], idx[1][: b[2]])  # the band's indices, in index order
    clean = np.nan_to_num(scores)
    for serial, parallel, args in (
            (kernels.abs_straight_through_grad, kernels.abs_straight_through_grad_parallel, (grad, weight, clean)),
            (kernels.alive_straight_through_grad, kernels.alive_straight_through_grad_parallel,
             (grad, weight, rng.random(n) < 0.7)),
            (kernels.product, kernels.product_parallel, (grad, weight))):
        one, many = np.empty(n, dtype), np.empty(n, dtype)
        serial(*args, one)
        parallel(*args, many, chunks)
        assert np.array_equal(_bits(one), _bits(many))
    effective = (np.sign(weight) * dtype(0.05)) * (rng.random(n) < 0.5)  # biprop's signed-constant W * m
    one, many = np.empty(n, dtype), np.empty(n, dtype)
    kernels.constant_binarized_grad(grad, effective, clean, 0.05, k, one)
    kernels.constant_binarized_grad(grad, effective, clean, 0.05, k, many, chunks)
    assert np.array_equal(_bits(one), _bits(many))
    alive = rng.random(n) < 0.8
    relaxed = rng.random(n).astype(dtype)
    one, many = np.empty(n, dtype), np.empty(n, dtype)
    assert kernels.rounded_masked_weight(weight, relaxed, alive, one) == \
        kernels.rounded_masked_weight_parallel(weight, relaxed, alive, many, chunks)
    assert np.array_equal(_bits(one), _bits(many))


def _patched_parallel_kernels(monkeypatch) -> list[str]:
    """Record every call of the parallel kernels (the names of those that ran)."""
    from slth.supermask import _kernels as kernels

    calls: list[str] = []
    for name in ("masked_weight_banded_parallel", "abs_straight_through_grad_parallel",
                 "rounded_masked_weight_parallel", "alive_straight_through_grad_parallel",
                 "_constant_binarized_apply_parallel"):
        kernel = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _k=kernel, _n=name: calls.append(_n) or _k(*a))
    return calls


def _train_steps(method: str, torch_threads: int, chunks: int | None = None) -> list[torch.Tensor]:
    """Four SGD steps of a 300-256-10 supermask net (its first layer is large enough for the parallel kernels):
    the trained tensors and the output. ``torch_threads``: torch's intra-op threads; ``chunks``: if given, the
    number of chunks (and threads, up to numba's pool) slth's kernels run large layers on, instead of the
    number torch's thread count gives."""
    from slth.supermask import apply_supermask
    from slth.supermask.methods import SupermaskConfig

    x = torch.randn(32, 300, generator=torch.Generator().manual_seed(0))
    before, kernel_threads = torch.get_num_threads(), core.kernel_threads
    if chunks is not None:
        core.kernel_threads = lambda n: 1 if n < core.PARALLEL_MIN else chunks
    torch.set_num_threads(torch_threads)
    try:
        net = apply_supermask(torch.nn.Sequential(torch.nn.Linear(300, 256), torch.nn.ReLU(),
                                                  torch.nn.Linear(256, 10)), SupermaskConfig(method=method), 0)
        opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5, momentum=0.9)
        for _ in range(4):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
        return [p.detach().clone() for p in net.parameters()] + [net(x).detach()]
    finally:
        torch.set_num_threads(before)
        core.kernel_threads = kernel_threads


def test_large_layers_run_their_kernels_on_torch_s_thread_count():
    """Layers of at least PARALLEL_MIN weights run their kernels on torch's thread count (capped at numba's
    pool), small ones on one."""
    from slth.supermask import _kernels as kernels

    assert core.kernel_threads(core.PARALLEL_MIN - 1) == 1
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert core.kernel_threads(core.PARALLEL_MIN) == 1
        torch.set_num_threads(4)
        pool = kernels.numba.config.NUMBA_NUM_THREADS
        assert core.kernel_threads(core.PARALLEL_MIN) == kernels.usable_threads(4) == min(4, pool)
    finally:
        torch.set_num_threads(before)


def test_slth_kernels_train_the_same_bits_on_any_number_of_threads_and_chunks(monkeypatch):
    """What slth computes itself is thread-invariant: with torch's own ops held at one thread, a few
    edge-popup, Gem-Miner and biprop steps give the same bits whether slth's kernels run serially, on 2
    threads (2 chunks) or on 3 chunks."""
    calls = _patched_parallel_kernels(monkeypatch)
    for method in ("edge-popup", "gem-miner", "biprop"):
        calls.clear()
        one = _train_steps(method, 1)
        assert not calls  # one thread: the serial kernels
        for many in (_train_steps(method, 1, chunks=2), _train_steps(method, 1, chunks=3)):
            assert all(torch.equal(a, b) for a, b in zip(one, many)), method
        assert calls  # the parallel kernels ran


def test_torch_s_thread_count_changes_results_only_within_rounding(monkeypatch):
    """torch's own ops (matmuls, reductions) may round differently on another number of threads on some CPUs
    (seen on an AMD EPYC: up to 6e-8 after four steps; bit-identical on an Intel Xeon), so training on 2 torch
    threads is compared with 1 thread to a stated tolerance: 1e-5 relative, 1e-6 absolute, the same masks."""
    calls = _patched_parallel_kernels(monkeypatch)
    for method in ("edge-popup", "gem-miner", "biprop"):
        calls.clear()
        one, two = _train_steps(method, 1), _train_steps(method, 2)
        assert calls  # 2 torch threads: the parallel kernels ran
        for a, b in zip(one, two):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
