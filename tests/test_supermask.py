"""slth.supermask: gradients reach only scores, frozen weights stay frozen, densities are exact, and
tickets rebuild bit-identically from the seed; a learned ticket rebuilds only into the model it was learned on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slth import supermask as sm
from slth import ticketfile
from slth.supermask import core as sm_core
from slth.supermask.ticket import from_ticket, materialize, to_ticket

torch.set_num_threads(1)
SHAPE = (1, 8, 8)


def _own(method, **settings):
    """The settings of ``settings`` that ``method`` reads (another method's own setting is refused)."""
    entry = sm.METHODS.get(method)
    return {k: v for k, v in settings.items() if entry is not None and k in entry.settings}


def _model(method="edge-popup", density=0.3, seed=0, **kw):
    config = sm.SupermaskConfig(method=method, density=density, **kw)
    return sm.build("fc", SHAPE, 10, seed=seed, hidden=[24, 12], supermask=config)


def _train(model, steps=12, lr=0.5):
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(32, *SHAPE, generator=gen), torch.randint(0, 10, (32,), generator=gen)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    model.train()
    for step in range(1, steps + 1):
        loss = F.cross_entropy(model(x), y) + sm.regularization(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sm.after_step(model, step)
    sm.after_epoch(model, 1, 1)
    return model


def test_kept_count_and_topk_are_exact():
    assert sm.kept_count(10, 0.25) == 3 and sm.kept_count(10, 0.35) == 4 and sm.kept_count(10, 1e-9) == 1
    assert sm.kept_count(7, 1.0) == 7
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="density"):
            sm.kept_count(10, bad)
    ties = torch.tensor([1.0, 2.0, 2.0, 2.0, 0.5])
    assert sm.topk_mask(ties, 2).tolist() == [False, True, True, False, False]  # ties kept in index order
    assert sm.topk_mask(ties, 4).tolist() == [True, True, True, True, False]
    assert sm.topk_mask(torch.tensor([0.0, -math.inf, 1.0, 0.0]), 2).tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match="NaN"):
        sm.topk_mask(torch.tensor([1.0, math.nan, 0.0]), 1)
    assert sm.topk_mask(torch.tensor([3.0, 1.0, 2.0]), 2).tolist() == [True, False, True]


def test_get_subnet_is_straight_through():
    scores = torch.tensor([0.1, -3.0, 2.0, 0.5], requires_grad=True)
    mask = sm.GetSubnet.apply(scores.abs(), 2)
    assert mask.tolist() == [0.0, 1.0, 1.0, 0.0]
    (mask * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert scores.grad.tolist() == [1.0, -2.0, 3.0, 4.0]  # identity through the mask, sign from |s|


@pytest.mark.parametrize("method", sm.METHODS)
def test_only_scores_receive_gradients(method):
    model = _model(method)
    model.train()
    F.cross_entropy(model(torch.randn(8, *SHAPE)), torch.arange(8)).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, _ in model.named_parameters() if n.endswith(".scores")}
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n in with_grad)
    assert not any(p.requires_grad for n, p in model.named_parameters() if not n.endswith(".scores"))


@pytest.mark.parametrize("method", [m for m in sm.METHODS if m != "iterand"])
def test_frozen_weights_bitwise_unchanged_and_scores_trained(method):
    model = _model(method)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _train(model)
    for n, p in model.named_parameters():
        if n.endswith(".scores"):
            assert not torch.equal(p, before[n]), n
        else:
            assert torch.equal(p, before[n]), n


def test_iterand_redraws_only_pruned_weights_and_records_generation():
    model = _model("iterand", rerand_period=4, rerand_prob=0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("original")}
    _train(model, steps=12)
    changed_any = False
    for name, module, p in sm.supermask_layers(model):
        w = module.parametrizations.weight.original
        old = before[f"{name}.parametrizations.weight.original"]
        changed = w != old
        assert torch.equal(changed, (p.generation != 0) & changed)  # a change is always a recorded re-draw
        assert int(p.generation.max()) <= 3
        changed_any |= bool(changed.any())
    assert changed_any


@pytest.mark.parametrize("method", sm.METHODS)
@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_density_is_honoured_exactly(method, distribution):
    model = _train(_model(method, density=0.37, distribution=distribution), steps=3)
    densities = sm.layer_densities(model, 0.37, distribution)
    model.eval()
    for name, module, p in sm.supermask_layers(model):
        expected = sm.kept_count(module.weight.numel(), densities[name])
        assert int(p.final_mask().sum()) == expected
        assert int((module.weight != 0).sum()) == expected  # eval-mode effective weight uses the final mask
    kept, total = sm.mask_counts(model)
    assert abs(kept / total - 0.37) < 0.01


def test_erk_gives_small_layers_more_density():
    model = sm.build("fc", SHAPE, 10, seed=0, hidden=[24, 12])
    d = sm.layer_densities(model, 0.3, "erk")
    assert d["layers.1"] < d["layers.3"] <= 1.0
    numel = {n: m.weight.numel() for n, m in sm.prunable_layers(model)}
    assert abs(sum(d[n] * numel[n] for n in d) - 0.3 * sum(numel.values())) < 1e-6


def test_same_seed_same_weights_other_seed_differs():
    a, b, c = _model(seed=5), _model(seed=5), _model(seed=6)
    torch.manual_seed(123)  # global RNG state must not matter
    d = _model(seed=5)
    for (n, pa), pb, pc, pd in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values(),
                                   d.state_dict().values()):
        assert torch.equal(pa, pb) and torch.equal(pa, pd), n
        assert not torch.equal(pa, pc), n


@pytest.mark.parametrize("method", sm.METHODS)
def test_ticket_roundtrip_is_bit_identical(tmp_path, method):
    model = _train(_model(method, seed=11, **_own(method, rerand_period=3, rerand_prob=0.5)))
    path = tmp_path / "t.slth"
    sm.to_ticket(model, path)
    ticket = ticketfile.load(path)
    assert ticket.seed == 11 and ticket.config["model"] == "fc" and ticket.config["supermask"]["method"] == method
    plain = sm.materialize(model)
    assert set(ticket.masks) == {n for n, _ in plain.named_parameters()}
    rebuilt = sm.from_ticket(path)
    for (n, p), q in zip(plain.state_dict().items(), rebuilt.state_dict().values()):
        assert torch.equal(p, q), n
    x = torch.randn(16, *SHAPE)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


def test_bad_config_errors():
    with pytest.raises(ValueError, match="edge-popup"):
        sm.SupermaskConfig(method="magnitude")
    for density in (0, 1.01, -1):
        with pytest.raises(ValueError, match="density"):
            sm.SupermaskConfig(density=density)
    with pytest.raises(ValueError, match="signed-constant"):
        sm.SupermaskConfig(init="xavier")
    with pytest.raises(ValueError, match="erk"):
        sm.SupermaskConfig(distribution="global")


@pytest.mark.parametrize("field,value,message", [
    ("density", True, r"density \(kept fraction\) must lie in \(0, 1\], got True"),  # a bool is not 1.0
    ("rerand_period", 0, r"rerand_period \(optimizer steps between re-draws\) must be an integer >= 1, got 0$"),
    ("rerand_period", 2.5, r"rerand_period .* got 2\.5$"),
    ("rerand_prob", -0.1, r"rerand_prob \(probability of a re-draw\) must lie in \[0, 1\], got -0\.1$"),
    ("rerand_prob", 1.5, r"rerand_prob .* got 1\.5$"),
    ("score_l2", -0.5, r"score_l2 \(the score penalty's lambda\) must be a finite number >= 0, got -0\.5$"),
    ("score_l2", math.nan, r"score_l2 .* got nan$"),
])
def test_each_bad_hyper_parameter_is_refused_by_name_and_value(field, value, message):
    with pytest.raises(ValueError, match=message):
        sm.SupermaskConfig(method="gem-miner", **{field: value})


@pytest.mark.parametrize("method, setting, value", [
    ("edge-popup", "rerand_period", 3), ("biprop", "rerand_prob", 0.5), ("iterand", "score_l2", 0.1),
    ("gem-miner", "coats", (0.5,)), ("signed", "gate_l0", 1e-3), ("l0-hc", "gate_sigma", 0.3),
    ("multicoated", "sign_threshold", 0.2), ("bernoulli", "coats", ()),
])
def test_another_methods_setting_is_refused_by_name(method, setting, value):
    # a setting the method does not read would be silently ignored: a wrong experiment, so it is refused
    owners = [m for m, entry in sm.METHODS.items() if setting in entry.settings]
    with pytest.raises(ValueError, match=rf"^{setting} is a setting of {' and '.join(owners)}; {method} does not read"):
        sm.SupermaskConfig(method=method, **{setting: value})
    from slth.train import TrainConfig

    with pytest.raises(ValueError, match=rf"^{setting} is a setting of .*; {method} does not read"):
        TrainConfig(method=method, **{setting: value})
    with pytest.raises(ValueError, match=rf"^{setting} is a setting of .*; dense training does not read"):
        TrainConfig(method="dense", **{setting: value})
    # its own method takes it (and every method its default)
    sm.SupermaskConfig(method=owners[0], **{setting: value})
    sm.SupermaskConfig(method=method, **{setting: getattr(sm.SupermaskConfig(), setting)})


def test_files_written_before_the_refusal_with_an_ignored_setting_still_load(tmp_path):
    # slth accepted (and ignored) another method's setting before it refused them: such tickets and checkpoint
    # configs load, the ignored setting at its default (what training saw)
    from dataclasses import replace

    from slth import ticketfile
    from slth.train import TrainConfig

    model = _train(_model("edge-popup", seed=4))
    ticket = sm.to_ticket(model)
    old = replace(ticket, config={**ticket.config, "supermask": {**ticket.config["supermask"], "rerand_period": 3}})
    ticketfile.save(tmp_path / "old.slth", old)
    rebuilt = sm.from_ticket(tmp_path / "old.slth")
    assert rebuilt.slth_spec["supermask"]["rerand_period"] == 3  # the file's record, as written
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(),
                                                 sm.from_ticket(ticket).state_dict().values()))
    saved = TrainConfig(method="edge-popup").to_dict()
    assert TrainConfig.from_dict({**saved, "score_l2": 0.5}).score_l2 == TrainConfig().score_l2
    assert TrainConfig.from_dict({**saved, "method": "dense", "coats": [0.5]}).coats == TrainConfig().coats


def test_the_method_settings_are_declared_once_and_each_belongs_to_a_method():
    from dataclasses import fields

    from slth._hparams import DEFAULTS, METHOD_FIELDS, MethodSettings, TrainSettings
    from slth.supermask.methods import COMMON_SETTINGS

    declared = {f.name: f for f in fields(MethodSettings)}
    for cls in (sm.SupermaskConfig, TrainSettings):  # the mirrors: same names, same defaults
        mirror = {f.name: f for f in fields(cls)}
        for name in METHOD_FIELDS:
            assert mirror[name].default == getattr(DEFAULTS, name), (cls, name)
    assert {f.name: f.metadata for f in fields(TrainSettings) if f.name in declared} == {
        n: f.metadata for n, f in declared.items()}
    owned = {name for entry in sm.METHODS.values() for name in entry.settings}
    assert owned <= set(METHOD_FIELDS) and set(COMMON_SETTINGS) <= set(METHOD_FIELDS)
    assert owned | set(COMMON_SETTINGS) == set(METHOD_FIELDS)  # every setting is read by some method


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [p.requires_grad for p in model.parameters()]


def _assert_unchanged(model, state):
    before, grads = state
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert [p.requires_grad for p in model.parameters()] == grads


def test_a_second_supermask_is_refused_before_the_model_changes():
    model = _model(seed=0)
    state, spec = _state(model), dict(model.slth_spec)
    with pytest.raises(ValueError, match="this model already has supermasks"):
        sm.apply_supermask(model, sm.SupermaskConfig(density=0.7), seed=7)  # another seed: it would re-draw
    _assert_unchanged(model, state)
    assert model.slth_spec == spec


def test_mask_tensors_checks_every_key_before_it_changes_the_model():
    from slth.supermask.apply import mask_tensors

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    state = _state(model)
    with pytest.raises(KeyError, match="'1.nowhere' names neither a module nor a module's tensor"):
        mask_tensors(model, sm.SupermaskConfig(), {"0": 0.5, "1.nowhere": 0.5}, seed=0)
    _assert_unchanged(model, state)
    with pytest.raises(ValueError, match="iterand re-draws pruned weights: it needs redraw"):
        mask_tensors(model, sm.SupermaskConfig(method="iterand"), {"0": 0.5}, seed=0)
    _assert_unchanged(model, state)
    mask_tensors(model, sm.SupermaskConfig(), {"1": 0.5}, seed=0)
    state = _state(model)
    with pytest.raises(ValueError, match="'1' is already parametrized"):
        mask_tensors(model, sm.SupermaskConfig(), {"0": 0.5, "1": 0.5}, seed=1)
    _assert_unchanged(model, state)
    assert not torch.nn.utils.parametrize.is_parametrized(model[0])


def test_supermask_report_needs_a_supermask_model():
    with pytest.raises(ValueError, match=r"this model has no supermasks \(apply_supermask puts them on\)"):
        sm.supermask_report(torch.nn.Sequential(torch.nn.Linear(4, 3)))


def test_a_maskable_layer_with_a_parameter_slth_does_not_know_is_refused():
    class GainLinear(torch.nn.Linear):  # an extra parameter would otherwise be frozen at some value: a wrong model
        def __init__(self):
            super().__init__(4, 3)
            self.gain = torch.nn.Parameter(torch.ones(3))

    model = torch.nn.Sequential(GainLinear())
    state = _state(model)
    with pytest.raises(TypeError, match="GainLinear at '0' has a parameter 'gain' slth does not know"):
        sm.apply_supermask(model, sm.SupermaskConfig(), seed=0)
    _assert_unchanged(model, state)


def test_layer_densities_refuses_an_unknown_distribution():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    with pytest.raises(ValueError, match="unknown density distribution 'global'; valid names: uniform, erk"):
        sm.layer_densities(model, 0.5, "global")


@pytest.mark.parametrize("init", sorted(sm.INITS))
def test_init_scales(init):
    model = sm.build("fc", (1, 40, 40), 10, seed=0, hidden=[400], supermask=sm.SupermaskConfig(density=0.25, init=init))
    w = next(m for _, m, _ in sm.supermask_layers(model)).parametrizations.weight.original
    std = (2 / 1600) ** 0.5 * (2.0 if init.startswith("scaled") else 1.0)
    assert abs(float(w.std()) / std - 1) < 0.02
    if "signed" in init:
        assert torch.allclose(w.abs(), torch.full_like(w, std))


def test_topk_mask_matches_a_sort_reference():
    gen = torch.Generator().manual_seed(0)
    for n, k in [(1, 1), (7, 3), (1000, 1), (1000, 999), (5000, 2500)]:
        values = torch.randint(-20, 20, (n,), generator=gen).float()  # many ties
        mask = sm.topk_mask(values, k)
        assert int(mask.sum()) == k
        order = sorted(range(n), key=lambda i: (-float(values[i]), i))  # stable: ties by index
        assert set(torch.nonzero(mask).squeeze(1).tolist()) == set(order[:k])


def test_fused_masked_weight_matches_get_subnet_reference():
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(30, 20, generator=gen)
    grad_out = torch.randn(30, 20, generator=gen)
    scores_ref = torch.randn(30, 20, generator=gen, requires_grad=True)
    scores_fused = scores_ref.detach().clone().requires_grad_(True)
    reference = weight * sm.GetSubnet.apply(scores_ref.abs(), 150)
    fused = sm_core.MaskedWeight.apply(weight, scores_fused, 150)
    assert torch.equal(reference, fused)
    (reference * grad_out).sum().backward()
    (fused * grad_out).sum().backward()
    assert torch.equal(scores_ref.grad, scores_fused.grad)


def test_ticket_keeps_batchnorm_statistics(tmp_path):
    model = sm.build("resnet20", (3, 8, 8), 10, seed=2, width=0.25, supermask=sm.SupermaskConfig(density=0.5))
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, 8, 8) * 3 + 1)  # moves the running statistics away from their init
    sm.to_ticket(model, tmp_path / "r.slth")
    rebuilt = sm.from_ticket(tmp_path / "r.slth")
    model.eval()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))



def _iterand_layer(redraw, seed=5):
    from slth.supermask.methods import IteRand

    scores = torch.randn(6, 5, generator=torch.Generator().manual_seed(seed))
    return IteRand((6, 5), 0.4, scores, sample_seed=seed, redraw=redraw, period=2, prob=0.5)


def test_iterand_redraws_from_cpu_draws_moved_to_the_weights_device():
    # Without a GPU, the device move is checked through a re-draw that records where the hook sends it: a
    # weight on any device gets `.to(weight.device)` of the CPU draw; the values are those of an explicit
    # CPU reference (the layer's generator stream), bit for bit.
    moved = []

    class Recorded(torch.Tensor):
        def to(self, *args, **kwargs):
            moved.append(kwargs.get("device", args[0] if args else None))
            return super().to(*args, **kwargs)

    fresh = torch.arange(30, dtype=torch.float32).view(6, 5) + 100
    layer = _iterand_layer(lambda generation: fresh.clone().as_subclass(Recorded))
    weight = torch.ones(6, 5)
    layer.after_step(1, weight)  # not a re-randomisation step (period 2)
    assert torch.equal(weight, torch.ones(6, 5)) and not moved
    layer.after_step(2, weight)
    assert moved == [weight.device]
    chosen = ~layer.final_mask() & (torch.rand(6, 5, generator=torch.Generator().manual_seed(5)) < 0.5)
    assert chosen.any()
    assert torch.equal(weight, torch.where(chosen, fresh, torch.ones(6, 5)))
    assert torch.equal(layer.generation, chosen.to(torch.int16))


def test_iterand_refuses_a_round_its_generation_cannot_record_before_it_redraws():
    layer = _iterand_layer(lambda generation: torch.zeros(6, 5))
    weight = torch.ones(6, 5)
    period = 2  # _iterand_layer's
    with pytest.raises(OverflowError, match="more re-randomisation rounds than an int16 generation can record"):
        layer.after_step(period * (torch.iinfo(torch.int16).max + 1), weight)
    assert torch.equal(weight, torch.ones(6, 5)) and not layer.generation.any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_iterand_redraws_on_cuda_what_it_redraws_on_the_cpu():
    fresh = torch.randn(6, 5, generator=torch.Generator().manual_seed(9))
    layers = [_iterand_layer(lambda generation: fresh.clone()) for _ in range(2)]
    layers[1] = layers[1].to("cuda")
    weights = [torch.ones(6, 5), torch.ones(6, 5, device="cuda")]
    for step in range(1, 7):
        for layer, weight in zip(layers, weights):
            layer.after_step(step, weight)
    assert torch.equal(weights[0], weights[1].cpu()) and not torch.equal(weights[0], torch.ones(6, 5))
    assert torch.equal(layers[0].generation, layers[1].generation.cpu())


# -- a learned ticket rebuilds only into the model it was learned on ---------------------------------


def _user_net():
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def _user_model():
    return sm.apply_supermask(_user_net(), sm.SupermaskConfig(density=0.5), seed=1)


def _registry_model():
    return sm.build("fc", (1, 4, 4), 3, seed=0, hidden=[5], supermask=sm.SupermaskConfig(density=0.5))


def test_ticket_with_a_tensor_the_model_lacks():
    tf = to_ticket(_user_model())
    tf.config = dict(tf.config, layout=dict(tf.config["layout"], **{"extra.weight": [1]}))
    with pytest.raises(ticketfile.TicketFileError, match=r"has 'extra\.weight' \(1,\), which Sequential lacks"):
        from_ticket(tf, model=_user_net())


def test_materialize_needs_a_supermask_model():
    with pytest.raises(ValueError, match=r"materialize needs a model of slth\.supermask\.build or apply_supermask"):
        materialize(_user_net())


def test_materialize_of_a_user_model_needs_into():
    with pytest.raises(ValueError, match=r"this is a user's model \(.*\): pass materialize\(model, into="):
        materialize(_user_model())


def test_to_ticket_needs_a_supermask_model():
    # a user's net (no slth_spec) and a dense registry model (a spec without a supermask)
    for model in (_user_net(), sm.build("fc", SHAPE, 10, seed=0, hidden=[4])):
        with pytest.raises(ValueError, match=r"to_ticket needs a supermask model"):
            to_ticket(model)


def test_from_ticket_refuses_another_kind():
    tf = to_ticket(_registry_model())
    tf.config = dict(tf.config, kind="constructed")
    with pytest.raises(ticketfile.TicketFileError, match=r"not a learned supermask ticket \(kind 'constructed'\)"):
        from_ticket(tf)


def test_from_ticket_refuses_masks_of_other_layers():
    tf = to_ticket(_registry_model())
    dropped = sorted(tf.masks)[0]
    del tf.masks[dropped]
    with pytest.raises(ticketfile.TicketFileError,
                       match=rf"ticket masks .* do not match the model's layers .*{dropped}"):
        from_ticket(tf)


def test_from_ticket_refuses_a_mask_of_the_wrong_shape():
    tf = to_ticket(_registry_model())
    name = sorted(tf.masks)[0]
    tf.masks[name] = tf.masks[name][:-1]
    with pytest.raises(ticketfile.TicketFileError, match=rf"mask '{name}' has shape \(\d+, \d+\), the layer"):
        from_ticket(tf)


def test_from_ticket_refuses_a_buffer_the_model_lacks():
    tf = to_ticket(_registry_model())
    tf.extras["buffer/nowhere"] = np.zeros(2, np.float32)
    with pytest.raises(ticketfile.TicketFileError, match=r"ticket buffer 'nowhere' does not fit the model"):
        from_ticket(tf)


def test_ticket_with_a_tensor_of_another_shape():
    tf = to_ticket(_user_model())
    tf.config = dict(tf.config, layout=dict(tf.config["layout"], **{"0.weight": [3, 5]}))
    with pytest.raises(ticketfile.TicketFileError,
                       match=r"'0\.weight' has shape \(3, 5\) in the ticket .*\(3, 4\) in Sequential"):
        from_ticket(tf, model=_user_net())


def test_model_with_a_tensor_the_ticket_lacks():
    tf = to_ticket(_user_model())
    tf.config = dict(tf.config, layout={k: v for k, v in tf.config["layout"].items() if k != "2.bias"})
    with pytest.raises(ticketfile.TicketFileError, match=r"Sequential has '2\.bias' \(2,\), which the ticket .* lacks"):
        from_ticket(tf, model=_user_net())


def test_ticket_of_a_user_model_needs_the_model():
    with pytest.raises(ValueError, match=r"this ticket was learned on a user's model .*from_ticket\(path, model="):
        from_ticket(to_ticket(_user_model()))


def test_from_ticket_needs_a_fresh_model():
    with pytest.raises(ValueError, match=r"from_ticket needs a fresh instance of the model, not one with supermasks"):
        from_ticket(to_ticket(_user_model()), model=_user_model())
