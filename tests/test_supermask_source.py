"""Sparse random sources (slth.supermask.source): the pattern is drawn from the seed with exact per-layer
counts, every method's masks stay inside it, absent weights are zero and stay frozen, tickets rebuild bit
for bit without storing it, and bad settings are refused before anything changes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slth import supermask as sm
from slth import ticketfile
from slth.supermask.apply import supermask_layers
from slth.supermask.init import ABSENT, FREE, LOCKED, draw_source, layer_densities, prunable_tensors
from slth.train import TrainConfig

torch.set_num_threads(1)
SHAPE = (1, 8, 8)
METHODS = tuple(name for name, m in sm.METHODS.items() if m.sparse_sources)  # the others are refused: below
ER = {"source": "erdos-renyi", "source_density": 0.5}
PF = {"source": "partially-frozen", "source_density": 0.7, "source_locked": 0.1}


def _model(method="edge-popup", density=0.3, seed=0, **kw):
    own = {"rerand_period": 3} if method == "iterand" else {}
    config = sm.SupermaskConfig(method=method, density=density, **own, **kw)
    return sm.build("fc", SHAPE, 10, seed=seed, hidden=[24, 12], supermask=config)


def _train(model, steps=8, lr=0.5):
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(32, *SHAPE, generator=gen), torch.randint(0, 10, (32,), generator=gen)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9,
                          weight_decay=1e-4)
    model.train()
    for step in range(1, steps + 1):
        loss = F.cross_entropy(model(x), y) + sm.regularization(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sm.after_step(model, step)
        sm.after_epoch(model, step, steps)
    return model.eval()


def _patterns(model):
    return {key: p for key, _, p in supermask_layers(model)}


@pytest.mark.parametrize("distribution", ["uniform", "erk", "balanced", "pyramidal"])
def test_pattern_counts_are_exact_per_layer(distribution):
    model = _model(source="partially-frozen", source_density=0.6, source_locked=0.05,
                   source_distribution=distribution, density=0.05)
    q = layer_densities(model, 0.6, distribution)
    present_total = 0
    for key, p in _patterns(model).items():
        n = p.scores.numel()
        present = n - int(p.absent.sum())
        assert present == p.present == min(n, max(1, math.floor(n * q[key] + 0.5)))
        assert int(p.locked.sum()) == math.floor(n * 0.05 + 0.5)
        present_total += present
    total = sum(p.scores.numel() for p in _patterns(model).values())
    assert abs(present_total - 0.6 * total) <= len(q)  # one weight of rounding per layer


def test_balanced_and_pyramidal_densities():
    model = sm.build("fc", SHAPE, 10, seed=0, hidden=[24, 12])
    sizes = {t.key: math.prod(t.shape) for t in prunable_tensors(model)}  # 1536, 288, 120
    balanced = layer_densities(model, 0.2, "balanced")
    budget = 0.2 * sum(sizes.values())
    kept = {k: balanced[k] * n for k, n in sizes.items()}
    assert balanced["layers.5"] == 1.0  # the 120-weight layer is smaller than its share (129.6): dense
    assert kept["layers.1"] == pytest.approx(kept["layers.3"]) and sum(kept.values()) == pytest.approx(budget)
    pyramidal = layer_densities(model, 0.2, "pyramidal")
    r = pyramidal["layers.1"]
    assert [pyramidal[k] for k in sizes] == pytest.approx([r, r ** 2, r ** 3])
    assert sum(pyramidal[k] * n for k, n in sizes.items()) == pytest.approx(budget)


def test_same_seed_same_pattern_bits_other_seed_differs():
    t = prunable_tensors(sm.build("fc", SHAPE, 10, seed=0, hidden=[24, 12]))[0]
    a, b, c = draw_source(t, 5, 0.5, 0.1), draw_source(t, 5, 0.5, 0.1), draw_source(t, 6, 0.5, 0.1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(torch.unique(a).tolist()) == {ABSENT, FREE, LOCKED}
    # the same bits on another thread count (slth's own draw: one randperm on a seeded CPU generator)
    torch.set_num_threads(2)
    try:
        assert torch.equal(a, draw_source(t, 5, 0.5, 0.1))
    finally:
        torch.set_num_threads(1)
    p1, p2 = _patterns(_model(**ER)), _patterns(_model(**ER))
    assert all(torch.equal(p1[k].absent, p2[k].absent) for k in p1)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("source", [ER, PF], ids=["erdos-renyi", "partially-frozen"])
def test_masks_stay_inside_the_source_and_frozen_weights_stay_put(method, source):
    model = _model(method, **source)
    before = {k: v.clone() for k, v in model.state_dict().items() if k.endswith(".original")}
    for key, p in _patterns(model).items():  # absent weights are zero
        raw = dict(model.named_modules())[key].parametrizations.weight.original
        assert not raw[p.absent].any()
    _train(model)
    after = {k: v for k, v in model.state_dict().items() if k.endswith(".original")}
    for key, p in _patterns(model).items():
        m = p.final_mask()
        assert int(m.sum()) == p.k and not (m & p.absent).any()
        if p.locked is not None:
            assert m[p.locked].all()
        raw = after[f"{key}.parametrizations.weight.original"]
        if method == "iterand":  # re-draws pruned weights, never absent ones
            assert not raw[p.absent].any()
        else:
            assert torch.equal(raw, before[f"{key}.parametrizations.weight.original"])
        if method not in ("bernoulli", "gem-miner"):  # top-k methods: the training weight is the eval weight
            layer = dict(model.named_modules())[key]
            layer.train()
            trained = layer.weight
            layer.eval()
            assert torch.equal(trained != 0, layer.weight != 0)
            # (biprop's fused kernel sums alpha in float64, its eval weight in float32)
            assert torch.allclose(trained, layer.weight, rtol=1e-6, atol=0) if method == "biprop" else torch.equal(
                trained, layer.weight)


def test_fused_source_path_falls_back_when_the_threshold_ties_with_the_absent_weights():
    model = _model(density=0.3, **ER)
    key, p = next(iter(_patterns(model).items()))
    layer = dict(model.named_modules())[key]
    with torch.no_grad():  # all but a few present scores at exactly 0: the k-th largest |s| is 0
        free = (~p.absent).reshape(-1).nonzero().squeeze(1)
        p.scores.view(-1)[free[5:]] = 0.0
    layer.train()
    trained = layer.weight
    kept = trained != 0
    assert int(kept.sum()) <= p.k and not (kept & p.absent).any()
    mask = p.training_mask().bool()
    assert int(mask.sum()) == p.k and not (mask & p.absent).any()
    assert torch.equal(trained, layer.parametrizations.weight.original * mask)


def test_the_peer_benchmark_refuses_a_sparse_source():
    from slth.bench.supermask import step_times

    with pytest.raises(ValueError, match="peer implementation searches the dense source"):
        step_times("fc", "edge-popup", peer=True, source="erdos-renyi", source_density=0.6, steps=1)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("source", [ER, PF], ids=["erdos-renyi", "partially-frozen"])
def test_ticket_roundtrip_is_bit_identical_and_stores_no_pattern(tmp_path, method, source):
    model = _train(_model(method, **source))
    path = tmp_path / "t.slth"
    sm.to_ticket(model, path)
    ticket = ticketfile.load(path)
    assert not any("source" in k for k in ticket.extras) and set(ticket.masks) == {
        f"{k}.weight" for k in _patterns(model)}
    rebuilt = sm.from_ticket(path)
    plain = sm.materialize(model)
    for (ka, a), (kb, b) in zip(plain.state_dict().items(), rebuilt.state_dict().items()):
        assert ka == kb and torch.equal(a, b), ka
    x = torch.randn(5, *SHAPE)
    assert torch.equal(model(x), rebuilt(x))


def test_dense_source_records_are_unchanged():
    spec = _model().slth_spec["supermask"]
    assert "source" not in spec and "source_density" not in spec
    assert "source" in _model(**ER).slth_spec["supermask"]


def test_ticket_mask_outside_the_source_is_refused_as_corrupted(tmp_path):
    model = _train(_model(**PF))
    ticket = sm.to_ticket(model)
    key, p = next(iter(_patterns(model).items()))
    name = f"{key}.weight"
    for change, why in ((lambda m: m.__setitem__(np.flatnonzero(p.absent.numpy().reshape(-1))[0], True), "outside"),
                        (lambda m: m.__setitem__(np.flatnonzero(p.locked.numpy().reshape(-1))[0], False), "locked")):
        masks = {k: v.copy() for k, v in ticket.masks.items()}
        flat = masks[name].reshape(-1)
        change(flat)
        bad = ticketfile.TicketFile(seed=ticket.seed, config=ticket.config, masks=masks, extras=ticket.extras)
        with pytest.raises(ticketfile.TicketFileError, match=f"corrupted ticket.*{why}"):
            sm.from_ticket(bad)


@pytest.mark.parametrize("kwargs, message", [
    ({"density": 0.6, **ER}, "exceeds source_density"),
    ({"density": 0.05, **PF}, "below source_locked"),
    ({"source": "sparse"}, "unknown source 'sparse'"),
    ({"source": "erdos-renyi", "source_density": 0.0}, r"source_density \(fraction of the weights present\)"),
    ({"source": "erdos-renyi", "source_density": 1.5}, r"source_density \(fraction of the weights present\)"),
    ({"source": "partially-frozen", "source_locked": -0.1}, r"source_locked \(fraction frozen as kept\)"),
    ({"source": "partially-frozen", "source_density": 0.5, "source_locked": 0.6, "density": 0.55},
     "source_locked .* exceeds source_density"),
    ({"source": "erdos-renyi", "source_density": 0.5, "source_locked": 0.1}, "applies to the partially-frozen"),
    ({"source_density": 0.5}, "describe a sparse source"),
    ({"source": "erdos-renyi", "source_distribution": "random"}, "unknown source distribution 'random'"),
    ({"variant": "reference", **ER}, "needs variant 'slth'"),
    ({"method": "signed", **ER}, "signed does not search inside a sparse source.*works with edge-popup"),
    ({"method": "multicoated", **PF}, "multicoated does not search inside a sparse source"),
    ({"method": "l0-gauss", **ER}, "l0-gauss does not search inside a sparse source"),
    ({"method": "l0-hc", **ER}, "l0-hc does not search inside a sparse source"),
])
def test_bad_source_settings_are_refused(kwargs, message):
    kwargs = {"density": 0.3, **kwargs}
    with pytest.raises(ValueError, match=message):
        sm.SupermaskConfig(**kwargs)


def test_a_layer_whose_mask_does_not_fit_its_source_is_refused_before_the_model_changes():
    # overall 0.3 <= 0.5, but ERK gives the last layer more than the uniform source has there
    config = sm.SupermaskConfig(density=0.3, distribution="erk", **ER)
    from slth.models import build_model
    model = build_model("fc", SHAPE, 10, hidden=[24, 12])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="does not fit its erdos-renyi source"):
        sm.apply_supermask(model, config, seed=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(True for _ in supermask_layers(model))


def test_set_source_refuses_a_pattern_the_mask_cannot_fit():
    p = next(iter(_patterns(_model()).values()))
    pattern = torch.zeros(p.scores.shape, dtype=torch.int8)
    pattern.view(-1)[:3] = FREE
    with pytest.raises(ValueError, match="does not fit a source of 3 present"):
        p.set_source(pattern)
    with pytest.raises(ValueError, match="source pattern of shape"):
        p.set_source(pattern[:1])


def test_train_config_takes_the_source_and_refuses_it_for_dense():
    config = TrainConfig(method="edge-popup", density=0.2, source="erdos-renyi", source_density=0.4)
    assert config.supermask_config().source == "erdos-renyi"
    with pytest.raises(ValueError, match="the dense method trains every weight"):
        TrainConfig(method="dense", source="erdos-renyi", source_density=0.4)
    with pytest.raises(ValueError, match="exceeds source_density"):
        TrainConfig(method="edge-popup", density=0.5, source="erdos-renyi", source_density=0.4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", METHODS)
def test_sources_on_cuda_keep_the_masks_inside_and_rebuild(method):
    model = _model(method, **PF).cuda()
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(32, *SHAPE, generator=gen).cuda(), torch.randint(0, 10, (32,), generator=gen).cuda()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5, momentum=0.9)
    model.train()
    for step in range(1, 5):
        loss = F.cross_entropy(model(x), y) + sm.regularization(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sm.after_step(model, step)
        sm.after_epoch(model, step, 4)
    model.eval()
    for p in _patterns(model).values():
        m = p.final_mask()
        assert int(m.sum()) == p.k and not (m & p.absent).any() and m[p.locked].all()
    rebuilt = sm.from_ticket(sm.to_ticket(model))
    plain = sm.materialize(model)
    for (ka, a), (_, b) in zip(plain.state_dict().items(), rebuilt.state_dict().items()):
        assert torch.equal(a.cpu(), b), ka


@pytest.mark.parametrize("method", ["edge-popup", "biprop"])
def test_the_fused_source_path_gives_the_torch_paths_weights_and_score_gradients(method):
    """edge-popup bit for bit; biprop's fused kernel sums alpha in float64 (as without a source: to float32
    rounding)."""
    model = _model(method, density=0.25, **ER).train()
    gen = torch.Generator().manual_seed(4)
    x, y = torch.randn(16, *SHAPE, generator=gen), torch.randint(0, 10, (16,), generator=gen)
    layers = list(_patterns(model).values())

    def grads():
        for p in layers:
            p.scores.grad = None
        F.cross_entropy(model(x), y).backward()
        return [p.scores.grad.clone() for p in layers]

    fused = grads()
    out = model(x)
    for p in layers:  # the reference: the straight-through top-k over the source in torch ops
        p._source_training_weight = lambda w, fused=None, p=p: p.effective_weight(w, p.training_mask())
    reference = grads()
    if method == "edge-popup":
        assert all(torch.equal(a, b) for a, b in zip(fused, reference)) and torch.equal(out, model(x))
    else:
        assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(fused, reference))
        assert torch.allclose(out, model(x), rtol=1e-5, atol=1e-6)
    assert all(not g[p.absent].any() for g, p in zip(fused, layers))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("init", ["signed-constant", "kaiming-normal"])
def test_biprop_over_a_signed_constant_source_takes_the_constant_path_bit_for_bit(monkeypatch, dtype, init):
    """biprop over an Erdos-Renyi source of +-c weights: alpha is c exactly, so the forward pass writes W * m and
    the backward pass reads the mask from it (no mask array, no alpha sums): the same bits as the general
    kernels'. Any other weight (kaiming-normal) keeps the general path."""
    from slth.supermask import _kernels as kernels

    def run(constant):
        if not constant:
            monkeypatch.setattr(sm.core.KernelState, "present_magnitude", lambda self, weight, present: 0.0)
        calls = []
        original = kernels.effective_binarized_grad
        monkeypatch.setattr(kernels, "effective_binarized_grad", lambda *a: (calls.append(1), original(*a))[1])
        model = sm.build("fc", SHAPE, 10, seed=2, hidden=[240, 120],
                         supermask=sm.SupermaskConfig(method="biprop", density=0.25, init=init, **ER)).to(dtype).train()
        gen = torch.Generator().manual_seed(6)
        x, y = torch.randn(16, *SHAPE, generator=gen, dtype=dtype), torch.randint(0, 10, (16,), generator=gen)
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5, momentum=0.9)
        seen = []
        for _ in range(4):
            out = model(x)
            F.cross_entropy(out, y).backward()
            seen += [out.detach().clone()] + [p.grad.clone() for p in model.parameters() if p.grad is not None]
            opt.step()
            opt.zero_grad()
        monkeypatch.undo()
        return seen, len(calls)

    constant, calls = run(True)
    general, general_calls = run(False)
    assert general_calls == 0 and calls == (4 * 3 if init == "signed-constant" else 0)
    assert all(a.dtype == b.dtype and a.numpy().tobytes() == b.numpy().tobytes() for a, b in zip(constant, general))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_present_constant_magnitude_needs_every_present_weight_at_c_and_every_absent_one_at_plus_zero(dtype):
    from slth.supermask import _kernels as kernels

    w = np.array([0.5, -0.5, 0.0, 0.5, 0.0], dtype)
    present = np.array([1, 1, 0, 1, 0], dtype)
    assert kernels.present_constant_magnitude(w, present) == 0.5
    for i, value in ((0, 0.25), (1, 0.0), (2, 0.5), (2, -0.0), (4, np.nan)):
        changed = w.copy()
        changed[i] = value
        assert kernels.present_constant_magnitude(changed, present) == 0.0, (i, value)
    assert kernels.present_constant_magnitude(np.zeros(3, dtype), np.zeros(3, dtype)) == 0.0  # nothing present
    assert kernels.present_constant_magnitude(np.full(3, np.inf, dtype), np.ones(3, dtype)) == 0.0
