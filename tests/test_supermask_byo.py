"""Bring your own model: apply_supermask on a user's transformer, trained in the user's own loop, and its
ticket rebuilt into a fresh instance; the method registry; the ViT and Conv6/Conv8 registry models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slth import supermask as sm
from slth import ticketfile

torch.set_num_threads(1)


class TinyViT(nn.Module):
    """A user's transformer: Conv2d patches, a free class token and positional parameter, nn.TransformerEncoder
    (pre-norm, GELU), LayerNorm, a Linear head with a bias."""

    def __init__(self, dim=16, depth=2, heads=2, classes=10, mlp=32):
        super().__init__()
        self.patch = nn.Conv2d(1, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, 5, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, mlp, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        h = self.patch(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls.expand(len(x), -1, -1), h], 1) + self.pos
        return self.head(self.norm(self.encoder(h))[:, 0])


def _data(n=32):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 8, 8, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def _frozen(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if not n.endswith(".scores")}


@pytest.mark.parametrize("method", ["edge-popup", "biprop", "gem-miner"])
def test_user_transformer_trains_only_scores_and_rebuilds_from_its_ticket(tmp_path, method):
    model = sm.apply_supermask(TinyViT(), sm.SupermaskConfig(method=method, density=0.4), seed=7)
    report = sm.supermask_report(model)
    masked = {m.name for m in report.masked}
    assert {"encoder.layers.0.self_attn.in_proj_weight", "encoder.layers.1.self_attn.out_proj.weight"} <= masked
    assert {"patch.weight", "head.weight", "encoder.layers.0.linear1.weight"} <= masked
    values = {f.name: f.value for f in report.frozen}
    assert values["pos"] == values["cls"] == "normal" and values["head.bias"] == "zero"
    assert values["norm.weight"] == values["encoder.layers.0.norm1.weight"] == "one"
    assert values["encoder.layers.0.self_attn.in_proj_bias"] == "zero"
    assert "in_proj_weight" in str(report) and "N(0, 1)" in str(report)

    scores = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert scores and all(n.endswith(".scores") for n in scores)
    frozen, before = _frozen(model), {n: p.detach().clone() for n, p in scores.items()}
    x, y = _data()
    opt = torch.optim.SGD(scores.values(), lr=0.5, momentum=0.9)  # the user's own plain loop
    model.train()
    for step in range(1, 4):
        loss = F.cross_entropy(model(x), y) + sm.regularization(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sm.after_step(model, step)
    for n, p in model.named_parameters():
        if n.endswith(".scores"):
            continue
        assert torch.equal(p, frozen[n]), n
    assert any(not torch.equal(p, before[n]) for n, p in scores.items())

    sm.to_ticket(model, tmp_path / "vit.slth")
    rebuilt = sm.from_ticket(tmp_path / "vit.slth", model=TinyViT())
    model.eval()
    with torch.no_grad():  # the fused eval fast path of nn.TransformerEncoder in both
        assert torch.equal(model(x), rebuilt(x))
    assert torch.equal(model(x), rebuilt(x))  # and the plain path
    plain = sm.materialize(model, into=TinyViT())
    for (n, p), q in zip(rebuilt.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(p, q), n


def test_multihead_attention_reads_the_masked_projection():
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    sm.apply_supermask(mha, sm.SupermaskConfig(density=0.25), seed=0)
    mha.eval()
    w = mha.in_proj_weight
    assert int((w != 0).sum()) == sm.kept_count(w.numel(), 0.25)
    x = torch.randn(2, 3, 8)
    expected = F.multi_head_attention_forward(x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), 8, 2, w,
                                              mha.in_proj_bias, None, None, False, 0.0, mha.out_proj.weight,
                                              mha.out_proj.bias, need_weights=False)[0].transpose(0, 1)
    with torch.no_grad():
        assert torch.allclose(mha(x, x, x, need_weights=False)[0], expected, atol=1e-6)


def test_frozen_values_do_not_depend_on_the_global_rng():
    def build(global_seed):
        torch.manual_seed(global_seed)
        return sm.apply_supermask(TinyViT(), sm.SupermaskConfig(method="bernoulli"), seed=3)

    a, b, c = build(0), build(12345), sm.apply_supermask(TinyViT(), sm.SupermaskConfig(method="bernoulli"), seed=4)
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        if isinstance(p, torch.Tensor):  # (extra states are dicts: the Bernoulli draw counters)
            assert torch.equal(p, q), n
    assert not torch.equal(a.pos, c.pos) and not torch.equal(a.patch.parametrizations.weight.original,
                                                             c.patch.parametrizations.weight.original)


def test_ticket_for_another_architecture_is_a_clear_error(tmp_path):
    model = sm.apply_supermask(TinyViT(), sm.SupermaskConfig(), seed=1)
    sm.to_ticket(model, tmp_path / "t.slth")
    with pytest.raises(ticketfile.TicketFileError, match=r"encoder.layers.0.linear1.weight.*\(32, 16\).*\(48, 16\)"):
        sm.from_ticket(tmp_path / "t.slth", model=TinyViT(mlp=48))
    with pytest.raises(ticketfile.TicketFileError, match="encoder.layers.1"):
        sm.from_ticket(tmp_path / "t.slth", model=TinyViT(depth=1))
    with pytest.raises(ValueError, match="model=<a fresh instance"):
        sm.from_ticket(tmp_path / "t.slth")
    with pytest.raises(ValueError, match="fresh instance"):
        sm.from_ticket(tmp_path / "t.slth", model=model)
    registry = sm.build("fc", (1, 8, 8), 10, seed=0, hidden=[8], supermask=sm.SupermaskConfig())
    sm.to_ticket(registry, tmp_path / "fc.slth")
    with pytest.raises(ticketfile.TicketFileError, match="TinyViT has 'cls'.*registry model 'fc'"):
        sm.from_ticket(tmp_path / "fc.slth", model=TinyViT())


def test_unknown_layers_holding_weights_are_refused_by_name():
    with pytest.raises(TypeError, match=r"LSTM at 'rnn'.*Linear, Conv1d, Conv2d, Embedding, MultiheadAttention"):
        sm.apply_supermask(nn.ModuleDict({"rnn": nn.LSTM(4, 4), "out": nn.Linear(4, 2)}), sm.SupermaskConfig(), 0)

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3, 3))

    with pytest.raises(TypeError, match="Custom at 'mine' holds a weight 'weight'"):
        sm.apply_supermask(nn.ModuleDict({"lin": nn.Linear(3, 3), "mine": Custom()}), sm.SupermaskConfig(), 0)
    with pytest.raises(ValueError, match="no weights to mask"):
        sm.apply_supermask(nn.Sequential(nn.ReLU()), sm.SupermaskConfig(), 0)


def test_conv1d_and_embedding_take_a_supermask_and_rebuild(tmp_path):
    def net():
        return nn.Sequential(nn.Embedding(20, 6, padding_idx=0), Transpose(), nn.Conv1d(6, 4, 3), nn.Flatten(),
                             nn.Linear(32, 3))

    model = sm.apply_supermask(net(), sm.SupermaskConfig(method="iterand", density=0.5, rerand_period=1,
                                                         rerand_prob=0.5), seed=2)
    assert {m.name for m in sm.supermask_report(model).masked} == {"0.weight", "2.weight", "4.weight"}
    emb = model[0].parametrizations.weight.original
    assert torch.equal(emb[0], torch.zeros(6))  # the padding row, as nn.Embedding
    tokens = torch.randint(0, 20, (5, 10), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for step in (1, 2):
        model(tokens).sum().backward()
        opt.step()
        sm.after_step(model, step)
    rebuilt = sm.from_ticket(sm.to_ticket(model), model=net())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(tokens), rebuilt(tokens))


class Transpose(nn.Module):
    def forward(self, x):
        return x.transpose(1, 2)


def test_every_method_has_one_registry_entry_and_the_trainer_defaults_come_from_it():
    from slth.supermask.methods import Supermask
    from slth.train.config import DEFAULT_INIT, DEFAULT_LR, DEFAULT_WEIGHT_DECAY, TrainConfig

    assert all(name == m.name for name, m in sm.METHODS.items())
    for name, m in sm.METHODS.items():
        assert ("arXiv" in m.paper or "PMLR" in m.paper) and m.doc  # (multicoated: ICML proceedings only)
        p = m.make((3, 4), 0.5, torch.zeros(3, 4), config=sm.SupermaskConfig(method=name), sample_seed=0,
                   redraw=lambda g: torch.zeros(3, 4))
        assert isinstance(p, Supermask)
        resolved = TrainConfig(method=name).resolved()
        assert (resolved.lr, resolved.weight_decay, resolved.init) == (m.lr, m.weight_decay, m.init)
        assert (DEFAULT_LR[name], DEFAULT_WEIGHT_DECAY[name], DEFAULT_INIT[name]) == (m.lr, m.weight_decay, m.init)
        assert sm.SupermaskConfig(method=name).init == m.init
    assert set(DEFAULT_LR) == set(DEFAULT_WEIGHT_DECAY) == set(DEFAULT_INIT) == {"dense", *sm.METHODS}


def test_vit_conv6_conv8_shapes_and_width():
    from slth.models import build_model

    vit = build_model("vit", (3, 32, 32), 10)
    assert vit(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert vit.pos_embed.shape == (1, 65, 64) and vit.encoder.layers[0].linear1.weight.shape == (128, 64)
    assert build_model("vit", (1, 8, 8), 10, width=0.5).pos_embed.shape == (1, 5, 32)
    assert build_model("vit", (1, 28, 28), 10, patch=7).pos_embed.shape == (1, 17, 64)
    with pytest.raises(ValueError, match="patch size 3 must divide"):
        build_model("vit", (1, 8, 8), 10, patch=3)
    conv6 = [m.out_channels for m in build_model("conv6", (3, 32, 32), 10).modules() if isinstance(m, nn.Conv2d)]
    conv8 = build_model("conv8", (3, 32, 32), 10, width=0.5)
    assert conv6 == [64, 64, 128, 128, 256, 256]
    assert [m.out_channels for m in conv8.modules() if isinstance(m, nn.Conv2d)] == [32, 32, 64, 64, 128, 128, 256, 256]
    assert [m.in_features for m in conv8.modules() if isinstance(m, nn.Linear)] == [256 * 2 * 2, 128, 128]


def test_registry_vit_takes_a_supermask_and_its_ticket_rebuilds(tmp_path):
    model = sm.build("vit", (1, 8, 8), 10, seed=5, width=0.25, supermask=sm.SupermaskConfig(method="bernoulli"))
    x, y = _data(8)
    model.train()
    F.cross_entropy(model(x), y).backward()
    rebuilt = sm.from_ticket(sm.to_ticket(model))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


def test_slth_train_vit_on_digits(tmp_path):
    from typer.testing import CliRunner

    from slth.cli import app

    r = CliRunner().invoke(app, ["train", "--model", "vit", "--data", "digits", "--epochs", "1", "--width", "0.5",
                                 "--out", str(tmp_path / "vit")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "vit" / "ticket.slth").exists()
    rebuilt = sm.from_ticket(tmp_path / "vit" / "ticket.slth")
    assert isinstance(rebuilt.encoder, nn.TransformerEncoder)


def test_the_step_hooks_walk_finds_every_supermask_in_named_modules_order():
    """after_step/regularization use a walk without module names; it must see the same supermasks, in the same
    order, as the named walk (shared and nested modules included)."""
    from slth.supermask import SupermaskConfig, apply_supermask
    from slth.supermask.apply import _supermask_hooks, _supermasks

    shared = nn.Linear(4, 4, bias=False)
    net = nn.Sequential(nn.Linear(3, 4), nn.Sequential(shared, nn.ReLU(), shared), nn.ModuleDict(
        {"b": nn.Linear(4, 5), "a": nn.Sequential(nn.Linear(5, 2))}))
    apply_supermask(net, SupermaskConfig(method="edge-popup", density=0.5), seed=0)
    named = [(id(m), t, id(p)) for _, m, t, p in _supermasks(net)]
    assert len(named) == 4
    assert [(id(m), t, id(p)) for m, t, p in _supermask_hooks(net)] == named
