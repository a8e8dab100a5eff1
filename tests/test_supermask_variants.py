"""variant="reference": each supermask method as its reference code runs it, pinned on hand-checkable cases
(the kept count and ties of hidden-networks' GetSubnet, biprop's straight-through gradient and alpha divisor,
IteRand's signed percentile and re-draw step, Gem-Miner's global schedule, Zhou et al.'s unshifted sampling),
tickets of both variants, and the setting's path through the trainer and the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from slth.cli import app
from slth.supermask import (
    SupermaskConfig,
    after_epoch,
    after_step,
    build,
    from_ticket,
    kept_count,
    regularization,
    supermask_layers,
    to_ticket,
)
from slth.supermask.core import percentile_threshold, reference_kept_count
from slth.supermask.methods import METHODS, Bernoulli, BiProp, EdgePopup, GemMiner, IteRand
from slth.train import TrainConfig


# ---------------------------------------------------------------- kept count and ties (hidden-networks GetSubnet)
def test_reference_kept_count_truncates_the_pruned_count():
    # GetSubnet zeroes int((1 - k) * n) and keeps the rest
    assert reference_kept_count(10, 0.25) == 10 - 7 == 3
    assert reference_kept_count(300 * 784, 0.9) == 211_681 and kept_count(300 * 784, 0.9) == 211_680
    assert reference_kept_count(64 * 3 * 3 * 3, 0.3) == 519 and kept_count(64 * 3 * 3 * 3, 0.3) == 518
    with pytest.raises(ValueError, match="density"):
        reference_kept_count(10, 0.0)


@pytest.mark.parametrize("method", ["edge-popup", "biprop"])
def test_reference_layer_keeps_the_reference_count(method):
    shape = torch.Size([300, 784])
    scores = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    for variant, kept in (("reference", 211_681), ("slth", 211_680)):
        p = METHODS[method].make(shape, 0.9, scores, config=SupermaskConfig(method=method, variant=variant),
                                 sample_seed=0, redraw=None)
        assert int(p.final_mask().sum()) == kept
        weight = torch.ones(shape)
        assert int((p.train()(weight) != 0).sum()) == kept  # the training mask too


def test_reference_keeps_the_last_tied_indices():
    # |s| = 1, 2, 2, 2, 0 and 2 kept: an ascending sort ranks the tied 2s in index order and keeps the top
    # two of it, indices 2 and 3; slth keeps the first tied ones, 1 and 2
    scores = torch.tensor([[1.0, -2.0, 2.0, 2.0, 0.0]])
    ref = EdgePopup(scores.shape, 0.4, scores, "reference")
    assert ref.k == 2
    assert ref.final_mask().nonzero()[:, 1].tolist() == [2, 3]
    assert EdgePopup(scores.shape, 0.4, scores).final_mask().nonzero()[:, 1].tolist() == [1, 2]


def test_reference_edge_popup_gradient_is_straight_through():
    w = torch.tensor([[1.0, -2.0], [3.0, -4.0]])
    s = torch.tensor([[0.5, -0.1], [0.3, -0.9]])
    g = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    p = EdgePopup(s.shape, 0.5, s, "reference").train()
    out = p(w)
    assert torch.equal(out, torch.tensor([[1.0, 0.0], [0.0, -4.0]]))
    out.backward(g)
    assert torch.equal(p.scores.grad, g * w * s.sign())  # dL/ds = dL/dW_eff * W * sign(s), pruned ones too


# ---------------------------------------------------------------- biprop
def test_reference_biprop_gradient_is_straight_through_and_alpha_divides_by_int_kn():
    w = torch.tensor([[1.0, -2.0], [3.0, -4.0]])
    s = torch.tensor([[0.5, -0.1], [0.3, -0.9]])
    g = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    ref = BiProp(s.shape, 0.5, s, "reference").train()
    out = ref(w)
    # kept: |s| = 0.9 and 0.5 (weights -4 and 1); alpha = (1 + 4) / int(0.5 * 4) = 2.5
    assert torch.equal(out, torch.tensor([[2.5, 0.0], [0.0, -2.5]]))
    out.backward(g)
    assert torch.equal(ref.scores.grad, g * w * s.sign())  # not through alpha
    mine = BiProp(s.shape, 0.5, s).train()
    mine(w).backward(g)
    assert not torch.equal(mine.scores.grad, ref.scores.grad)  # slth differentiates through alpha


def test_reference_biprop_alpha_divisor_differs_from_the_kept_count():
    # n = 10 at density 0.25: the reference keeps 10 - int(7.5) = 3 but divides by int(2.5) = 2
    s = torch.arange(1.0, 11.0).view(1, 10)
    w = torch.full((1, 10), 2.0)
    ref = BiProp(s.shape, 0.25, s, "reference").eval()
    assert (ref.k, ref.divisor) == (3, 2)
    assert torch.equal(ref(w), torch.tensor([[0.0] * 7 + [3.0] * 3]))  # alpha = 3 * 2 / 2
    assert torch.equal(BiProp(s.shape, 0.25, s).eval()(w), torch.tensor([[0.0] * 7 + [2.0] * 3]))


# ---------------------------------------------------------------- IteRand
def test_reference_iterand_keeps_signed_scores_above_the_percentile():
    s = torch.tensor([[-3.0, -1.0, 0.5, 2.0, -0.2, 1.0]])
    # sparsity 0.5: k = 1 + round(0.5 * 5) = 1 + 2 (half to even); the 3rd smallest is -0.2
    assert percentile_threshold(s, 0.5) == pytest.approx(-0.2)
    ref = IteRand(s.shape, 0.5, s, 0, redraw=lambda g: torch.zeros(s.shape), period=300, prob=0.1,
                  variant="reference")
    assert ref.final_mask().nonzero()[:, 1].tolist() == [2, 3, 4, 5]
    mine = IteRand(s.shape, 0.5, s, 0, redraw=lambda g: torch.zeros(s.shape), period=300, prob=0.1)
    assert mine.final_mask().nonzero()[:, 1].tolist() == [0, 1, 3]  # top 3 of |s|
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    g = torch.ones_like(w)
    ref.train()(w).backward(g)
    assert torch.equal(ref.scores.grad, g * w)  # straight-through in the signed scores: no sign(s)


@pytest.mark.parametrize("variant,first", [("reference", 2), ("slth", 3)])
def test_iterand_redraw_step(variant, first):
    # the reference re-draws before iteration it (0-based) when (it + 1) % period == 0: after step period - 1
    s = torch.tensor([[3.0, 2.0, 1.0, 0.5]])
    p = IteRand(s.shape, 0.5, s, 0, redraw=lambda g: torch.full(s.shape, 7.0 + g), period=3, prob=1.0,
                variant=variant)
    w = torch.ones(s.shape)
    redrawn = []
    for step in range(1, 7):
        before = w.clone()
        p.after_step(step, w)
        if not torch.equal(w, before):
            redrawn.append(step)
    assert redrawn == [first, first + 3]
    assert p.generation.tolist() == [[0, 0, 2, 2]]  # the pruned half, at the second re-draw


# ---------------------------------------------------------------- Gem-Miner
def _gem(scores, variant="reference"):
    return GemMiner(scores.shape, 0.5, scores, score_l2=1e-4, variant=variant)


def test_reference_gem_miner_prunes_globally_every_five_epochs():
    a = _gem(torch.tensor([[0.9, 0.85], [0.6, 0.7]]))
    b = _gem(torch.tensor([[0.1, 0.8, 0.2, 0.3, 0.95, 0.05]]))
    for epoch in range(1, 6):  # 0-based epochs 0..4: no pruning (e % 5 != 0, or e == 0)
        GemMiner.after_epoch_all([a, b], epoch, 6)
        assert bool(a.alive.all()) and bool(b.alive.all())
    # after 0-based epoch 5 of 6: rate = 1 - 0.5 ** (1 / floor(5 / 5)) = 0.5, ceil(0.5 * 10) = 5 pruned over
    # both layers: the threshold is the 5th smallest score, 0.6, and weights at it go too
    GemMiner.after_epoch_all([a, b], 6, 6)
    assert a.alive.tolist() == [[True, True], [False, True]]  # 3 of 4 stay
    assert b.alive.tolist() == [[False, True, False, False, True, False]]  # 2 of 6
    # per layer (slth) each layer keeps its own half
    c, d = _gem(torch.tensor([[0.9, 0.85], [0.6, 0.7]]), "slth"), _gem(torch.tensor([[0.1, 0.8, 0.2, 0.3, 0.95, 0.05]]),
                                                                       "slth")
    GemMiner.after_epoch_all([c, d], 6, 6)
    assert int(c.alive.sum()) == 2 and int(d.alive.sum()) == 3


def test_reference_gem_miner_through_the_model_hook_and_its_regulariser():
    net = build("fc", (1, 4, 4), 3, seed=0, hidden=[8],
                supermask=SupermaskConfig(method="gem-miner", density=0.5, variant="reference"))
    layers = [p for _, _, p in supermask_layers(net)]
    after_epoch(net, 6, 11)  # e = 5, rounds = floor(10 / 5) = 2: rate = 1 - sqrt(0.5)
    active = sum(int(p.alive.sum()) for p in layers)
    total = sum(p.alive.numel() for p in layers)
    assert total - active >= math.ceil((1 - math.sqrt(0.5)) * total)
    # the regulariser: lambda * ||s||^2 over every score, pruned ones too, never switched off
    expected = sum(1e-4 * float((p.scores.detach() ** 2).sum()) for p in layers)
    assert float(regularization(net).detach()) == pytest.approx(expected, rel=1e-5)
    net.eval()  # the final mask: rounded scores on the remaining set
    for p in layers:
        assert torch.equal(p.final_mask(), (p.scores.detach() > 0.5) & p.alive)


# ---------------------------------------------------------------- Bernoulli (Zhou et al.)
def test_reference_bernoulli_samples_sigmoid_scores_unshifted():
    s = torch.linspace(-2.0, 2.0, 4000).view(40, 100)
    p = Bernoulli(s.shape, 0.3, s, sample_seed=1, variant="reference").train()
    w = torch.ones(s.shape)
    draws = 200
    total = torch.zeros(s.shape)
    for _ in range(draws):
        total += p(w).detach()
    p.after_epoch(1, 2)
    assert float(p.shift) == 0.0 and float(p.temperature) == 1.0  # no shift, no temperature
    assert torch.equal(p.probabilities(), torch.sigmoid(s))
    # per group of 400 weights with similar probability, the sampled frequency is sigmoid(s) (4 sigma)
    freq = (total / draws).view(10, 400).mean(1)
    expected = torch.sigmoid(s).view(10, 400).mean(1)
    assert torch.all((freq - expected).abs() < 4 * torch.sqrt(expected * (1 - expected) / (400 * draws)))
    # overall about sigmoid's mean (0.5 here), not the density 0.3 slth would hold it at
    assert abs(float(total.mean()) / draws - 0.5) < 0.01
    assert torch.equal(p.eval().final_mask(), s > 0)  # eval: the most probable mask


def test_reference_bernoulli_scores_start_unshifted():
    net = build("fc", (1, 4, 4), 3, seed=0, hidden=[8],
                supermask=SupermaskConfig(method="bernoulli", density=0.3, variant="reference"))
    mine = build("fc", (1, 4, 4), 3, seed=0, hidden=[8], supermask=SupermaskConfig(method="bernoulli", density=0.3))
    a = next(p for n, p in net.named_parameters() if n.endswith("scores"))
    b = next(p for n, p in mine.named_parameters() if n.endswith("scores"))
    assert torch.allclose(b - a, torch.full_like(a, math.log(0.3 / 0.7)), atol=1e-6)


# ---------------------------------------------------------------- inits and defaults
def test_reference_scaled_init_scales_the_fan_by_the_pruned_fraction():
    for variant, fraction in (("slth", 0.3), ("reference", 0.7)):
        net = build("fc", (1, 4, 4), 3, seed=0, hidden=[8], supermask=SupermaskConfig(
            method="edge-popup", density=0.3, init="scaled-signed-constant", variant=variant))
        w = next(m for m in net.modules() if isinstance(m, torch.nn.Linear)).parametrizations.weight.original
        assert torch.allclose(w.abs(), torch.full_like(w, math.sqrt(2.0) / math.sqrt(16 * fraction)))


def test_reference_scaled_init_at_density_one_is_refused():
    with pytest.raises(ValueError, match="density 1"):
        SupermaskConfig(method="edge-popup", density=1.0, init="scaled-kaiming-normal", variant="reference")
    SupermaskConfig(method="edge-popup", density=1.0, init="scaled-kaiming-normal")  # slth: fan * 1


def test_reference_scaled_init_refuses_a_dense_erk_layer_before_changing_the_model():
    from slth.supermask import apply_supermask

    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))  # erk: layer 2 dense
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = SupermaskConfig(method="edge-popup", density=0.9, distribution="erk", init="scaled-signed-constant",
                          variant="reference")
    with pytest.raises(ValueError, match="density 1 .*2"):
        apply_supermask(net, cfg, seed=0)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not any(p.requires_grad is False for p in net.parameters())  # not frozen either


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="variant 'nope'"):
        SupermaskConfig(variant="nope")
    with pytest.raises(ValueError, match="variant 'nope'"):
        TrainConfig(variant="nope")
    with pytest.raises(ValueError, match="variant 'nope'"):
        TrainConfig(method="dense", variant="nope")


def test_reference_defaults_come_from_the_reference_configs():
    for name, lr, wd in (("edge-popup", 0.1, 1e-4), ("biprop", 0.1, 1e-4), ("iterand", 0.1, 1e-4),
                         ("gem-miner", 0.1, 0.0), ("bernoulli", 100.0, 0.0)):
        cfg = TrainConfig(method=name, variant="reference").resolved()
        assert (cfg.lr, cfg.weight_decay) == (lr, wd) and METHODS[name].reference.source
        assert cfg.supermask_config().variant == "reference"
        mine = TrainConfig(method=name).resolved()
        assert (mine.lr, mine.weight_decay, mine.init) == (METHODS[name].lr, METHODS[name].weight_decay,
                                                           METHODS[name].init)
    assert TrainConfig(method="biprop", variant="reference").resolved().init == "scaled-kaiming-normal"


# ---------------------------------------------------------------- tickets
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("variant", ["reference", "slth"])
def test_ticket_round_trip(method, variant, tmp_path):
    own = {"rerand_period": 2, "rerand_prob": 0.5} if method == "iterand" else {}
    cfg = SupermaskConfig(method=method, density=0.3, variant=variant, **own)
    net = build("fc", (1, 6, 6), 4, seed=3, hidden=[16, 8], supermask=cfg)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 1, 6, 6, generator=gen), torch.randint(0, 4, (32,), generator=gen)
    for step in range(1, 9):
        loss = torch.nn.functional.cross_entropy(net(x), y) + regularization(net)
        opt.zero_grad()
        loss.backward()
        opt.step()
        after_step(net, step)
        if step % 2 == 0:
            after_epoch(net, step // 2, 4)
    net.eval()
    with torch.no_grad():
        expected = net(x)
    to_ticket(net, tmp_path / "t.slth")
    rebuilt = from_ticket(tmp_path / "t.slth")
    assert rebuilt.slth_spec["supermask"]["variant"] == variant
    with torch.no_grad():
        assert torch.equal(rebuilt(x), expected)


# ---------------------------------------------------------------- trainer and CLI
def test_cli_train_variant_reaches_the_run(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--method", "edge-popup", "--variant", "reference", "--data", "digits",
                                      "--hidden", "16", "--epochs", "1", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["variant"] == "reference" and metrics["config"]["lr"] == 0.1
    assert from_ticket(out / "ticket.slth").slth_spec["supermask"]["variant"] == "reference"
