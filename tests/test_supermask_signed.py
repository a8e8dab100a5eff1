"""Signed (Koster et al., arXiv 2201.13361) and multicoated (Okoshi et al., ICML 2022) supermasks: their masks
and gradients on hand-checkable cases against brute-force torch references, exact kept counts per coat, the
multi-level ticket format (extras ``level/<name>``) and its refusals, their settings' refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from slth import supermask as sm
from slth import ticketfile
from slth.supermask.core import ThresholdTracker, kept_count
from slth.supermask.methods import (
    METHODS,
    Multicoated,
    Signed,
    SupermaskConfig,
    kaiming_normal_fan_out_scores,
    xavier_uniform_scores,
)
from slth.train import TrainConfig

torch.set_num_threads(1)
SHAPE = (1, 8, 8)


def _model(method, density=0.3, seed=0, **kw):
    return sm.build("fc", SHAPE, 10, seed=seed, hidden=[24, 12], supermask=SupermaskConfig(method=method,
                                                                                         density=density, **kw))


def _train(model, steps=6, lr=0.5):
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(32, *SHAPE, generator=gen), torch.randint(0, 10, (32,), generator=gen)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    model.train()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _signed(scores, density, variant="slth", sign_threshold=0.4):
    return Signed(scores.shape, density, scores, sign_threshold, variant)


# ---------------------------------------------------------------- signed: masks and gradients
def test_signed_keeps_the_top_k_magnitudes_with_their_signs():
    scores = torch.tensor([0.1, -3.0, 2.0, 0.5, -0.2])
    p = _signed(scores, 0.4)  # kept_count(5, 0.4) = 2
    assert p.final_levels().tolist() == [0, -1, 1, 0, 0] and p.final_levels().dtype == torch.int8
    assert p.final_mask().tolist() == [False, True, True, False, False]
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    p.eval()
    assert p(w).tolist() == [0.0, -2.0, 3.0, 0.0, 0.0]
    # a zero score that is kept counts as positive: a kept weight never has level 0
    assert _signed(torch.tensor([0.0, 0.0, 1.0]), 1.0).final_levels().tolist() == [1, 1, 1]


def _brute_signed(scores, weight, k):
    """W * sign(m) * 1[top-k |m|] with a plain straight-through estimator, in torch ops."""
    order = torch.argsort(scores.detach().abs().reshape(-1), descending=True, stable=True)
    kept = torch.zeros(scores.numel())
    kept[order[:k]] = 1.0
    levels = torch.where(scores.detach() < 0, -1.0, 1.0) * kept.view(scores.shape)
    return weight * (scores + (levels - scores).detach())


def test_signed_training_weight_and_gradient_match_a_brute_force_straight_through_reference():
    gen = torch.Generator().manual_seed(0)
    scores, weight, grad = (torch.randn(7, 9, generator=gen) for _ in range(3))
    p = _signed(scores, 0.3).train()
    out = p(weight)
    out.backward(grad)
    s = scores.clone().requires_grad_(True)
    ref = _brute_signed(s, weight, kept_count(63, 0.3))
    ref.backward(grad)
    assert torch.equal(out, ref)
    assert torch.equal(p.scores.grad, s.grad) and torch.equal(s.grad, grad * weight)  # identity to m: no sign(m)


def test_signed_reference_keeps_scores_above_a_fixed_threshold_and_imposes_no_density():
    scores = torch.tensor([0.1, -1.0, 0.6, -0.39, 0.41, 0.0])
    p = _signed(scores, 0.5, variant="reference", sign_threshold=0.4)  # tau = 0.4 * max|m| = 0.4
    assert float(p.tau) == pytest.approx(0.4)
    assert p.final_levels().tolist() == [0, -1, 1, 0, 1, 0]  # 3 of 6 by the threshold, not by the density
    with torch.no_grad():
        p.scores.mul_(2.0)  # tau stays where init put it
    assert p.final_levels().tolist() == [0, -1, 1, -1, 1, 0]
    assert "tau" in p.state_dict()  # a resumed run keeps the init's threshold


def test_signed_reference_kept_fraction_comes_out_of_init_and_training():
    model = _model("signed", density=0.5, variant="reference")
    kept, total = sm.mask_counts(model)
    # Xavier-uniform scores over (-b, b) and tau = 0.4 * max|m|: about 60 % above it at init
    assert 0.55 < kept / total < 0.65
    assert sm.mask_counts(_model("signed", density=0.5, variant="reference", sign_threshold=0.75))[0] < kept


# ---------------------------------------------------------------- multicoated: masks and gradients
def test_multicoated_levels_count_the_coats_that_keep_each_weight():
    scores = torch.tensor([0.1, -3.0, 2.0, 0.5, -0.2, 1.0, -0.05, 0.3, 0.7, -1.5])
    p = Multicoated(scores.shape, 0.6, scores, (0.5, 1 / 6), "slth")  # coats keep 6, 3, 1 of 10
    assert p.counts == (6, 3, 1) and p.scale == 3.0
    assert p.final_levels().tolist() == [0, 3, 2, 1, 0, 1, 0, 0, 1, 2]
    assert p.final_mask().tolist() == [False, True, True, True, False, True, False, False, True, True]
    w = torch.linspace(1.0, 10.0, 10)
    p.eval()
    assert torch.equal(p(w), w * torch.tensor([0.0, 3, 2, 1, 0, 1, 0, 0, 1, 2]))


def _brute_multicoated(scores, weight, counts):
    """W * sum_j GetSubnet(|s|, k_j): each coat straight through |s|, in torch ops and autograd's sum."""
    a = scores.abs()
    level = 0.0
    for k in counts:
        level = level + sm.GetSubnet.apply(a, k)
    return weight * level


def test_multicoated_training_weight_and_gradient_match_each_coat_straight_through():
    gen = torch.Generator().manual_seed(1)
    scores, weight, grad = (torch.randn(6, 11, generator=gen) for _ in range(3))
    p = Multicoated(scores.shape, 0.5, scores, (0.4, 0.1), "slth").train()
    out = p(weight)
    out.backward(grad)
    s = scores.clone().requires_grad_(True)
    ref = _brute_multicoated(s, weight, p.counts)
    ref.backward(grad)
    assert torch.equal(out, ref)
    assert torch.equal(p.scores.grad, s.grad)
    # K sign(s) dL/dM (to rounding: the product's order differs)
    assert torch.allclose(s.grad, 3.0 * grad * weight * scores.sign(), rtol=1e-6, atol=0)


def test_multicoated_reference_thresholds_at_the_reference_percentiles():
    gen = torch.Generator().manual_seed(2)
    scores = torch.randn(5, 13, generator=gen)
    scores[0, :3] = 0.25  # ties: the reference keeps every score at its threshold
    p = Multicoated(scores.shape, 0.3, scores, (0.5,), "reference")
    a = np.sort(scores.abs().numpy().reshape(-1))
    expected = np.zeros(scores.shape, dtype=np.int8)
    for q in (0.7, 1 - 0.15):
        thr = a[1 + math.floor(q * (a.size - 1))]
        expected += (scores.abs().numpy() >= thr).astype(np.int8)
    assert np.array_equal(p.final_levels().numpy(), expected)


@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_every_coat_keeps_exactly_its_count(distribution):
    model = _train(_model("multicoated", density=0.4, distribution=distribution, coats=(0.5, 0.2)))
    densities = sm.layer_densities(model, 0.4, distribution)
    for name, module, p in sm.supermask_layers(model):
        n, d = module.weight.numel(), densities[name]
        levels = p.final_levels()
        for j, fraction in enumerate((1.0, 0.5, 0.2), start=1):
            assert int((levels >= j).sum()) == kept_count(n, d * fraction), (name, j)


def test_multicoated_reference_weight_is_the_signed_kaiming_constant_of_the_first_coat():
    model = _model("multicoated", density=0.25, init="scaled-signed-constant")
    for name, module, _ in sm.supermask_layers(model):
        w = module.parametrizations.weight.original
        fan_in = w.shape[1]
        c = math.sqrt(2.0) / math.sqrt(fan_in * 0.25)  # gain_relu / sqrt(fan_in * (1 - q_1))
        assert torch.allclose(w.abs(), torch.full_like(w, c)), name
    # the reference variant scales by the kept fraction too (its sign_init: fan * (1 - sparsity[0]))
    ref = _model("multicoated", density=0.25, variant="reference")
    for (_, a, _), (_, b, _) in zip(sm.supermask_layers(model), sm.supermask_layers(ref)):
        assert torch.equal(a.parametrizations.weight.original, b.parametrizations.weight.original)


def test_the_reference_score_inits():
    u = torch.rand(30, 40, generator=torch.Generator().manual_seed(0))
    x = xavier_uniform_scores(u, 40, 0.5)
    assert torch.allclose(x, (2 * u - 1) * math.sqrt(6 / 70))
    conv = torch.rand(8, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    assert float(xavier_uniform_scores(conv, 75, 0.5).abs().max()) <= math.sqrt(6 / (75 + 200))
    big = torch.rand(400, 500, generator=torch.Generator().manual_seed(0))
    k = kaiming_normal_fan_out_scores(big, 500, 0.5)
    assert abs(float(k.std()) - math.sqrt(2 / 400)) < 0.01 * math.sqrt(2 / 400) and abs(float(k.mean())) < 1e-3
    assert torch.isfinite(kaiming_normal_fan_out_scores(torch.zeros(4, 4), 4, 0.5)).all()  # u = 0


# ---------------------------------------------------------------- the fast paths: the same bits
@pytest.mark.parametrize("method", ["signed", "multicoated"])
def test_levels_do_not_depend_on_the_trackers_state_or_the_thread_count(method):
    model = _train(_model(method, density=0.2), steps=4)
    _, module, p = next(sm.supermask_layers(model))
    first = p.final_levels().clone()
    fresh = METHODS[method].make(p.scores.shape, p.density, p.scores.detach(),
                                 config=SupermaskConfig(method=method, density=0.2), sample_seed=0, redraw=None)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert torch.equal(fresh.final_levels(), first)  # a full selection, not the band
        with torch.no_grad():
            p.scores.mul_(1.0001)  # the band around the last thresholds
        assert torch.equal(p.final_levels(), first)
    finally:
        torch.set_num_threads(threads)
    tracker = ThresholdTracker()
    a = p.scores.detach().abs().reshape(-1).numpy()
    assert tracker.threshold(a, 10) == np.sort(a)[-10]


# ---------------------------------------------------------------- tickets
@pytest.mark.parametrize("method", ["signed", "multicoated"])
def test_a_ticket_stores_the_level_of_each_kept_weight(method, tmp_path):
    model = _train(_model(method, seed=4))
    ticket = sm.to_ticket(model, tmp_path / "t.slth")
    loaded = ticketfile.load(tmp_path / "t.slth")
    for name, _, tensor, p in sm.apply._supermasks(model):
        key = f"{name}.{tensor}"
        levels = loaded.extras[f"level/{key}"]
        assert levels.dtype == np.int8 and levels.shape == (int(loaded.masks[key].sum()),)
        assert np.array_equal(levels, p.final_levels().numpy()[loaded.masks[key]])
    if method == "signed":
        assert set(np.unique(levels)) == {-1, 1}
    else:
        assert set(np.unique(levels)) <= {1, 2, 3} and 3 in set(np.unique(levels))
    rebuilt = sm.from_ticket(ticket)
    x = torch.randn(5, *SHAPE)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def _damaged(ticket, change):
    extras = dict(ticket.extras)
    change(extras)
    return ticketfile.TicketFile(seed=ticket.seed, config=ticket.config, masks=ticket.masks, extras=extras)


def test_a_ticket_with_missing_or_wrong_levels_is_refused():
    ticket = sm.to_ticket(_train(_model("signed")))
    key = next(k for k in ticket.extras if k.startswith("level/"))

    def drop(extras):
        del extras[key]

    def short(extras):
        extras[key] = extras[key][:-1]

    def zero(extras):
        extras[key] = np.zeros_like(extras[key])

    def wide(extras):
        extras[key] = extras[key].astype(np.int16)

    with pytest.raises(ticketfile.TicketFileError, match="level of each kept weight .* lacks"):
        sm.from_ticket(_damaged(ticket, drop))
    for change in (short, zero, wide):
        with pytest.raises(ticketfile.TicketFileError, match="must be .* nonzero int8 values"):
            sm.from_ticket(_damaged(ticket, change))


def test_levels_on_a_kept_or_pruned_method_are_refused():
    ticket = sm.to_ticket(_train(_model("edge-popup")))
    assert not any(k.startswith("level/") for k in ticket.extras)  # 0/1 tickets are as before
    key = next(iter(ticket.masks))

    def add(extras):
        extras[f"level/{key}"] = np.ones(int(ticket.masks[key].sum()), dtype=np.int8)

    with pytest.raises(ticketfile.TicketFileError, match="holds levels .* kept / pruned only"):
        sm.from_ticket(_damaged(ticket, add))


def test_an_old_ticket_config_without_the_new_settings_still_loads():
    ticket = sm.to_ticket(_train(_model("edge-popup")))
    config = dict(ticket.config)
    config["supermask"] = {k: v for k, v in config["supermask"].items() if k not in ("sign_threshold", "coats")}
    old = ticketfile.TicketFile(seed=ticket.seed, config=config, masks=ticket.masks, extras=ticket.extras)
    old = ticketfile.from_bytes(ticketfile.to_bytes(old))
    assert sm.from_ticket(old).slth_spec["supermask"]["method"] == "edge-popup"


def test_coats_survive_the_json_of_a_ticket(tmp_path):
    model = _train(_model("multicoated", coats=(0.6,)))
    sm.to_ticket(model, tmp_path / "t.slth")
    rebuilt = sm.from_ticket(tmp_path / "t.slth")
    assert SupermaskConfig(**rebuilt.slth_spec["supermask"]).coats == (0.6,)
    cfg = TrainConfig(method="multicoated", coats=(0.5, 0.25))
    assert TrainConfig.from_dict(cfg.to_dict() | {"coats": [0.5, 0.25]}) == cfg


# ---------------------------------------------------------------- settings
@pytest.mark.parametrize("field,value,message", [
    ("sign_threshold", 1.0, r"sign_threshold \(tau as a fraction of the largest initial \|score\|\) must lie in "
                            r"\[0, 1\), got 1\.0$"),
    ("sign_threshold", -0.1, r"sign_threshold .* got -0\.1$"),
    ("sign_threshold", True, r"sign_threshold .* got True$"),
    ("coats", (0.5, 0.5), r"coats must decrease .* got \(0\.5, 0\.5\)$"),
    ("coats", (0.2, 0.4), r"coats must decrease"),
    ("coats", (1.0,), r"each coat's kept fraction relative to the outermost coat must lie in \(0, 1\)"),
    ("coats", (0.0,), r"must lie in \(0, 1\)"),
    ("coats", 0.5, r"coats must be a tuple of numbers"),
    ("coats", ("a",), r"coats must be a tuple of numbers"),
    ("coats", tuple(0.9 ** (i + 1) for i in range(127)), r"at most 127 coats .* got 128$"),
])
def test_each_bad_setting_is_refused_by_name_and_value(field, value, message):
    with pytest.raises(ValueError, match=message):
        SupermaskConfig(method="multicoated", **{field: value})
    with pytest.raises(ValueError, match=message):
        TrainConfig(method="signed", **{field: value})


def test_the_defaults_and_the_reference_defaults():
    for name, lr, wd, init in (("signed", 0.005, 3e-4, "signed-constant"),
                               ("multicoated", 0.1, 1e-4, "scaled-signed-constant")):
        cfg = TrainConfig(method=name, variant="reference").resolved()
        assert (cfg.lr, cfg.weight_decay, cfg.init) == (lr, wd, init)
        mine = TrainConfig(method=name).resolved()
        assert (mine.lr, mine.weight_decay, mine.init) == (METHODS[name].lr, METHODS[name].weight_decay,
                                                           METHODS[name].init)
    assert SupermaskConfig(method="multicoated").init == "signed-constant"
    assert SupermaskConfig(method="multicoated", variant="reference").init == "scaled-signed-constant"
    # the multicoated reference scales the fan by the kept fraction: density 1 is fine (fan * 1)
    assert SupermaskConfig(method="multicoated", variant="reference", density=1.0).density == 1.0
    with pytest.raises(ValueError, match="which is 0 at density 1"):  # edge-popup's reference: fan * (1 - 1)
        SupermaskConfig(method="edge-popup", variant="reference", init="scaled-signed-constant", density=1.0)


# ---------------------------------------------------------------- fused CPU kernels against the torch path
def _both_paths(p, weight, grad):
    """(fused output, its score gradient), (torch-path output, its score gradient) of parametrization ``p``."""
    from slth.supermask.methods import _Leveled

    results = []
    for path in (type(p).training_weight, _Leveled.training_weight):
        p.scores.grad = None
        out = path(p, weight)
        out.backward(grad)
        results.append((out.detach().clone(), p.scores.grad.clone()))
    return results


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method, coats", [("signed", None), ("multicoated", (0.5, 0.25)), ("multicoated", ()),
                                           ("multicoated", (0.8, 0.6, 0.4)), ("multicoated", (0.8, 0.6, 0.4, 0.2))],
                         ids=["signed", "3-coats", "1-coat", "4-coats", "5-coats"])
def test_the_fused_kernels_give_the_torch_paths_bits(method, coats, dtype):
    """Up to 4 coats the forward pass is few_coated_weight's single pass, with more the general kernel: both
    give the torch path's bits, ties at a threshold included (then the tie-limited kernel)."""
    gen = torch.Generator().manual_seed(5)
    scores = torch.randn(40, 50, generator=gen, dtype=dtype)
    scores[0, :10] = 0.5  # ties at a threshold
    scores[1, :5] = -0.5
    scores[2, :3] = 0.0  # zero scores: positive levels
    weight, grad = torch.randn(40, 50, generator=gen, dtype=dtype), torch.randn(40, 50, generator=gen, dtype=dtype)
    for density in (0.3, float((scores.abs() >= 0.5).sum() - 7) / 2000, 1.0):
        if method == "signed":
            p = Signed(scores.shape, density, scores, 0.4, "slth")
        else:
            p = Multicoated(scores.shape, density, scores, coats, "slth")
        p.train()
        for _ in range(2):  # the second time through the trackers' bands
            (fused, fused_grad), (ref, ref_grad) = _both_paths(p, weight, grad)
            assert torch.equal(fused, ref), density
            assert torch.equal(fused_grad, ref_grad), density
            assert torch.equal(fused.ne(0), p.final_mask())


@pytest.mark.parametrize("method", ["signed", "multicoated"])
def test_the_fused_kernels_give_the_same_bits_on_any_thread_count(method):
    gen = torch.Generator().manual_seed(6)
    shape = (300, 240)  # above PARALLEL_MIN: the top-k kernels run chunked on several threads
    scores, weight, grad = (torch.randn(*shape, generator=gen) for _ in range(3))
    outputs = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            p = (Signed(shape, 0.2, scores, 0.4, "slth") if method == "signed"
                 else Multicoated(shape, 0.2, scores, (0.5,), "slth")).train()
            out = p(weight)
            out.backward(grad)
            outputs.append((out.detach().clone(), p.scores.grad.clone()))
    finally:
        torch.set_num_threads(threads)
    for out, g in outputs[1:]:
        assert torch.equal(out, outputs[0][0]) and torch.equal(g, outputs[0][1])


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 300), coats=st.integers(1, 4), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from([np.float32, np.float64]), ties=st.booleans())
def test_few_coated_weight_is_the_general_kernel_without_counts(n, coats, seed, dtype, ties):
    from slth.supermask import _kernels as kernels

    rng = np.random.default_rng(seed)
    s = rng.standard_normal(n).astype(dtype)
    if ties:
        s[rng.integers(0, n, n // 3 + 1)] = dtype(0.5) * rng.choice([-1, 1])
    s[rng.integers(0, n)] = np.inf
    w = rng.standard_normal(n).astype(dtype)
    thresholds = np.sort(rng.choice(np.abs(s), coats)).astype(dtype)
    expected, kept = np.empty(n, dtype), np.empty(coats, np.int64)
    kernels.coated_weight(w, s, thresholds, kept, False, expected, kept)
    padded = np.full(kernels.FEW_COATS, np.nan, dtype)
    padded[:coats] = thresholds
    got = np.empty(n, dtype)
    kernels.few_coated_weight(w, s, padded, got)
    assert got.tobytes() == expected.tobytes()


@settings(max_examples=150, deadline=None)
@given(n=st.integers(2, 400), seed=st.integers(0, 2**32 - 1), ties=st.booleans(), absolute=st.booleans())
def test_threshold_count_counts_the_values_at_or_above_the_threshold(n, seed, ties, absolute):
    """Through the band (the second call, near the first threshold) and through a full selection (the first):
    the k-th largest and how many values are at or above it, ties included."""
    from slth.supermask.core import ThresholdTracker

    rng = np.random.default_rng(seed)
    v = rng.standard_normal(n).astype(np.float32)
    if ties:
        v[rng.integers(0, n, n // 2)] = np.float32(0.25) * rng.choice([-1, 1])
    a = np.abs(v) if absolute else v
    tracker = ThresholdTracker()
    for k in (max(1, n // 2), max(1, n // 2 - 1)):
        thr, at_or_above = tracker.threshold_count(v, k, absolute)
        assert thr == np.sort(a)[n - k] and at_or_above == int((a >= thr).sum())
        assert tracker.threshold(v, k, absolute) == thr


# ---------------------------------------------------------------- the trainer and the command line
@pytest.mark.parametrize("method,extra", [("multicoated", ["--coats", "0.5"]),
                                          ("signed", ["--variant", "reference", "--sign-threshold", "0.5"])])
def test_slth_train_runs_the_method_with_its_settings(method, extra, tmp_path):
    import json

    from typer.testing import CliRunner

    from slth.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--method", method, "--data", "digits", "--hidden", "16", "--epochs",
                                      "1", "--precision", "bf16", "--device", "cpu", "--quiet", "--out", str(out),
                                      *extra])
    assert result.exit_code == 0, result.output + repr(result.exception)
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert config["method"] == method and config["precision"] == "bf16"
    rebuilt = sm.from_ticket(out / "ticket.slth")
    settings = SupermaskConfig(**rebuilt.slth_spec["supermask"])
    if method == "multicoated":
        assert config["coats"] == [0.5] and settings.coats == (0.5,)
    else:
        assert config["sign_threshold"] == 0.5 and settings.sign_threshold == 0.5


# ---------------------------------------------------------------- the default learning rate
def _lenet5_on_digits(lr: float | None) -> list[float]:
    """Signed LeNet-5 (density 0.5, seed 0) trained by slth.train.fit for 3 epochs on 1,000 digits upsampled to
    28 x 28 (LeNet-5's input; no data files needed) at ``lr`` (None: the default); its test accuracy per epoch."""
    from slth.data import load_dataset
    from slth.seeding import generator
    from slth.train import fit

    ds = load_dataset("digits")

    def images(x):
        return F.interpolate(ds.normalized(x), size=(28, 28), mode="bilinear", align_corners=False)

    train = torch.utils.data.TensorDataset(images(ds.x_train[:1000]), ds.y_train[:1000])
    test = torch.utils.data.TensorDataset(images(ds.x_test), ds.y_test)
    cfg = TrainConfig(method="signed", model="lenet5", density=0.5, epochs=3, seed=0, lr=lr, device="cpu")
    net = sm.build("lenet5", (1, 28, 28), 10, seed=0, supermask=cfg.supermask_config(), init=cfg.resolved().init)
    loader = torch.utils.data.DataLoader(train, batch_size=128, shuffle=True, generator=generator(0, "order"))
    run = fit(net, loader, torch.utils.data.DataLoader(test, batch_size=1000), cfg)
    return run.metrics["test_accuracy_per_epoch"]


def test_the_default_learning_rate_trains_lenet5():
    """The signed default lr (0.5; docs/supermask.md) trains a bias-free conv net: at the earlier default, 10, a few
    steps turn every unit of some layer of LeNet-5 off (the test accuracy then stays at one class's share)."""
    assert METHODS["signed"].lr == 0.5
    assert _lenet5_on_digits(None)[-1] > 0.6  # 0.82 measured
    dead = _lenet5_on_digits(10.0)
    assert max(dead) < 0.15 and len(set(dead)) == 1  # the failure this default avoids: one class, every epoch
