"""Bernoulli supermask sampling: Philox4x32-10 against Random123's known answers and a plain-Python
reference, the kernels' sigmoid against float64, and the fused CPU draw against the mask its definition
(slth.supermask._philox) gives, computed here independently; ties, gradients, the shift's control and the
statistics of the draws."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slth.supermask import _kernels, _philox
from slth.supermask.methods import Bernoulli

torch.set_num_threads(1)
U32 = np.uint32


def _philox_reference(ctr, key, rounds=10):
    """Philox4x32 from the published algorithm (Salmon et al. 2011), in Python integers."""
    c, k = list(ctr), list(key)
    for r in range(rounds):
        if r:
            k = [(k[0] + 0x9E3779B9) & 0xFFFFFFFF, (k[1] + 0xBB67AE85) & 0xFFFFFFFF]
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & 0xFFFFFFFF, (p0 >> 32) ^ c[3] ^ k[1], p0 & 0xFFFFFFFF]
    return c


@pytest.mark.parametrize("ctr,key,expected", [  # Random123 tests/kat_vectors, "philox4x32 10"
    ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
     [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
])
def test_philox_known_answers(ctr, key, expected):
    assert [int(x) for x in _philox.philox4x32(*(U32(c) for c in ctr), *(U32(k) for k in key))] == expected
    assert _philox_reference(ctr, key) == expected


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_stream_words_lay_out_the_blocks_as_documented(m, seed, draw):
    k0, k1 = _philox.key_words(seed)
    d0, d1 = U32(draw & 0xFFFFFFFF), U32(draw >> 32)
    out = np.empty(m, dtype=np.uint32)
    _philox.stream_words(k0, k1, d0, d1, out)
    q = m // 4
    for j in range(m):
        block, word = (j % q, j // q) if j < 4 * q else (q, j - 4 * q)
        assert int(out[j]) == _philox_reference([block, int(d0), int(d1), 0], [int(k0), int(k1)])[word]


def test_key_words_refuse_seeds_outside_64_bits():
    with pytest.raises(ValueError, match="2\\^64"):
        _philox.key_words(-1)
    with pytest.raises(ValueError, match="2\\^64"):
        _philox.key_words(2**64)


@settings(max_examples=200, deadline=None)
@given(st.floats(-120.0, 120.0, width=32))
def test_the_kernels_sigmoid_is_within_two_ulp_of_float64(z):
    out = np.empty(1, dtype=np.float32)
    _kernels.sigmoid_array(np.array([z], dtype=np.float32), out)
    exact = 1.0 / (1.0 + math.exp(-float(z))) if z > -700 else 0.0
    if exact >= 1e-37:  # below, float32 is subnormal and the clamp of exp's argument applies
        assert abs(float(out[0]) - exact) <= 2 * float(np.spacing(np.float32(exact)))
    else:
        assert 0.0 <= float(out[0]) < 1e-37


def test_the_kernels_sigmoid_is_not_called_from_python():  # its body is numba's overload
    with pytest.raises(NotImplementedError, match="sigmoid is a numba function"):
        _kernels.sigmoid(0.0)


def test_the_kernels_sigmoid_propagates_nan():
    out = np.empty(2, dtype=np.float32)
    _kernels.sigmoid_array(np.array([np.nan, 0.0], dtype=np.float32), out)
    assert np.isnan(out[0]) and out[1] == 0.5


def _definition(weight: np.ndarray, p: np.ndarray, inv_t, counter) -> tuple[np.ndarray, np.ndarray]:
    """(W * m, factor) for probabilities ``p``, straight from the definition in slth.supermask._philox."""
    real = p.dtype.type
    n = p.shape[0]
    words = np.empty((n + 3) // 4, dtype=np.uint32)
    _philox.stream_words(*counter, words)
    u = np.array([(int(words[i // 4]) >> (8 * (i % 4))) & 255 for i in range(n)], dtype=np.float64)
    a = p.astype(np.float64) * 256.0
    keep = u < np.floor(a)
    ties = np.flatnonzero(u == np.floor(a))
    r = np.empty(len(ties), dtype=np.uint32)
    _philox.tie_words(*counter, ties.astype(np.int64), r)
    keep[ties] = (r >> 8).astype(np.float64) < (a[ties] - np.floor(a[ties])) * 2.0**24
    factor = weight * (p * (real(1.0) - p)) * real(inv_t)
    return np.where(keep, weight, weight * real(0.0)), factor


def _kernel_probabilities(scores: np.ndarray, shift, inv_t) -> np.ndarray:
    p = np.empty_like(scores)
    _kernels.sigmoid_array(((scores + shift) * inv_t).astype(scores.dtype), p)
    return p


def _layer(n, dtype, seed, density=0.5, spread=1.0):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, generator=gen, dtype=dtype) * spread
    weight = torch.randn(n, generator=gen, dtype=dtype)
    layer = Bernoulli((n,), density, scores, sample_seed=seed * 7919 + 1).to(dtype)
    return layer, weight


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(0, 2**31 - 1), st.sampled_from([torch.float32, torch.float64]),
       st.sampled_from([0.1, 0.5, 0.9]), st.sampled_from([0.05, 1.0, 8.0]))
def test_the_fused_draw_and_the_reference_path_draw_the_documented_mask(n, seed, dtype, density, spread):
    layer, weight = _layer(n, dtype, seed, density, spread)
    reference, _ = _layer(n, dtype, seed, density, spread)
    drawn = []
    control = reference._control
    reference._control = lambda *args: (lambda r: drawn.append(r[0]) or r)(control(*args))
    for step in range(3):
        counter = (*layer.stream.key, U32(layer.stream.draws), U32(0))
        out = layer.training_weight(weight)  # the fused CPU path
        _, _, shift, inv_t = out.grad_fn.drawn  # the shift and 1/T of the draw that stood
        g = torch.randn(n, generator=torch.Generator().manual_seed(seed + step), dtype=dtype)
        (grad,) = torch.autograd.grad(out, layer.scores, g)
        p = _kernel_probabilities(layer.scores.detach().numpy(), shift, inv_t)
        expected, factor = _definition(weight.numpy(), p, inv_t, counter)
        assert np.array_equal(out.detach().numpy(), expected)
        assert np.array_equal(np.signbit(out.detach().numpy()), np.signbit(expected))  # pruned: a signed zero
        assert np.array_equal(grad.numpy(), g.numpy() * factor)
        # the reference path (what a GPU or half precision takes): the same definition with torch's sigmoid
        ref_out = weight * reference.training_mask()
        p_torch = reference.probabilities(drawn[-1]).detach().numpy()
        expected, factor = _definition(weight.numpy(), p_torch, inv_t, counter)
        assert np.array_equal(ref_out.detach().numpy(), expected)
        (ref_grad,) = torch.autograd.grad(ref_out, reference.scores, g)
        assert np.allclose(ref_grad.numpy(), g.numpy() * factor, rtol=1e-5, atol=1e-30)
        with torch.no_grad():
            move = torch.randn(n, generator=torch.Generator().manual_seed(seed ^ step), dtype=dtype) * 0.01
            layer.scores.add_(move)
            reference.scores.add_(move)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_weight_a_tie_is_decided_by_its_own_draw(dtype):
    """Scores chosen so that every byte ties (u_i = floor(256 p_i)): more ties than the kernel's scratch
    words hold, each decided by its refinement draw as the definition says."""
    n = 997
    layer = Bernoulli((n,), 0.5, torch.zeros(n, dtype=dtype), sample_seed=11).to(dtype)
    counter = (*layer.stream.key, U32(0), U32(0))
    u = _philox.PhiloxStream.bytes(n, counter).astype(np.float64)
    frac = np.linspace(0.02, 0.98, n)  # where within the byte's interval p lies
    p = (u + frac) / 256.0
    real = torch.empty((), dtype=dtype).numpy().dtype.type
    with torch.no_grad():
        layer.scores.copy_(torch.from_numpy(np.log(p / (1.0 - p)).astype(real)))
        layer.shift.zero_()
    p_kernel = _kernel_probabilities(layer.scores.detach().numpy(), real(0.0), real(1.0))
    assert np.array_equal(np.floor(p_kernel * 256.0), u)
    layer._control = lambda sample, evaluate, b, inv_t: (b, sample(b) and b)  # draw at b = 0, no redraw
    weight = torch.randn(n, generator=torch.Generator().manual_seed(5), dtype=dtype)
    out = layer.training_weight(weight).detach().numpy()
    expected, _ = _definition(weight.numpy(), p_kernel, 1.0, counter)
    assert np.array_equal(out, expected)
    kept = np.count_nonzero(out)
    assert abs(kept - frac.sum()) < 5 * math.sqrt(n / 4)  # kept with probability frac: about half


@pytest.mark.parametrize("p", [1e-3, 0.3, 1 / 3, 0.5, 0.97])
def test_masks_keep_each_weight_with_probability_p(p):
    n, draws = 200_000, 3
    layer = Bernoulli((n,), p, torch.full((n,), math.log(p / (1 - p))), sample_seed=3)
    layer._control = lambda sample, evaluate, b, inv_t: (b, sample(b) and b)  # keep b = 0: p exactly as set
    weight = torch.ones(n)
    counts = [int(torch.count_nonzero(layer.training_weight(weight))) for _ in range(draws)]
    for c in counts:
        assert abs(c - n * p) < 5 * math.sqrt(n * p * (1 - p))
    assert len(set(counts)) == draws  # every draw a new mask


def test_the_shift_keeps_the_expected_count_at_k_and_a_temperature_change_redraws():
    n = 5000
    layer, weight = _layer(n, torch.float32, 3, density=0.3)
    k = layer.k
    for step in range(6):
        out = layer.training_weight(weight)
        _, s, shift, inv_t = out.grad_fn.drawn
        p = _kernel_probabilities(s, shift, inv_t).astype(np.float64)
        assert abs(p.sum() - k) <= max(0.5, 0.25 * math.sqrt((p * (1 - p)).sum())) + 1e-3
        with torch.no_grad():
            layer.scores.add_(torch.randn(n, generator=torch.Generator().manual_seed(step)) * 0.05)
    layer.after_epoch(1, 3)  # T: 1 -> 2/3, the expected count at the old shift moves far off
    out = layer.training_weight(weight)
    _, s, shift, inv_t = out.grad_fn.drawn
    p = _kernel_probabilities(s, shift, inv_t).astype(np.float64)
    assert inv_t == pytest.approx(1.5) and abs(p.sum() - k) < 0.5 + 1e-3  # solved to half a weight


def test_a_retained_graph_and_a_held_output_stay_correct():
    layer, weight = _layer(300, torch.float32, 1)
    g1, g2 = torch.randn(300), torch.randn(300)
    out = layer.training_weight(weight)
    kept = out.clone()
    _, s, shift, inv_t = out.grad_fn.drawn
    p = _kernel_probabilities(s, shift, inv_t)
    factor = weight.numpy() * (p * (np.float32(1.0) - p)) * inv_t
    out.backward(g1, retain_graph=True)
    first = layer.scores.grad.clone()
    assert np.array_equal(first.numpy(), g1.numpy() * factor)
    out.backward(g2)  # through the retained graph: the factor is recomputed, the first gradient untouched
    assert np.allclose(layer.scores.grad.numpy(), g1.numpy() * factor + g2.numpy() * factor, rtol=1e-6)
    for _ in range(4):  # later draws reuse the pool's arrays, never the one still held
        layer.training_weight(weight).sum().backward()
    assert torch.equal(out, kept)
    out = layer.training_weight(weight)
    with torch.no_grad():
        layer.scores.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_bad_scores_and_old_checkpoints_are_refused():
    layer, weight = _layer(50, torch.float32, 2)
    with torch.no_grad():
        layer.scores[3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        layer.training_weight(weight)
    with pytest.raises(ValueError, match="NaN"):
        layer.training_mask()
    with pytest.raises(ValueError, match="older slth"):
        layer.set_extra_state({"generator": torch.Generator().get_state()})


def test_the_shift_control_and_its_solver_each_refuse_a_count_that_is_not_finite():
    layer, _ = _layer(50, torch.float32, 2)
    finite = lambda b: (25.0, 10.0)  # noqa: E731 (an expected count of k: the draw stands)
    with pytest.raises(ValueError, match="Bernoulli supermask scores contain NaN"):
        layer._control(lambda b: (math.nan, math.nan), finite, 0.0, 1.0)  # refused before any solving
    with pytest.raises(ValueError, match="Bernoulli supermask scores contain NaN"):
        layer._solve(lambda b: (math.nan, 0.0), 0.0, 1.0)


def test_resume_continues_the_stream():
    a, weight = _layer(400, torch.float32, 4)
    for _ in range(3):
        a.training_weight(weight)
    b, _ = _layer(400, torch.float32, 4)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.training_weight(weight), b.training_weight(weight)) and b.stream.draws == 4


def test_half_precision_takes_the_reference_path_with_the_same_definition():
    layer, weight = _layer(333, torch.float32, 6)
    layer, weight = layer.half(), weight.half()
    drawn = []
    control = layer._control
    layer._control = lambda *args: (lambda r: drawn.append(r[0]) or r)(control(*args))
    for step in range(2):
        counter = (*layer.stream.key, U32(step), U32(0))
        out = layer.training_weight(weight)
        assert out.dtype == torch.float16 and out.grad_fn is not None
        p = layer.probabilities(drawn[-1]).detach().float().numpy()  # p in half precision, compared in float32
        expected, _ = _definition(weight.float().numpy(), p, 1.0, counter)
        assert np.array_equal(out.detach().float().numpy(), expected)
        (grad,) = torch.autograd.grad(out.float().sum(), layer.scores)
        assert grad.dtype == torch.float16 and torch.isfinite(grad).all()


def test_a_seed_above_2_63_draws_from_its_own_key():
    n = 64
    weight = torch.randn(n, generator=torch.Generator().manual_seed(0))
    seed = 2**64 - 12345
    layer = Bernoulli((n,), 0.5, torch.zeros(n), sample_seed=seed)
    out = layer.training_weight(weight)
    _, s, shift, inv_t = out.grad_fn.drawn
    counter = (U32(seed & 0xFFFFFFFF), U32(seed >> 32), U32(0), U32(0))
    expected, _ = _definition(weight.numpy(), _kernel_probabilities(s, shift, inv_t), inv_t, counter)
    assert np.array_equal(out.detach().numpy(), expected)


def test_shift_update_stays_finite_when_every_probability_is_saturated():
    """Nearly all p at 0 or 1 gives a variance near 0; the Newton step for the next draw is capped, so the
    float32 shift cannot overflow to inf (the planted experiment's 10x run then failed with NaN scores)."""
    import math

    from slth.supermask.methods import NEWTON_REACH, Bernoulli

    layer = Bernoulli((1000,), 0.12, torch.zeros(1000), sample_seed=1)
    inv_t = 15.0
    # expected count 9930 of k = 120 with a variance of 4e-37: the uncapped step would be ~1.6e39
    b, nxt = layer._control(lambda b: (9930.0, 4.2e-37), lambda b: (120.0, 1.0), 3230.7, inv_t)
    assert math.isfinite(nxt) and math.isfinite(float(np.float32(nxt)))
    assert abs(nxt - b) <= NEWTON_REACH / inv_t + 1e-9
    # ordinary draws: the step is the plain Newton step (the cap does not act)
    b, nxt = layer._control(lambda b: (121.0, 30.0), lambda b: (120.0, 30.0), 0.5, 2.0)
    assert nxt == b - 1.0 / (30.0 * 2.0)
