"""Attention targets: nn.MultiheadAttention, TransformerEncoderLayer/Encoder, a ViT-like and a char-level GPT.

Every Linear map (q, k, v and out projections, feed-forward, patch conv, head) is a random pair; free parameters
used as additive constants (class token, positional embeddings) are pairs of bias units only; reshapes, transposes,
matmuls of activations, softmax and scaled dot-product attention stay as they are. Each test checks ticket = random
x masks exactly, the measured error against the certified bound (pointwise) and a stated tolerance, causality where
there is a causal mask, and save/load (format version 2)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slth import ticketfile
from slth.construction import Ticket, construct, parse_target
from slth.construction.bound import certified_bound_nd

EPS = 0.01
D, HEADS, T, BATCH = 8, 2, 5, 3


def seeded(net, seed=0, scale=0.5):
    """Uniform weights in [-scale, scale]; LayerNorm affines non-trivial (gamma in [0.5, 1.5], beta in +-0.3)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(net.named_parameters()):
            u = torch.rand(p.shape, generator=g)
            is_norm = ".norm" in f".{name}" or name.startswith("ln")
            if is_norm and name.endswith("weight"):
                p.copy_(0.5 + u)
            elif is_norm:
                p.copy_((u * 2 - 1) * 0.3)
            else:
                p.copy_((u * 2 - 1) * scale)
    return net.eval()


def signed(*shape, seed=1):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def check(ticket, net, x, tolerance, tmp_path, kinds=(), version=2):
    """Exact masks, measured <= certified bound (at the points x) and <= tolerance, save/load identical
    (a file of format ``version``)."""
    assert ticket.stats["failures"] == 0 and ticket.stats["max_weight_error"] <= EPS
    ops = [op["op"] for op in ticket.config["ops"]]
    assert set(kinds) <= set(ops), ops
    module = ticket.to_module()
    pruned = dict(module.named_parameters())
    rand = dict(ticket.random_module().named_parameters())
    assert set(pruned) == set(rand) == set(ticket.masks)
    for name in pruned:
        assert torch.equal(pruned[name], rand[name] * ticket.masks[name]), name
    with torch.no_grad():
        out = module(x)
        diff = (out - net(x)).abs().double().reshape(len(x), -1)
    xb = x.double()
    bound = certified_bound_nd(ticket, net, xb, xb, batched=True)
    assert (diff.numpy() <= bound + 1e-5).all(), (float(diff.max()), bound.max())
    assert 0 < float(diff.max()) <= tolerance, float(diff.max())
    path = ticket.save(tmp_path / "t.slth")
    assert ticketfile.load(path).format_version == version
    loaded = Ticket.load(path)
    assert loaded.digest() == ticket.digest()
    with torch.no_grad():
        assert torch.equal(loaded.to_module()(x), out)
    return module, float(diff.max()), float(bound.max())


def assert_causal(module, x, seq_dim=1):
    """Changing the last token leaves every earlier output of the ticket unchanged."""
    x2 = x.clone()
    last = x2.select(seq_dim, x.shape[seq_dim] - 1)
    last.copy_(0.3 - last)
    with torch.no_grad():
        a, b = module(x), module(x2)
    keep = x.shape[seq_dim] - 1
    torch.testing.assert_close(a.narrow(seq_dim, 0, keep), b.narrow(seq_dim, 0, keep), rtol=0, atol=1e-6)
    assert not torch.allclose(a.narrow(seq_dim, keep, 1), b.narrow(seq_dim, keep, 1))


class SelfAttention(nn.Module):
    def __init__(self, causal):
        super().__init__()
        self.attn = nn.MultiheadAttention(D, HEADS, batch_first=True)
        self.causal = causal
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(T))

    def forward(self, x):
        if self.causal:
            return self.attn(x, x, x, attn_mask=self.mask, need_weights=False)[0]
        return self.attn(x, x, x)[0]


@pytest.mark.parametrize("causal", [False, True])
def test_multihead_self_attention(causal, tmp_path):
    net = seeded(SelfAttention(causal))
    ticket = construct(net, EPS, seed=0)
    assert len(ticket.layouts) == 4 and all(lay.bias and lay.signed_input for lay in ticket.layouts)  # q k v out
    attn = [op for op in ticket.config["ops"] if op["op"] == "attention"]
    assert len(attn) == 1 and attn[0]["causal"] is causal and attn[0]["mask"] == []  # the mask is the causal flag
    x = signed(BATCH, T, D)
    module, _, _ = check(ticket, net, x, 0.05, tmp_path, kinds=("reshape", "permute", "attention", "flatten"))
    if causal:
        assert_causal(module, x)
    assert construct(net, EPS, seed=0).digest() == ticket.digest()  # same seed: the same ticket, bit for bit


@pytest.mark.parametrize("norm_first", [True, False])
def test_transformer_encoder_layer(norm_first, tmp_path):
    net = seeded(nn.TransformerEncoderLayer(D, HEADS, dim_feedforward=16, dropout=0.0, batch_first=True,
                                            norm_first=norm_first, activation="gelu"))
    ticket = construct(net, EPS, seed=0)
    # q, k, v, out, linear1, linear2 (+ post-norm: the affine of norm1 on its residual path, of norm2 at the end)
    assert len(ticket.layouts) == (6 if norm_first else 8)
    check(ticket, net, signed(BATCH, T, D), 0.15, tmp_path, kinds=("layernorm", "add", "attention", "activation"))


class Encoder(nn.Module):  # seq-first layers, a causal float mask passed to the whole stack
    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(D, HEADS, dim_feedforward=16, dropout=0.0, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(T))

    def forward(self, x):
        return self.enc(x, mask=self.mask, is_causal=True)


def test_two_layer_causal_encoder_seq_first(tmp_path):
    net = seeded(Encoder())
    ticket = construct(net, EPS, seed=0)
    assert len(ticket.layouts) == 12
    check_seq_first_encoder(ticket, net, tmp_path)


def check_seq_first_encoder(ticket, net, tmp_path):
    """The sequence-first causal Encoder's ticket: close, causal, within its bound, saved and loaded exactly."""
    x = signed(T, BATCH, D)  # (L, N, E)
    module = ticket.to_module()
    with torch.no_grad():
        diff = (module(x) - net(x)).abs()
    assert 0 < float(diff.max()) <= 0.15
    assert_causal(module, x, seq_dim=0)
    # the bound at these points: "batched" only means the leading dim is kept apart (here L), any layout works
    bound = certified_bound_nd(ticket, net, x.double(), x.double(), batched=True)
    assert (diff.double().reshape(T, -1).numpy() <= bound + 1e-5).all()
    loaded = Ticket.load(ticket.save(tmp_path / "t.slth"))
    with torch.no_grad():
        assert torch.equal(loaded.to_module()(x), module(x))


class TinyViT(nn.Module):
    """Conv2d patches, a class token and positional embeddings (free nn.Parameters), one pre-norm encoder layer,
    a final LayerNorm and a Linear head on the class token."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, D, 4, stride=4)  # 8x8 image -> 4 patches
        self.cls = nn.Parameter(torch.zeros(1, 1, D))
        self.pos = nn.Parameter(torch.zeros(1, 5, D))
        self.block = nn.TransformerEncoderLayer(D, HEADS, 16, dropout=0.0, batch_first=True, norm_first=True)
        self.ln = nn.LayerNorm(D)
        self.head = nn.Linear(D, 3)

    def forward(self, img):
        x = self.patch(img).flatten(2).transpose(1, 2)  # (N, 4, D)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.ln(self.block(x))[:, 0])


def test_tiny_vit(tmp_path):
    net = seeded(TinyViT())
    ticket = construct(net, EPS, seed=0)
    consts = [op for op in ticket.config["ops"] if op["op"] == "const"]
    assert [tuple(op["shape"]) for op in consts] == [(1, 1, D), (1, 5, D)]  # class token, positions: bias units only
    assert sum(lay.d_in == 0 for lay in ticket.layouts) == 2
    check(ticket, net, signed(BATCH, 3, 8, 8), 0.15, tmp_path, kinds=("expand", "cat", "const", "getitem"))


class TinyGPT(nn.Module):
    """Char-level causal GPT written by hand: token + positional Embedding, one pre-norm block whose attention uses
    split / view / transpose / F.scaled_dot_product_attention(is_causal=True), a final LayerNorm and a head tied to
    the token embedding (``x @ tok.weight.T``)."""

    def __init__(self, vocab=11, ctx=6):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, D), nn.Embedding(ctx, D)
        self.register_buffer("positions", torch.arange(ctx))
        self.ln1, self.ln2, self.ln_f = nn.LayerNorm(D), nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.fc1, self.fc2 = nn.Linear(D, 2 * D), nn.Linear(2 * D, D)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(self.positions)
        n, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=2)
        q, k, v = (z.view(n, t, HEADS, c // HEADS).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(n, t, c))
        x = x + self.fc2(F.gelu(self.fc1(self.ln2(x))))
        return self.ln_f(x) @ self.tok.weight.T


def test_tiny_causal_gpt(tmp_path):
    net = seeded(TinyGPT())
    ticket = construct(net, EPS, seed=0)
    kinds = [op["op"] for op in ticket.config["ops"]]
    assert kinds[0] == "embedding" and "const" in kinds  # pos(arange) is a constant of the target: bias units
    idx = torch.randint(0, 11, (BATCH, 6), generator=torch.Generator().manual_seed(0))
    module, _, _ = check(ticket, net, idx, 0.15, tmp_path, kinds=("split", "reshape", "permute", "attention"))
    assert ticket.layouts[-1].d_out == 11  # the tied head x @ tok.weight.T: a Linear map, its own pair
    x2 = idx.clone()
    x2[:, -1] = (x2[:, -1] + 1) % 11
    with torch.no_grad():
        a, b = module(idx), module(x2)
    torch.testing.assert_close(a[:, :-1], b[:, :-1], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, -1], b[:, -1])


class HandAttention(nn.Module):
    """softmax(q k^T / sqrt(d)) v written with matmul, transpose, a scalar factor and softmax; mean over tokens."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.out = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, 2)

    def forward(self, x):
        att = torch.softmax(self.q(x) @ self.k(x).transpose(-2, -1) / math.sqrt(D), dim=-1)
        return self.out((att @ self.v(x)).mean(1))


def test_hand_written_attention_with_rescaled_layers(tmp_path):
    net = seeded(HandAttention())
    with torch.no_grad():
        net.q.weight.mul_(4)  # beyond REACH: q is rescaled, so the bilinear scores and the softmax must undo it
    ticket = construct(net, EPS, seed=0)
    assert ticket.stats["layer_scales"][0] > 1
    check(ticket, net, signed(BATCH, T, D), 0.1, tmp_path, kinds=("matmul", "softmax", "mulconst", "mean"))


class Padded(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(D, HEADS, batch_first=True)
        self.register_buffer("pad", torch.zeros(BATCH, T, dtype=torch.bool))

    def forward(self, x):
        return self.attn(x, x, x, key_padding_mask=self.pad)[0]


class Weights(Padded):
    def forward(self, x):
        return self.attn(x, x, x)[1]


class Cross(Padded):
    def forward(self, x):
        return self.attn(x, x * 2, x)[0]


class Projected(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.attn = nn.MultiheadAttention(D, HEADS, batch_first=True, **kwargs)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


@pytest.mark.parametrize("net, match", [
    (Padded(), "key_padding_mask"),
    (Weights(), "attention weights"),
    (Cross(), "only self-attention"),
    (nn.Sequential(nn.MultiheadAttention(D, HEADS)), "inside an nn.Sequential"),
    (Projected(add_bias_kv=True), r"\('attn'\) with add_bias_kv / add_zero_attn is not supported"),
    (Projected(add_zero_attn=True), r"\('attn'\) with add_bias_kv / add_zero_attn is not supported"),
])
def test_unsupported_attention_uses_name_the_node(net, match):
    with pytest.raises(NotImplementedError, match=match):
        construct(net.eval(), 0.05)


def test_attention_in_training_mode_with_dropout_is_refused():
    with pytest.raises(NotImplementedError, match=r"\('attn'\) is in training mode with dropout 0.1; construct an"):
        construct(Projected(dropout=0.1).train(), 0.05)


class PaddedEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(D, HEADS, 2 * D, dropout=0.0, batch_first=True)
        self.register_buffer("pad", torch.zeros(1, 3, dtype=torch.bool))

    def forward(self, x):
        return self.layer(x, src_key_padding_mask=self.pad)


@pytest.mark.parametrize("make, attention, match", [
    (lambda: nn.MultiheadAttention(D, HEADS, kdim=4, vdim=4).eval(), "product",
     r"MultiheadAttention at the top \('MultiheadAttention'\) with kdim/vdim != embed_dim"),
    (lambda: nn.TransformerEncoderLayer(D, HEADS, 2 * D), "projection",
     r"TransformerEncoderLayer at the top \('TransformerEncoderLayer'\) is in training mode with dropout; construct "
     "an eval"),
    (lambda: nn.TransformerEncoderLayer(D, HEADS, 2 * D, dropout=0.0, activation=F.silu).eval(), "projection",
     r"activation <function silu.*> is not supported \(F.relu, F.gelu or a supported module\)"),
    (lambda: PaddedEncoder().eval(), "projection",
     r"TransformerEncoderLayer at node 'layer' \('layer'\) with a src_key_padding_mask"),
])
def test_unsupported_transformer_layers_are_refused_by_name(make, attention, match):
    with pytest.raises(NotImplementedError, match=match):
        parse_target(make(), attention=attention)


def test_softmax_bound_is_sound_under_perturbations():
    from slth.construction.graph import softmax_bound

    g = torch.Generator().manual_seed(0)
    lo = torch.rand(200, 6, generator=g, dtype=torch.float64) * 6 - 3
    hi = lo + torch.rand(200, 6, generator=g, dtype=torch.float64)
    lo[:, 0] = hi[:, 0] = -torch.inf  # a masked key
    d = torch.rand(200, 6, generator=g, dtype=torch.float64) * 0.5
    (p_lo, p_hi, dp), l1 = softmax_bound((lo, hi, d))
    for _ in range(20):
        s = lo + (hi - lo).nan_to_num(0.0) * torch.rand(200, 6, generator=g, dtype=torch.float64)
        s_hat = s + d * (torch.rand(200, 6, generator=g, dtype=torch.float64) * 2 - 1)
        p, p_hat = torch.softmax(s, -1), torch.softmax(s_hat, -1)
        assert (p >= p_lo - 1e-12).all() and (p <= p_hi + 1e-12).all()
        assert ((p_hat - p).abs() <= dp + 1e-12).all()
        assert ((p_hat - p).abs().sum(-1, keepdim=True) <= l1 + 1e-12).all()


class MaskedAttention(SelfAttention):
    def __init__(self):
        super().__init__(False)
        blocked = torch.zeros(T, T, dtype=torch.bool)
        blocked[2:, 0] = True  # queries 2.. may not see key 0: not the causal mask, stored in the op
        self.register_buffer("blocked", blocked)

    def forward(self, x):
        return self.attn(x, x, x, attn_mask=self.blocked, need_weights=False)[0]


def test_constant_mask_and_the_bound_on_a_box(tmp_path):
    net = seeded(MaskedAttention())
    ticket = construct(net, EPS, seed=0)
    (op,) = [op for op in ticket.config["ops"] if op["op"] == "attention"]
    assert not op["causal"] and op["mask"][2][0] is None and op["mask"][0][0] == 0.0
    x = signed(400, T, D, seed=3)
    check(ticket, net, x[:BATCH], 0.05, tmp_path)
    bound = certified_bound_nd(ticket, net, -torch.ones(T, D), torch.ones(T, D))  # every x in [-1, 1]^(T x D)
    with torch.no_grad():
        diff = (ticket.to_module()(x) - net(x)).abs().amax(0).double().reshape(-1).numpy()
    assert (diff <= bound + 1e-5).all()
