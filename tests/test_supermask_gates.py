"""Relaxed gates with an L0 penalty (l0-gauss: Tsayag & Lindenbaum, arXiv 2603.08914; l0-hc: Louizos et al.,
arXiv 1712.01312): the noise, gates and gradients against a brute-force reference built from the Philox bytes,
the penalty and its two-sided switch, exact density of the final mask, frozen weights, thread invariance of
slth's kernels, exact resume, and the refusals of settings the methods cannot honour."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from slth._hparams import MethodSettings
from slth.cli import app
from slth.supermask import SupermaskConfig, build, from_ticket, kept_count, regularization, supermask_layers, to_ticket
from slth.supermask import _gates as gates
from slth.supermask._philox import PhiloxStream
from slth.supermask.methods import METHODS, GaussianGates, HardConcreteGates
from slth.train import TrainConfig

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1


def _levels(seed: int, draw: int, n: int) -> list[int]:
    """h_i = byte i of the draw (the stream's bytes: bits 8 (i mod 4) .. of word i div 4)."""
    stream = PhiloxStream(seed)
    return [int(b) for b in stream.bytes(n, stream.counter(draw))]


def _slice_mean(quantile, h: int, points: int = 4000) -> float:
    """Level h by brute force: the mean of ``quantile(u)`` over u in [h / 256, (h + 1) / 256] (midpoint rule)."""
    return sum(quantile((h + (j + 0.5) / points) / 256) for j in range(points)) / points


def _normal(h: int) -> float:
    return float(gates.noise_table("normal")[h])


def _logistic(h: int) -> float:
    return float(gates.noise_table("logistic")[h])


def _layer(cls, scores, seed=7, lam=0.1, **kw):
    return cls(scores.shape, 0.5, scores, seed, lam=lam, **kw).train()


# ---------------------------------------------------------------- noise, gates, gradients
def test_noise_is_the_tables_level_at_the_streams_bytes():
    h = _levels(11, 3, 9)
    p = _layer(GaussianGates, torch.zeros(3, 3, dtype=torch.float64), seed=11, sigma=0.5)
    eps = p.noise_sample(3, torch.float64).reshape(-1).tolist()
    assert eps == [_normal(v) for v in h]
    q = _layer(HardConcreteGates, torch.zeros(3, 3, dtype=torch.float64), seed=11)
    assert q.noise_sample(3, torch.float64).reshape(-1).tolist() == [_logistic(v) for v in h]
    assert p.noise_sample(4, torch.float64).reshape(-1).tolist() != eps  # another draw, other noise


@pytest.mark.parametrize("kind, quantile, variance", [
    ("normal", NormalDist().inv_cdf, 1.0), ("logistic", lambda u: math.log(u / (1 - u)), math.pi ** 2 / 3)])
def test_noise_levels_are_the_means_of_equally_likely_slices(kind, quantile, variance):
    """Each of the 2^8 levels is the mean of its 1/256 slice of the distribution (brute force over the slice by
    the midpoint rule; the outermost slices, where the quantile diverges, by their closed-form tail mean), the
    table is antisymmetric and increasing, its mean 0 and its variance within 0.3 % of the distribution's."""
    t = gates.noise_table(kind)
    assert t.shape == (256,) and t.dtype == np.float64 and gates.LEVELS == 256
    assert all(t[j] == -t[255 - j] for j in range(128)) and np.all(np.diff(t) > 0)
    for h in (1, 2, 60, 127, 128, 200, 254):
        assert t[h] == pytest.approx(_slice_mean(quantile, h), rel=1e-6, abs=1e-9), h
    if kind == "normal":  # E[X | X > a] = phi(a) / (1 - Phi(a)) = 256 phi(a), a = Q(255 / 256)
        a = NormalDist().inv_cdf(255 / 256)
        assert t[255] == pytest.approx(256 * NormalDist().pdf(a), rel=1e-12)
    else:  # 256 * integral of logit over [255/256, 1] = 256 * -(u log u + (1 - u) log(1 - u)) at u = 255/256
        u = 255 / 256
        assert t[255] == pytest.approx(-256 * (u * math.log(u) + (1 - u) * math.log(1 - u)), rel=1e-12)
    assert abs(float(t.mean())) < 1e-15 and 0.997 < float((t ** 2).mean()) / variance < 1.0
    assert np.array_equal(gates.noise_table(kind, np.float32), t.astype(np.float32))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**64 - 1), draw=st.integers(0, 2**40), n=st.integers(1, 300))
def test_draw_into_gives_the_words_of_draw_words(seed, draw, n):
    """The training step's one-call draw (integer key words and draw number) against draw_words and the
    stream's bytes: the same words, a byte per weight."""
    stream = PhiloxStream(seed)
    words = np.empty(gates.word_count(n), np.uint32)
    gates.draw_into(int(stream.key[0]), int(stream.key[1]), draw, words)
    assert np.array_equal(words, gates.draw_words(*stream.key, draw, n))
    assert np.array_equal(gates.noise_levels(words, n), stream.bytes(n, stream.counter(draw)).astype(np.int64))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gaussian_gate_and_gradient_match_the_brute_force(dtype):
    mu = torch.tensor([[0.5, -0.3, 1.2], [0.05, 0.9, -1.0]], dtype=dtype)
    w = torch.tensor([[0.3, -0.7, 1.1], [-0.2, 0.4, 0.9]], dtype=dtype)
    g = torch.tensor([[1.0, 2.0, -1.0], [0.5, -3.0, 2.0]], dtype=dtype)
    sigma = 0.5
    p = _layer(GaussianGates, mu, seed=5, sigma=sigma)
    out = p(w)  # the fused CPU kernel (draw 0)
    out.backward(g)
    h = _levels(5, 0, 6)
    for i in range(6):
        m, wi, gi = float(mu.view(-1)[i]), float(w.view(-1)[i]), float(g.view(-1)[i])
        x = m + sigma * _normal(h[i])
        z = min(max(x, 0.0), 1.0)
        tol = 0 if dtype == torch.float64 else 1e-6
        assert abs(float(out.detach().view(-1)[i]) - wi * z) <= tol
        assert abs(float(p.scores.grad.view(-1)[i]) - gi * wi * (0.0 < x < 1.0)) <= tol
    assert len({float(v) for v in out.detach().view(-1)}) > 1


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_hard_concrete_gate_and_gradient_match_the_brute_force(dtype):
    la = torch.tensor([[0.0, -2.0, 3.0], [1.0, -0.5, 6.0]], dtype=dtype)
    w = torch.tensor([[0.3, -0.7, 1.1], [-0.2, 0.4, 0.9]], dtype=dtype)
    g = torch.tensor([[1.0, 2.0, -1.0], [0.5, -3.0, 2.0]], dtype=dtype)
    p = _layer(HardConcreteGates, la, seed=6)
    out = p(w)
    out.backward(g)
    h = _levels(6, 0, 6)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    for i in range(6):
        a, wi, gi = float(la.view(-1)[i]), float(w.view(-1)[i]), float(g.view(-1)[i])
        s = 1 / (1 + math.exp(-(_logistic(h[i]) + a) / BETA))
        x = s * (ZETA - GAMMA) + GAMMA
        assert abs(float(out.detach().view(-1)[i]) - wi * min(max(x, 0.0), 1.0)) <= tol
        expected = gi * wi * (ZETA - GAMMA) * s * (1 - s) / BETA if 0 < x < 1 else 0.0
        assert abs(float(p.scores.grad.view(-1)[i]) - expected) <= tol


@pytest.mark.parametrize("cls, kw", [(GaussianGates, {"sigma": 0.7}), (HardConcreteGates, {})])
def test_fused_kernel_agrees_with_the_torch_path(cls, kw):
    gen = torch.Generator().manual_seed(0)
    s = 2 * torch.randn(40, 300, generator=gen)
    w = torch.randn(40, 300, generator=gen)
    g = torch.randn(40, 300, generator=gen)
    p = _layer(cls, s, **kw)
    out = p(w)
    out.backward(g)
    eps = p.noise_sample(0)
    ref_s = s.clone().requires_grad_()
    ref = w * p.gate(ref_s, eps)
    ref.backward(g)
    assert torch.allclose(out, ref, atol=1e-6) and torch.allclose(p.scores.grad, ref_s.grad, atol=1e-6)


@pytest.mark.parametrize("cls, kw", [(GaussianGates, {"sigma": 0.7}), (HardConcreteGates, {})])
def test_reused_buffers_leave_held_outputs_and_accumulated_gradients_alone(cls, kw):
    """The fused pass writes into pooled arrays: an output and a gradient still held from one step keep
    their values through the next, and gradients accumulate (no zero_grad) to the sum of the steps'."""
    gen = torch.Generator().manual_seed(1)
    s, w = 2 * torch.randn(40, 300, generator=gen), torch.randn(40, 300, generator=gen)
    g1, g2 = torch.randn(40, 300, generator=gen), torch.randn(40, 300, generator=gen)
    p = _layer(cls, s, **kw)
    out1 = p(w)
    out1.backward(g1)
    held_out, held_grad = out1.detach().clone(), p.scores.grad.clone()
    out2 = p(w)  # the next draw
    out2.backward(g2)
    assert torch.equal(out1, held_out)
    q = _layer(cls, s, **kw)  # the same two draws, each gradient on its own
    q(w).backward(g1)
    q.scores.grad = None
    q(w).backward(g2)
    assert torch.equal(p.scores.grad, held_grad + q.scores.grad)


# ---------------------------------------------------------------- the L0 penalty and its switch
def test_penalty_values_and_gradients():
    """slth's variant: the term's value is lambda times the open test-time gates (signed by the switch), its
    gradient the relaxed penalty's, lambda dP(z > 0)/ds (Gaussian: lambda phi(mu / sigma) / sigma)."""
    mu = torch.tensor([[0.5, -0.3], [1.2, 0.05]])
    p = _layer(GaussianGates, mu, lam=0.25, sigma=0.5)  # k = 2, open (mu > 0) = 3: the penalty closes gates
    p(torch.ones(2, 2))
    r = regularization_of(p)
    assert float(r.detach()) == 0.25 * 3
    r.backward()
    dens = [0.25 * math.exp(-0.5 * (v / 0.5) ** 2) / (0.5 * math.sqrt(2 * math.pi)) for v in mu.view(-1).tolist()]
    assert np.allclose(p.scores.grad.view(-1).numpy(), dens, atol=1e-7)

    la = torch.tensor([[0.0, -3.0], [-2.5, -2.45]])  # open iff la > log(1/11) = -2.398: one of k = 2
    q = _layer(HardConcreteGates, la, lam=0.5)
    q(torch.ones(2, 2))
    r = regularization_of(q)
    probs = [1 / (1 + math.exp(-(v - BETA * math.log(-GAMMA / ZETA)))) for v in la.view(-1).tolist()]
    assert float(r.detach()) == -0.5 * 1  # too few open: the same term, opening gates
    r.backward()
    assert np.allclose(q.scores.grad.view(-1).numpy(), [-0.5 * v * (1 - v) for v in probs], atol=1e-7)


@pytest.mark.parametrize("cls, kw", [(GaussianGates, {"sigma": 0.5}), (HardConcreteGates, {})])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_penalty_without_the_forward_pass_is_the_same_term(cls, kw, dtype):
    """Without a fresh forward pass (scores changed since, or the torch path) the term is built from the scores
    with the same value and, to rounding, the same gradient as the fused kernels'."""
    gen = torch.Generator().manual_seed(2)
    s = torch.randn(30, 40, generator=gen, dtype=dtype)
    fused, plain = _layer(cls, s, lam=0.3, **kw), _layer(cls, s, lam=0.3, **kw)
    fused(torch.ones(30, 40, dtype=dtype))
    r1 = fused.regularization()
    r2 = plain.regularization()  # no forward pass: counted afresh
    assert float(r1.detach()) == float(r2.detach()) != 0.0
    r1.backward()
    r2.backward()
    assert torch.allclose(fused.scores.grad, plain.scores.grad, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("cls, kw", [(GaussianGates, {"sigma": 0.5}), (HardConcreteGates, {})])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("upstream", [1.0, -0.37, 65536.0])
def test_penalty_scaled_in_place_is_the_product_bit_for_bit(cls, kw, dtype, upstream):
    """regularization() hands out the forward pass's penalty output with the switch's sign and gain applied in
    place (its value; the backward pass multiplies the gradient): the same bits as ``output * scale``."""
    gen = torch.Generator().manual_seed(5)
    s = torch.randn(30, 40, generator=gen, dtype=dtype)
    w, g = torch.randn(30, 40, generator=gen, dtype=dtype), torch.randn(30, 40, generator=gen, dtype=dtype)
    layers = [_layer(cls, s, lam=0.3, **kw), _layer(cls, s, lam=0.3, **kw)]
    terms = []
    for i, p in enumerate(layers):
        p.gain.fill_(1.37)
        out = p(w)
        if i == 0:
            r = p.regularization()
        else:  # the product, as regularization() built it before
            count = p.step.count
            scale = (1.0 if count > p.k else -1.0) * float(p.gain)
            r = p.step.last[2] * scale
        ((out * g).sum() + upstream * r).backward()
        terms.append(r.detach().clone())
    assert terms[0].dtype == terms[1].dtype and terms[0].item() == terms[1].item() != 0.0
    assert layers[0].scores.grad.numpy().tobytes() == layers[1].scores.grad.numpy().tobytes()


def regularization_of(p):
    return p.regularization()


def test_penalty_is_off_at_the_target_and_always_on_in_the_reference_variant():
    mu = torch.tensor([[0.5, -0.3], [-1.2, 0.05]])  # two open = k
    p = _layer(GaussianGates, mu, sigma=0.5)
    p(torch.ones(2, 2))
    assert p.regularization() == 0.0
    ref = GaussianGates(mu.shape, 0.5, mu, 7, lam=0.1, sigma=0.5, variant="reference").train()
    ref(torch.ones(2, 2))
    assert float(ref.regularization()) > 0
    assert _layer(GaussianGates, mu, lam=0.0, sigma=0.5).regularization() == 0.0
    # without the forward pass's count (a stale one) the penalty counts afresh: three open, lambda * 3
    fresh = _layer(GaussianGates, torch.tensor([[0.5, 0.3], [-1.2, 0.05]]), sigma=0.5)
    assert float(fresh.regularization().detach()) == pytest.approx(0.1 * 3)


def test_penalty_gain_grows_on_one_side_of_k_and_halves_on_a_crossing():
    mu = torch.tensor([[0.5, 0.3], [-1.2, 0.05]])  # three open, k = 2
    p = _layer(GaussianGates, mu, sigma=0.5)
    w = torch.ones(2, 2)
    gains = []
    for _ in range(3):
        p(w)
        r = p.regularization()
        gains.append(float(p.gain))
        assert float(r) > 0
    assert gains == pytest.approx([1.0, 1.02, 1.02 ** 2], rel=1e-12)  # the first step only records the side
    base = 0.1 * 3  # lambda times the three open gates
    p(w)
    assert abs(float(p.regularization().detach()) - 1.02 ** 2 * base) < 1e-6  # at the gain before the update
    p(w)
    p.regularization()  # a second call in the same draw does not adapt again
    assert float(p.gain) == pytest.approx(1.02 ** 4, rel=1e-12)
    with torch.no_grad():
        p.scores.copy_(torch.tensor([[0.5, -0.3], [-1.2, -0.05]]))  # one open: below k, the term opens gates
    p(w)
    r = p.regularization()
    assert float(r) < 0 and float(p.gain) == pytest.approx(1.02 ** 4 * 0.5, rel=1e-12)
    assert "gain" in p.state_dict()


@pytest.mark.parametrize("cls, kw, bounds", [(GaussianGates, {"sigma": 0.5}, (-0.5, 1.5)),
                                             (HardConcreteGates, {}, (-4.0, 4.0))])
def test_slth_variant_keeps_the_scores_where_the_penalty_acts(cls, kw, bounds):
    s = torch.tensor([[-9.0, 0.25], [1.25, 9.0]])
    p = _layer(cls, s, **kw)
    p.after_step(1, torch.ones(2, 2))
    assert p.scores.detach().tolist() == [[bounds[0], 0.25], [1.25, bounds[1]]]
    ref = cls(s.shape, 0.5, s, 7, lam=0.1, variant="reference", **kw)
    ref.after_step(1, torch.ones(2, 2))
    assert torch.equal(ref.scores.detach(), s)


# ---------------------------------------------------------------- density, tickets, frozen weights
def _trained(method, density, steps=6, variant="slth", **kw):
    cfg = SupermaskConfig(method=method, density=density, variant=variant, **kw)
    net = build("fc", (1, 6, 6), 4, seed=3, hidden=[16, 8], supermask=cfg)
    frozen = {n: t.clone() for n, t in net.state_dict().items() if "original" in n}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=5.0, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 1, 6, 6, generator=gen), torch.randint(0, 4, (32,), generator=gen)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(net(x), y) + regularization(net)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net, frozen, x


@pytest.mark.parametrize("method", ["l0-gauss", "l0-hc"])
@pytest.mark.parametrize("density", [0.1, 0.37, 0.9])
def test_final_mask_keeps_exactly_the_kept_count_and_eval_is_weight_times_mask(method, density):
    net, frozen, x = _trained(method, density, gate_l0=1e-2)
    for _, layer, p in supermask_layers(net):
        mask = p.final_mask()
        assert mask.dtype == torch.bool and int(mask.sum()) == kept_count(mask.numel(), density)
        w = layer.parametrizations.weight.original
        net.eval()
        assert torch.equal(layer.weight, w * mask.to(w.dtype))
    for n, t in net.state_dict().items():
        if n in frozen:
            assert torch.equal(t, frozen[n]), n  # training changed the gates only


@pytest.mark.parametrize("method", ["l0-gauss", "l0-hc"])
@pytest.mark.parametrize("variant", ["slth", "reference"])
def test_ticket_round_trip_is_bit_identical(method, variant, tmp_path):
    net, _, x = _trained(method, 0.3, variant=variant, gate_l0=1e-2)
    net.eval()
    with torch.no_grad():
        expected = net(x)
    to_ticket(net, tmp_path / "t.slth")
    rebuilt = from_ticket(tmp_path / "t.slth")
    assert rebuilt.slth_spec["supermask"]["gate_l0"] == 1e-2
    with torch.no_grad():
        assert torch.equal(rebuilt(x), expected)


# ---------------------------------------------------------------- reproducibility
@pytest.mark.parametrize("kernel", ["gauss", "hc"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_give_the_same_bits_on_any_number_of_chunks(kernel, dtype):
    rng = np.random.default_rng(1)
    n = 70_001
    w, s = rng.standard_normal(n).astype(dtype), (2 * rng.standard_normal(n)).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    words = gates.draw_words(np.uint32(3), np.uint32(4), 5, n)
    results = []
    for chunks in (1, 2, 3, 7):
        out, grads = np.empty(n, dtype), [np.empty(n, dtype) for _ in range(2)]
        if kernel == "gauss":
            aux = np.empty(n, np.bool_)
            args = (w, s, words, gates.noise_table("normal", dtype), 0.5, out, aux)
            count = gates.gauss_gates(*args) if chunks == 1 else gates.gauss_gates_parallel(*args, chunks)
            grad, grad_parallel, grad_args = gates.gauss_grad, gates.gauss_grad_parallel, (w, aux, s, 0.5, 0.1)
        else:
            aux = np.empty(n, dtype)
            args = (w, s, words, gates.noise_table("logistic", dtype), out, aux)
            count = (gates.hard_concrete_gates(*args) if chunks == 1
                     else gates.hard_concrete_gates_parallel(*args, chunks))
            grad, grad_parallel, grad_args = gates.hard_concrete_grad, gates.hard_concrete_grad_parallel, (aux, s, 0.1)
        for c, into in zip((0.0, -1.7), grads):
            if chunks == 1:
                grad(g, *grad_args, c, into)
            else:
                grad_parallel(g, *grad_args, c, into, chunks)
        results.append((tuple(a.tobytes() for a in (out, aux, *grads)), count))
    assert all(r == results[0] for r in results)
    assert results[0][1] == int((s > dtype(0.0 if kernel == "gauss" else gates.HC_OPEN)).sum())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_open_count_rounds_the_threshold_to_the_scores_dtype(dtype):
    s = np.array([-1.0, 0.0, 0.1, 2.0, gates.HC_OPEN, np.nextafter(dtype(gates.HC_OPEN), dtype(1))], dtype)
    assert gates.open_count(s, 0.0) == 2
    assert gates.open_count(s, gates.HC_OPEN) == 5  # -1, 0, 0.1, 2 and the value just above; not the value itself


def test_same_seed_same_bits_and_the_draw_count_resumes_exactly():
    def layer(seed):
        return _layer(GaussianGates, torch.full((30, 40), 0.4), seed=seed, sigma=0.5)

    w = torch.randn(30, 40, generator=torch.Generator().manual_seed(2))
    a, b, c = layer(1), layer(1), layer(2)
    assert torch.equal(a(w), b(w)) and not torch.equal(a(w), c(w))  # a: draw 1 now, b: draw 0
    resumed = layer(1)
    resumed.load_state_dict(a.state_dict())  # two draws taken
    b(w)
    assert torch.equal(resumed(w), a(w)) and resumed.stream.draws == 3
    a.gain.fill_(3.0)
    resumed.load_state_dict(a.state_dict())
    assert float(resumed.gain) == 3.0  # the penalty's gain resumes too
    with pytest.raises(ValueError, match="damaged sampling state"):
        resumed.set_extra_state({"draws": -1})


# ---------------------------------------------------------------- settings and refusals
@pytest.mark.parametrize("field, value, words", [("gate_sigma", 0.0, "gate_sigma"), ("gate_sigma", -1.0, "> 0"),
                                                 ("gate_sigma", math.inf, "finite"), ("gate_l0", -1e-3, "gate_l0"),
                                                 ("gate_l0", math.nan, ">= 0"), ("gate_l0", True, "gate_l0")])
def test_settings_the_methods_cannot_honour_are_refused(field, value, words):
    with pytest.raises(ValueError, match=words):
        MethodSettings(**{field: value})
    with pytest.raises(ValueError, match=field):
        SupermaskConfig(method="l0-gauss", **{field: value})
    with pytest.raises(ValueError, match=field):
        TrainConfig(method="l0-hc", **{field: value})


def test_settings_travel_from_the_train_config_to_the_layers():
    cfg = TrainConfig(method="l0-gauss", gate_l0=3e-3, gate_sigma=0.25).resolved()
    assert (cfg.lr, cfg.weight_decay, cfg.init) == (METHODS["l0-gauss"].lr, 0.0, "signed-constant")
    net = build("fc", (1, 6, 6), 4, seed=0, hidden=[8], supermask=cfg.supermask_config())
    assert {(p.lam, p.sigma) for _, _, p in supermask_layers(net)} == {(3e-3, 0.25)}


def test_cli_trains_a_gate_method(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--method", "l0-hc", "--gate-l0", "0.002", "--data", "digits",
                                      "--hidden", "16", "--epochs", "1", "--density", "0.2", "--quiet",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    rebuilt = from_ticket(out / "ticket.slth")
    assert rebuilt.slth_spec["supermask"]["gate_l0"] == 0.002
    kept = sum(int((m.weight != 0).sum()) for m in rebuilt.modules() if isinstance(m, torch.nn.Linear))
    total = sum(m.weight.numel() for m in rebuilt.modules() if isinstance(m, torch.nn.Linear))
    assert kept == sum(kept_count(n, 0.2) for n in (64 * 16, 16 * 10)) and total == 64 * 16 + 16 * 10


@pytest.mark.parametrize("cls, kw", [(GaussianGates, {"sigma": 0.5}), (HardConcreteGates, {})])
def test_backward_with_an_upstream_gradient_of_another_dtype_takes_the_tensor_path(cls, kw):
    """An upstream gradient that is not the weight's dtype (or not on the CPU) gets factor and penalty gradient
    as tensors: the kernel path's values to rounding, in the gradient's dtype."""
    from slth.supermask.methods import _GateWeight

    gen = torch.Generator().manual_seed(0)
    s, w, g = (torch.randn(20, 30, generator=gen) for _ in range(3))
    p = _layer(cls, s, lam=0.3, **kw)
    p.gain.fill_(1.37)
    out = p(w)
    p.regularization()
    ctx = out.grad_fn
    assert ctx.scale not in (0.0, 1.0)  # the penalty acts, scaled
    _, mixed, _, _ = _GateWeight.backward(ctx, g.double(), torch.tensor(1.0))
    _, plain, _, _ = _GateWeight.backward(ctx, g, torch.tensor(1.0))
    assert mixed.dtype == torch.float64 and torch.allclose(mixed.float(), plain, rtol=1e-6, atol=1e-8)
