"""attention="product": every nn.MultiheadAttention is ONE random attention pruned for its merged maps (Otsuka et al.).

Per head a qk_scores layer (M_h = W_q^h W_k^h^T / sqrt(e), key-side bias c_h) and one vo_mix layer (N_h = W_v^h W_o^h
of every head, bias b_o + b_v W_o^T) on the same pair layouts, seeded tensors and SubsetSum chunks as every other
layer. Each test checks ticket = random x masks exactly, measured <= certified (pointwise) and <= a stated
tolerance, save/load (format version 3), and causality where there is a causal mask. Targets are those of
tests/test_construct_attention.py (d_model 8, 2 heads, uniform +-0.5 weights, signed inputs)."""

import numpy as np
import pytest
import torch
from torch import nn

from slth import ticketfile
from slth.construction import Ticket, construct
from slth.construction.bound import certified_bound_nd
from slth.construction.target import parse_target
from test_construct_attention import (
    BATCH,
    EPS,
    HEADS,
    Cross,
    D,
    Encoder,
    HandAttention,
    MaskedAttention,
    Padded,
    SelfAttention,
    T,
    TinyGPT,
    TinyViT,
    assert_causal,
    check_seq_first_encoder,
    seeded,
    signed,
)
from test_construct_attention import check as shared_check

PRODUCT_OPS = {"qk_scores", "vo_mix"}


def check(ticket, net, x, tolerance, tmp_path, product=1):
    """Exact masks, measured <= certified bound (at the points x) and <= tolerance, save/load identical (v3)."""
    s = ticket.stats
    kinds = [op["op"] for op in ticket.config["ops"]]
    assert kinds.count("vo_mix") == product and kinds.count("qk_scores") == product * HEADS, kinds
    assert "attention" not in kinds  # no per-projection attention left
    assert ticket.config["attention"] == "product" and s["attention"]["product_attentions"] == product
    selectors = [ticket.layouts[i] for i in s["attention"]["product_layers"]]
    assert len(selectors) == 3 * product and not any(lay.signed_input or lay.relu_after for lay in selectors)
    return shared_check(ticket, net, x, tolerance, tmp_path, version=3)


@pytest.mark.parametrize("causal", [False, True])
def test_multihead_self_attention_product(causal, tmp_path):
    net = seeded(SelfAttention(causal))
    ticket = construct(net, EPS, seed=0, attention="product")
    (op,) = [op for op in ticket.config["ops"] if op["op"] == "vo_mix"]
    assert op["causal"] is causal and op["mask"] == [] and op["heads"] == HEADS
    # per head (d + 1) n selector units (d inputs + n bias units) and a dense (d x (d + 1) n) key map
    n = ticket.stats["n_per_layer"]
    assert [lay.hidden for lay in ticket.layouts] == [(D + 1) * n[0], (D + 1) * n[1], (HEADS * D + 1) * n[2]]
    x = signed(BATCH, T, D)
    module, _, _ = check(ticket, net, x, 0.05, tmp_path)
    if causal:
        assert_causal(module, x)
    again = construct(net, EPS, seed=0, attention="product")
    assert again.digest() == ticket.digest()  # same seed: the same ticket, bit for bit
    with torch.no_grad():
        assert torch.equal(again.to_module()(x), module(x))
    assert construct(net, EPS, seed=1, attention="product").digest() != ticket.digest()


def test_product_and_projection_are_different_tickets_and_projection_is_unchanged():
    net = seeded(SelfAttention(False))
    proj = construct(net, EPS, seed=0)
    assert construct(net, EPS, seed=0, attention="projection").digest() == proj.digest()
    assert "attention" not in proj.config and "attention" not in proj.stats  # projection configs as before
    kinds = {op["op"] for op in proj.config["ops"]}
    assert not kinds & PRODUCT_OPS and "attention" in kinds
    prod = construct(net, EPS, seed=0, attention="product")
    assert PRODUCT_OPS <= {op["op"] for op in prod.config["ops"]}  # fails if the product path is not taken


@pytest.mark.parametrize("norm_first", [True, False])
def test_transformer_encoder_layer_product(norm_first, tmp_path):
    net = seeded(nn.TransformerEncoderLayer(D, HEADS, dim_feedforward=16, dropout=0.0, batch_first=True,
                                            norm_first=norm_first, activation="gelu"))
    ticket = construct(net, EPS, seed=0, attention="product")
    paths = [spec.path for spec in parse_target(net, attention="product")[1]]
    if norm_first:  # norm1's affine is folded into the merged maps (exact), not a diagonal pair
        assert paths[0] == "TransformerEncoderLayer.norm1+TransformerEncoderLayer.self_attn.qk0"
        assert "affine" not in paths[:4]
    # qk0, qk1, vo, linear1, linear2 (+ post-norm: the affines of norm1 on its residual path and of norm2 at the end)
    assert len(ticket.layouts) == (5 if norm_first else 7)
    check(ticket, net, signed(BATCH, T, D), 0.15, tmp_path)


def test_two_layer_causal_encoder_seq_first_product(tmp_path):
    net = seeded(Encoder())
    ticket = construct(net, EPS, seed=0, attention="product")
    assert ticket.stats["attention"]["product_attentions"] == 2
    check_seq_first_encoder(ticket, net, tmp_path)


def test_tiny_vit_product(tmp_path):
    net = seeded(TinyViT())
    ticket = construct(net, EPS, seed=0, attention="product")
    check(ticket, net, signed(BATCH, 3, 8, 8), 0.15, tmp_path)


class TinyGPTMHA(nn.Module):
    """A causal GPT block with nn.MultiheadAttention: token + positional Embedding, pre-norm attention with a causal
    mask, GELU MLP, final LayerNorm and a head tied to the token embedding (``x @ tok.weight.T``)."""

    def __init__(self, vocab=11, ctx=6):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, D), nn.Embedding(ctx, D)
        self.register_buffer("positions", torch.arange(ctx))
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(ctx))
        self.ln1, self.ln2, self.ln_f = nn.LayerNorm(D), nn.LayerNorm(D), nn.LayerNorm(D)
        self.attn = nn.MultiheadAttention(D, HEADS, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(D, 2 * D), nn.Linear(2 * D, D)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(self.positions)
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=self.mask, need_weights=False)[0]
        x = x + self.fc2(torch.nn.functional.gelu(self.fc1(self.ln2(x))))
        return self.ln_f(x) @ self.tok.weight.T


def test_tiny_causal_gpt_with_tied_head_product(tmp_path):
    net = seeded(TinyGPTMHA())
    ticket = construct(net, EPS, seed=0, attention="product")
    (op,) = [op for op in ticket.config["ops"] if op["op"] == "vo_mix"]
    assert op["causal"]
    idx = torch.randint(0, 11, (BATCH, 6), generator=torch.Generator().manual_seed(0))
    # the final LayerNorm amplifies the errors (per projection on this target: 0.142)
    module, _, _ = check(ticket, net, idx, 0.25, tmp_path)
    assert ticket.layouts[-1].d_out == 11  # the tied head: its own pair
    x2 = idx.clone()
    x2[:, -1] = (x2[:, -1] + 1) % 11
    with torch.no_grad():
        a, b = module(idx), module(x2)
    torch.testing.assert_close(a[:, :-1], b[:, :-1], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, -1], b[:, -1])


def test_constant_mask_product(tmp_path):
    net = seeded(MaskedAttention())
    ticket = construct(net, EPS, seed=0, attention="product")
    (op,) = [op for op in ticket.config["ops"] if op["op"] == "vo_mix"]
    assert not op["causal"] and op["mask"][2][0] is None
    check(ticket, net, signed(BATCH, T, D), 0.05, tmp_path)
    x = signed(300, T, D, seed=3)
    bound = certified_bound_nd(ticket, net, -torch.ones(T, D), torch.ones(T, D))  # every x in [-1, 1]^(T x D)
    with torch.no_grad():
        diff = (ticket.to_module()(x) - net(x)).abs().amax(0).double().reshape(-1).numpy()
    assert (diff <= bound + 1e-5).all()


def biased_attention():
    """In-projection and out-projection biases of +-1 (b_k included, which the merged scores drop)."""
    net = seeded(SelfAttention(False))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        net.attn.in_proj_bias.copy_(torch.rand(3 * D, generator=g) * 2 - 1)
        net.attn.out_proj.bias.copy_(torch.rand(D, generator=g) * 2 - 1)
    return net


def merged(net, x, drop_key_bias=False):
    """The target recomputed from its parsed merged maps in float64: softmax(x M x^T + c x^T) x N + b, per head."""
    graph, specs = parse_target(net, attention="product")
    x = x.double()
    out = 0.0
    qk, vo = specs[:HEADS], specs[HEADS]
    probs = []
    for h, spec in enumerate(qk):
        scores = x @ torch.from_numpy(spec.weight).T @ x.transpose(-2, -1)
        if not drop_key_bias:
            scores = scores + (x @ torch.from_numpy(spec.bias))[..., None, :]
        p = torch.softmax(scores, -1)
        probs.append(p)
        out = out + p @ x @ torch.from_numpy(vo.weight[:, h * D:(h + 1) * D]).T
    return out + torch.from_numpy(vo.bias), torch.stack(probs, 1)


def test_bias_terms_merge_exactly_and_the_query_only_terms_cancel(tmp_path):
    net = biased_attention().double()
    x = signed(BATCH, T, D).double()
    with torch.no_grad():
        target, weights = net.attn(x, x, x, need_weights=True, average_attn_weights=False)
        out, probs = merged(net, x)
        # the merged scores omit x_s W_q b_k and b_q . b_k (constant over the keys): the probabilities are the same
        torch.testing.assert_close(probs, weights, rtol=0, atol=1e-12)
        torch.testing.assert_close(out, target, rtol=0, atol=1e-12)  # b_o + b_v W_o^T carries the value bias
        # the check is not vacuous: without the key-side term c_h = W_k^h b_q^h / sqrt(e) it fails
        wrong, wrong_p = merged(net, x, drop_key_bias=True)
        assert float((wrong_p - weights).abs().max()) > 1e-3 and float((wrong - target).abs().max()) > 1e-3
    net = biased_attention()
    ticket = construct(net, EPS, seed=0, attention="product")
    assert all(ticket.layouts[i].bias for i in range(3))
    check(ticket, net, signed(BATCH, T, D), 0.05, tmp_path)


def test_scaled_targets_keep_eps_in_target_units(tmp_path):
    net = seeded(SelfAttention(False))
    with torch.no_grad():
        net.attn.in_proj_weight.mul_(4)  # merged entries beyond REACH: the qk layers are rescaled
        net.attn.out_proj.weight.mul_(3)
    ticket = construct(net, EPS, seed=0, attention="product")
    scales = ticket.stats["layer_scales"]
    assert min(scales) > 1
    factors = [op["factor"] for op in ticket.config["ops"] if op["op"] == "qk_scores"]
    assert factors == pytest.approx(scales[:HEADS])  # s_qk (the input's scale is 1)
    check(ticket, net, signed(BATCH, T, D), 1.0, tmp_path)


def test_hand_written_attention_falls_back_to_per_projection(tmp_path):
    for net in (seeded(HandAttention()), seeded(TinyGPT())):
        ticket = construct(net, EPS, seed=0, attention="product")
        kinds = {op["op"] for op in ticket.config["ops"]}
        assert not kinds & PRODUCT_OPS
        info = ticket.stats["attention"]
        assert info["product_attentions"] == 0 and info["per_projection_fallback"]
        assert "not an nn.MultiheadAttention" in info["per_projection_fallback"][0]
        assert ticketfile.load(ticket.save(tmp_path / "t.slth")).format_version == 2


def test_bad_attention_value_and_unsupported_uses():
    net = seeded(SelfAttention(False))
    with pytest.raises(ValueError, match="projection, product"):
        construct(net, EPS, attention="foo")
    with pytest.raises(ValueError, match="'foo'"):
        parse_target(net, attention="foo")
    for bad, match in ((Padded(), "key_padding_mask"), (Cross(), "only self-attention")):
        with pytest.raises(NotImplementedError, match=match):
            construct(bad.eval(), 0.05, attention="product")


def test_cli_attention_option(tmp_path):
    from typer.testing import CliRunner

    from slth.cli import app
    from slth.construction import mlp

    model = tmp_path / "m.pt"
    torch.save(mlp("4-3-2").state_dict(), model)
    runner = CliRunner()
    r = runner.invoke(app, ["construct", str(model), "--arch", "4-3-2", "--attention", "foo", "-o",
                            str(tmp_path / "t.slth")])
    assert r.exit_code != 0 and "valid: projection, product" in r.output
    r = runner.invoke(app, ["construct", str(model), "--arch", "4-3-2", "--attention", "product", "-o",
                            str(tmp_path / "t.slth")])
    assert r.exit_code == 0, r.output
    assert Ticket.load(tmp_path / "t.slth").config["attention"] == "product"


def test_random_params_counting():
    """Per head: selector d n + n block entries (+ bias units), key map d (d + 1) n; value/output likewise over H d."""
    net = seeded(SelfAttention(False))
    ticket = construct(net, EPS, seed=0, attention="product")
    n = ticket.stats["n_per_layer"]
    want = sum(D * k + k + D * (D + 1) * k for k in n[:HEADS]) + HEADS * D * n[-1] + n[-1] + D * (HEADS * D + 1) * n[-1]
    assert ticket.stats["random_params"] == want
    assert ticket.stats["kept_params"] == sum(int(m.sum()) for m in ticket.masks.values())
    assert np.isclose(ticket.stats["max_weight_error"], max(ticket.stats["max_weight_error_per_layer"]))


def test_chunking_and_workdir_give_the_same_ticket(tmp_path):
    """The qk/vo layers are solved in the same row chunks as any layer: any chunk size, or a resumed work dir, gives
    the same ticket bit for bit."""
    net = seeded(nn.TransformerEncoderLayer(D, HEADS, dim_feedforward=16, dropout=0.0, batch_first=True,
                                            norm_first=True))
    whole = construct(net, EPS, seed=0, attention="product")
    assert construct(net, EPS, seed=0, attention="product", chunk_instances=7).digest() == whole.digest()
    work = tmp_path / "work"
    first = construct(net, EPS, seed=0, attention="product", chunk_instances=40, workdir=str(work))
    again = construct(net, EPS, seed=0, attention="product", chunk_instances=40, workdir=str(work), resume=True)
    assert first.digest() == again.digest() == whole.digest() and again.run["computed"] == 0
    proj = tmp_path / "proj"
    construct(net, EPS, seed=0, chunk_instances=40, workdir=str(proj))
    with pytest.raises(ValueError, match="different construction"):  # a projection work dir is another plan
        construct(net, EPS, seed=0, attention="product", chunk_instances=40, workdir=str(proj), resume=True)
